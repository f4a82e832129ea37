"""Export your data (issue 12): asked for in Settings, built by the default-queue worker, downloaded and read
back; offered on the account deletion page."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.conversations.factories import ConversationFactory, add_exchange
from tests.e2e.conftest import screenshot
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("celery_worker")]


def test_an_export_is_built_downloaded_and_read_back(page: Page, sign_in):
    user = UserFactory()
    for title in ("Weekend plans", "Tea or coffee?"):
        add_exchange(ConversationFactory(owner=user, title=title), question=f"About {title}", answer="An answer")
    sign_in(user)

    page.goto("/accounts/settings/delete/")
    page.get_by_role("link", name="export your data", exact=True).click()
    page.get_by_role("button", name="Export all my chats").click()
    expect(page.get_by_text("Your export is being prepared")).to_be_visible()
    download_link = page.get_by_role("link", name="Download")
    expect(download_link).to_be_visible(timeout=60_000)  # the page refreshes itself until it is ready
    screenshot(page, "export-ready")
    with page.expect_download() as info:
        download_link.click()
    archive = zipfile.ZipFile(io.BytesIO(Path(info.value.path()).read_bytes()))

    document = json.loads(archive.read("conversations.json"))
    assert sorted(c["title"] for c in document["conversations"]) == ["Tea or coffee?", "Weekend plans"]
    assert len([name for name in archive.namelist() if name.startswith("markdown/")]) == 2
