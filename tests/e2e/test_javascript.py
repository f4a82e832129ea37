"""The chat app's JavaScript type-checks (JSDoc + tsc --checkJs), and the vendored libraries are the
npm packages package.json pins. Both need node_modules (`npm ci`); Djinn itself runs without Node.js."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
NODE_MODULES = BASE_DIR / "node_modules"
# Vendored file -> the file in node_modules it is a copy of.
VENDORED = {
    "static/vendor/marked/marked.esm.js": "marked/lib/marked.esm.js",
    "static/vendor/marked/marked.esm.d.ts": "marked/lib/marked.d.ts",
    "static/vendor/dompurify/purify.es.mjs": "dompurify/dist/purify.es.mjs",
    "static/vendor/dompurify/purify.es.d.mts": "dompurify/dist/purify.es.d.mts",
    "static/vendor/highlight/highlight.min.js": "@highlightjs/cdn-assets/es/highlight.min.js",
}


@pytest.fixture
def node_modules() -> Path:
    if not (NODE_MODULES / ".bin" / "tsc").exists() or shutil.which("npx") is None:
        pytest.skip("node_modules or npx is missing: run `npm ci` to type-check the JavaScript")
    return NODE_MODULES


def test_the_chat_javascript_type_checks(node_modules):
    result = subprocess.run(
        ["npx", "--no-install", "tsc", "-p", "."], cwd=BASE_DIR, capture_output=True, text=True, timeout=300
    )

    assert result.returncode == 0, f"tsc found errors:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("vendored, source", VENDORED.items())
def test_vendored_files_are_the_pinned_packages(node_modules, vendored, source):
    assert (BASE_DIR / vendored).read_bytes() == (node_modules / source).read_bytes(), "run `npm run vendor`"
