from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.urls import reverse

from conversations import exports
from conversations.errors import InvalidInput
from conversations.models import DataExport
from tests.conversations.factories import ConversationFactory, add_exchange
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_the_archive_holds_every_branch_in_json_and_the_branch_shown_in_markdown():
    user = UserFactory(email="ada@example.com")
    conversation = ConversationFactory(owner=user, title="Trip to Lisbon", system_prompt="Be brief.")
    question, first = add_exchange(conversation, question="Where to eat?", answer="Try the pastéis.")
    add_exchange(conversation, question="Where to eat?", answer="A second answer, on another branch")
    add_exchange(ConversationFactory(owner=UserFactory()), question="Someone else's question")

    archive, count = exports.build_archive(user)

    files = zipfile.ZipFile(io.BytesIO(archive))
    document = json.loads(files.read("conversations.json"))
    (markdown_name,) = [name for name in files.namelist() if name.startswith("markdown/")]
    markdown = files.read(markdown_name).decode()
    assert count == 1
    assert document["user"]["email"] == "ada@example.com"
    (exported,) = document["conversations"]
    assert exported["title"] == "Trip to Lisbon" and exported["system_prompt"] == "Be brief."
    assert [m["content"] for m in exported["messages"]] == [
        "Where to eat?",
        "Try the pastéis.",
        "Where to eat?",
        "A second answer, on another branch",
    ]
    assert exported["messages"][1]["parent"] == str(question.pk)
    assert "Trip to Lisbon" in markdown and "A second answer, on another branch" in markdown
    assert "Try the pastéis." not in markdown  # the other branch is in the JSON only
    assert "Someone else's question" not in json.dumps(document)
    assert first.pk  # the first branch is kept


def test_one_export_at_a_time_and_a_few_a_day():
    user = UserFactory()
    first = exports.export_request(user=user)
    with pytest.raises(InvalidInput, match="already being prepared"):
        exports.export_request(user=user)
    exports.export_build(first.pk)
    for _ in range(exports.EXPORTS_PER_DAY - 1):
        exports.export_build(exports.export_request(user=user).pk)

    with pytest.raises(InvalidInput, match="times a day"):
        exports.export_request(user=user)
    assert DataExport.objects.filter(owner=user, status="ready").count() == exports.EXPORTS_PER_DAY


def test_nobody_downloads_another_users_export(client):
    owner, stranger = UserFactory(), UserFactory()
    export = exports.export_request(user=owner)
    exports.export_build(export.pk)
    url = reverse("conversations:export_download", args=[export.pk])

    client.force_login(stranger)
    assert client.get(url).status_code == 404
    client.force_login(owner)
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert zipfile.ZipFile(io.BytesIO(response.content)).read("README.txt")


def test_an_export_whose_worker_died_is_marked_failed_and_another_can_be_asked():
    from datetime import timedelta

    from django.utils import timezone

    user = UserFactory()
    stuck = exports.export_request(user=user)
    DataExport.objects.filter(pk=stuck.pk).update(created_at=timezone.now() - timedelta(hours=1))

    again = exports.export_request(user=user)

    stuck.refresh_from_db()
    assert stuck.status == DataExport.Status.FAILED
    assert again.status == DataExport.Status.PENDING
