"""Projects in the browser (issue 12): made from the sidebar, a chat started in one, its instructions sent with
every message of it, a chat moved out in the chat's settings, the project deleted with its chats kept."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from conversations import prompts
from conversations.models import Conversation, Project
from inference.registry import model_get
from tests.e2e.conftest import screenshot
from tests.factories import UserFactory
from tests.live import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("celery_worker", "llm_model")]

LONG_WAIT_MS = 60_000


@pytest.fixture(autouse=True)
def _short_replies(llm_model) -> None:
    llm_model.default_params = {"temperature": 0, "max_tokens": 12}
    llm_model.save()


def test_a_project_groups_chats_and_its_instructions_reach_each_of_them(page: Page, sign_in):
    user = UserFactory()
    sign_in(user)
    page.goto("/")

    # Made from the sidebar; an empty name is refused on the form.
    page.get_by_role("link", name="New project").click()
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_role("alert")).to_contain_text("Name: This field is required.")
    page.get_by_label("Name").fill("Thesis")
    page.get_by_label("Instructions").fill("Answer as a patient supervisor.")
    page.get_by_role("button", name="Create project").click()
    project = Project.objects.get(owner=user)
    expect(page).to_have_url(re.compile(f"/p/{project.pk}/$"))
    expect(page.get_by_role("heading", name="Thesis", exact=True)).to_be_visible()
    expect(page.get_by_text("No chats yet: write below")).to_be_visible()
    expect(page.locator("[data-projects] a[aria-current=page]")).to_have_text("Thesis")
    screenshot(page, "project-new")
    # On a phone the toolbar keeps its sidebar button and part of the title beside the project's chip.
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()  # opened on a phone, not resized into one (the sidebar's slide is not under test here)
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", "open")
    assert page.locator("[data-sidebar-toggle]").bounding_box()["width"] >= 30
    assert page.locator("[data-chat-title]").bounding_box()["width"] >= 40
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "project-phone")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.reload()

    # A chat started on the project's page is in the project, with its chip, and the model is sent its instructions.
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", "open")
    page.get_by_label("Message Djinn").fill("Outline chapter one")
    page.get_by_label("Message Djinn").press("Enter")
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]+/$"), timeout=LONG_WAIT_MS)
    expect(page.locator("article.message-assistant.is-streaming")).to_have_count(0, timeout=LONG_WAIT_MS)
    conversation = Conversation.objects.get(owner=user)
    assert conversation.project_id == project.pk
    chip = page.locator("[data-project-chip]")
    expect(chip).to_have_text("Thesis")
    chat = prompts.chat_messages(owner=user, conversation=conversation, path=[])
    assert chat == [{"role": "system", "content": "Answer as a patient supervisor."}]
    reply = conversation.messages.get(role="assistant")
    assert reply.prompt_tokens == prompts.count_tokens(
        [*chat, {"role": "user", "content": "Outline chapter one"}], _model(conversation)
    )

    # The project's page lists it.
    chip.click()
    expect(page).to_have_url(re.compile(f"/p/{project.pk}/$"))
    expect(page.locator("[data-project-chats]").get_by_role("link", name="Outline chapter one")).to_be_visible()
    screenshot(page, "project-page")

    # Moved out in the chat's settings: the chip goes, every tab sees it.
    page.locator("[data-project-chats]").get_by_role("link", name="Outline chapter one").click()
    expect(page).to_have_url(re.compile(f"/c/{conversation.pk}/$"))
    expect(page.locator("[data-connection]")).to_have_attribute("data-state", "open")
    page.get_by_role("button", name="Settings for this chat").click()
    expect(page.get_by_label("Project", exact=True)).to_have_value(str(project.pk))
    page.get_by_label("Project", exact=True).select_option(label="No project")
    page.get_by_role("button", name="Save").click()
    expect(chip).to_be_hidden()
    wait_for(lambda: Conversation.objects.get(pk=conversation.pk).project_id is None, timeout=10)

    # Back in, then the project is deleted: the chat stays, out of any project.
    page.get_by_role("button", name="Settings for this chat").click()
    page.get_by_label("Project", exact=True).select_option(label="Thesis")
    page.get_by_role("button", name="Save").click()
    expect(chip).to_have_text("Thesis")
    chip.click()
    page.get_by_role("link", name="Edit project").click()
    page.get_by_role("link", name="Delete project…").click()
    expect(page.get_by_text("Its 1 chat is kept")).to_be_visible()
    page.get_by_role("button", name="Delete the project").click()
    deleted = "The project “Thesis” is deleted. Its chats (1) stay in your chat list."
    expect(page.get_by_text(deleted)).to_be_visible()
    expect(page.locator("[data-projects]").get_by_role("link", name="Thesis")).to_have_count(0)
    expect(page.locator(f'[data-conversation-list] [data-conversation-id="{conversation.pk}"]')).to_have_count(1)
    assert Conversation.objects.get(pk=conversation.pk).project_id is None
    assert conversation.messages.count() == 2


def _model(conversation: Conversation):
    return model_get(conversation.model)
