"""The German catalogs are complete and compiled: every entry translated and none fuzzy, the committed .mo files
made from the .po files as they are, and every string marked in the code present (``make messages`` would
add nothing and drop nothing)."""

from __future__ import annotations

import gettext
import os
import shutil
from pathlib import Path

import polib
import pytest
from django.conf import settings
from django.core.management import call_command

LOCALE = Path(settings.BASE_DIR) / "locale"
CATALOGS = sorted(LOCALE.glob("*/LC_MESSAGES/*.po"))
# What makemessages reads: the project without the virtualenv, installed JavaScript and build outputs.
NOT_SOURCE = shutil.ignore_patterns(
    ".*", "__pycache__", "node_modules", "vendor", "staticfiles", "var", "test-artifacts", "tests", "*.mo"
)


def _name(path: Path) -> str:
    return str(path.relative_to(LOCALE))


def _catalog(mo_path: Path) -> dict[object, str]:
    """The messages of a compiled catalog, and of its header the line that matters to lookups (plurals)."""
    with mo_path.open("rb") as handle:
        messages = dict(gettext.GNUTranslations(handle)._catalog)  # type: ignore[attr-defined]
    header = messages.pop("")
    messages[""] = [line for line in header.splitlines() if line.startswith("Plural-Forms:")]
    return messages


def test_there_is_a_german_catalog_for_python_and_templates_and_one_for_javascript():
    assert [_name(path) for path in CATALOGS] == ["de/LC_MESSAGES/django.po", "de/LC_MESSAGES/djangojs.po"]


@pytest.mark.parametrize("po_path", CATALOGS, ids=_name)
def test_every_entry_is_translated_and_none_is_fuzzy(po_path):
    catalog = polib.pofile(str(po_path))

    untranslated = [entry.msgid for entry in catalog.untranslated_entries()]
    fuzzy = [entry.msgid for entry in catalog.fuzzy_entries()]

    assert catalog.metadata["Language"] == "de"
    assert untranslated == []
    assert fuzzy == []
    assert not catalog.metadata_is_fuzzy


@pytest.mark.parametrize("po_path", CATALOGS, ids=_name)
def test_the_committed_mo_file_is_compiled_from_the_po_file_as_it_is(po_path, tmp_path):
    fresh = tmp_path / "fresh.mo"
    polib.pofile(str(po_path)).save_as_mofile(str(fresh))

    assert _catalog(po_path.with_suffix(".mo")) == _catalog(fresh), "run `make messages` to compile it"


@pytest.mark.parametrize("domain", ["django", "djangojs"])
def test_every_string_marked_in_the_code_is_in_the_german_catalog(domain, tmp_path, settings, monkeypatch):
    if shutil.which("xgettext") is None or shutil.which("msgmerge") is None:
        pytest.skip("GNU gettext is not installed (apt-get install gettext); .ci/run installs it")
    # Given makemessages run on a copy of the project, so that the catalogs under test stay as committed
    copy = tmp_path / "project"
    shutil.copytree(settings.BASE_DIR, copy, ignore=NOT_SOURCE)
    settings.LOCALE_PATHS = [copy / "locale"]
    monkeypatch.chdir(copy)
    committed = polib.pofile(str(LOCALE / "de" / "LC_MESSAGES" / f"{domain}.po"))

    # When it gathers the marked strings again
    call_command("makemessages", locale=["de"], domain=domain, no_obsolete=True, add_location="file", verbosity=0)

    # Then it finds exactly the strings the catalog has, all of them translated
    gathered = polib.pofile(os.fspath(copy / "locale" / "de" / "LC_MESSAGES" / f"{domain}.po"))
    missing = sorted({entry.msgid for entry in gathered} - {entry.msgid for entry in committed})
    unused = sorted({entry.msgid for entry in committed} - {entry.msgid for entry in gathered})
    assert missing == [], "marked but not in the catalog: run `make messages` and translate them"
    assert unused == [], "in the catalog but no longer marked: run `make messages`"
