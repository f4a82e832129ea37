"""Documents in chat (issue 12): files' text extracted and split into passages on upload, the passages that matter
for a message chosen by PostgreSQL full-text ranking within the context budget, kept on the reply as its sources
and put in its prompt. Bad files get a clear reason; another user's files are out of reach."""

from __future__ import annotations

import pytest

from conversations import documents, prompts, services
from conversations.errors import InvalidInput
from conversations.models import Conversation, Document, DocumentPassage, Message
from inference import runtime
from tests.conversations.factories import ConversationFactory, add_exchange
from tests.conversations.pdfs import make_pdf
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

WARRANTY = "The warranty of the Zephyr kettle lasts thirty-six months from the day of purchase."


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch, llm_model) -> None:
    monkeypatch.setattr(services, "reply_enqueue", lambda message_id: True)


def upload(user, name: str, data: bytes | str, language: str = "en") -> Document:
    raw = data.encode() if isinstance(data, str) else data
    return documents.document_upload(user=user, name=name, data=raw, language=language)


def manual(paragraphs: int = 60) -> str:
    """A long manual: many paragraphs about other things, the warranty in the middle."""
    names = [a + b for a in "bcdfghklmnprstvz" for b in "aeiou"]  # no numbers that a model could confuse
    filler = [
        f"Section {names[n % len(names)]}. Descale the kettle with citric acid every month and rinse it twice with "
        f"clean water before boiling again. Keep the base dry, and never immerse the heating plate. That is all."
        for n in range(paragraphs)
    ]
    filler.insert(paragraphs // 2, WARRANTY)
    return "\n\n".join(filler)


# Upload and extraction ------------------------------------------------------------------------------------


def test_text_markdown_code_and_pdf_files_are_read_and_split_into_passages():
    user = UserFactory()
    text = upload(user, "notes.txt", "Caf\xe9 au lait.\r\nSecond line.".encode("cp1252"))  # not UTF-8: Windows
    markdown = upload(user, "../../etc/readme.md", "# Title\n\nSome *Markdown*.")
    code = upload(user, "script.py", "def add(a, b):\n    return a + b\n")
    pdf = upload(user, "report.pdf", make_pdf(["Quarterly report\nRevenue grew.", "Second page\nCosts fell."]))
    long = upload(user, "manual.txt", manual())

    assert [(d.name, d.kind) for d in (text, markdown, code, pdf)] == [
        ("notes.txt", "text"),
        ("readme.md", "markdown"),  # a path in the name is dropped
        ("script.py", "code"),
        ("report.pdf", "pdf"),
    ]
    assert text.passages.get().text == "Café au lait.\nSecond line."
    assert code.passages.get().text == "def add(a, b):\n    return a + b"
    assert [(p.page, p.text) for p in pdf.passages.all()] == [
        (1, "Quarterly report\nRevenue grew."),
        (2, "Second page\nCosts fell."),
    ]
    parts = list(long.passages.all())
    assert len(parts) > 10 and all(len(p.text) <= documents.PASSAGE_CHARS for p in parts)
    assert [p.part for p in parts] == list(range(1, len(parts) + 1))
    assert "\n\n".join(p.text for p in parts) == manual()  # nothing lost, paragraphs kept whole
    assert Document.objects.filter(owner=user, message=None).count() == 5  # waiting to be sent


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("virus.exe", b"MZ\x90\x00", "is not a file Djinn can read"),
        ("archive.zip", b"PK\x03\x04", "is not a file Djinn can read"),
        ("binary.txt", b"ab\x00cd" * 10, "is not a text file"),
        ("empty.md", b"", "is empty"),
        ("blank.txt", b"   \n\n  ", "has no text to read"),
        ("scan.pdf", make_pdf([""]), "has no text to read: it may be scanned images"),
        ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", "could not be read as a PDF"),
    ],
)
def test_files_that_cannot_be_read_are_refused_with_the_reason_and_nothing_is_kept(name, data, reason):
    user = UserFactory()
    with pytest.raises(InvalidInput, match=reason):
        upload(user, name, data)
    assert not Document.objects.exists() and not DocumentPassage.objects.exists()


def test_size_and_count_limits(monkeypatch):
    user = UserFactory()
    monkeypatch.setattr(documents, "MAX_BYTES", 100)
    with pytest.raises(InvalidInput, match="is too large"):
        upload(user, "big.txt", "x" * 101)
    monkeypatch.setattr(documents, "MAX_UNSENT", 2)
    upload(user, "a.txt", "one")
    upload(user, "b.txt", "two")
    with pytest.raises(InvalidInput, match="2 files are waiting to be sent"):
        upload(user, "c.txt", "three")


# Sending, retrieval and the prompt ------------------------------------------------------------------------


def test_a_question_gets_the_passage_that_answers_it_in_its_prompt_and_as_its_source(monkeypatch):
    # The tiny model reads 512 tokens, with a tokenizer of short tokens: passages shorter than the product's
    # fit its context, and the manual is far longer than that, so passages are chosen by rank.
    monkeypatch.setattr(documents, "PASSAGE_CHARS", 250)
    user = UserFactory()
    document = upload(user, "kettle-manual.txt", manual())
    turn = services.message_send(
        user=user,
        conversation_id=None,
        parent_id=None,
        content="How long does the warranty last?",
        document_ids=[str(document.pk)],
        params={"max_tokens": 32},
    )

    reply = Message.objects.get(pk=turn.assistant_message.pk)
    question = Message.objects.get(pk=turn.user_message.pk)
    document.refresh_from_db()
    assert (document.conversation_id, document.message_id) == (turn.conversation.pk, question.pk)
    assert question.attachments == [
        {"id": str(document.pk), "name": "kettle-manual.txt", "kind": "text", "size_bytes": document.size_bytes}
    ]
    assert reply.sources and any(WARRANTY in source["text"] for source in reply.sources)
    assert len(reply.sources) < document.passages.count()
    assert {source["name"] for source in reply.sources} == {"kettle-manual.txt"}
    # The worker's prompt holds the passage, numbered, and fits the model with room for the reply.
    chat = prompts.chat_messages(owner=user, conversation=turn.conversation, path=[question], sources=reply.sources)
    assert (
        chat[0]["role"] == "system" and WARRANTY in chat[0]["content"] and "[1] kettle-manual.txt" in chat[0]["content"]
    )
    assert runtime.count_chat_tokens(chat) + 32 <= runtime.context_length(turn.conversation and None)

    # A later question in the chat draws on the chat's documents again, without attaching them anew.
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.COMPLETED, content="Three years.")
    later = services.message_send(
        user=user, conversation_id=turn.conversation.pk, parent_id=None, content="How should I descale it?"
    )
    later_sources = Message.objects.get(pk=later.assistant_message.pk).sources
    assert later_sources and all("Descale" in source["text"] for source in later_sources)
    assert Message.objects.get(pk=later.user_message.pk).attachments == []


def test_a_short_document_goes_into_the_prompt_whole():
    user = UserFactory()
    document = upload(user, "recipe.pdf", make_pdf(["Pancakes\n2 eggs, 250 g flour.", "Fry on medium heat."]))
    turn = services.message_send(
        user=user, conversation_id=None, parent_id=None, content="Summarise this", document_ids=[str(document.pk)]
    )
    sources = Message.objects.get(pk=turn.assistant_message.pk).sources
    assert [(s["part"], s["page"]) for s in sources] == [(1, 1), (2, 2)]


def test_someone_elses_or_an_already_sent_document_cannot_be_attached_and_nothing_is_written():
    owner, stranger = UserFactory(), UserFactory()
    theirs = upload(owner, "private.txt", "Owner's secret")
    for ids, reason in [
        ([str(theirs.pk)], "no longer there"),
        (["not-an-id"], "must be a list of ids"),
        ("a string", "must be a list of ids"),
        ([str(theirs.pk)] * 2 + ["x"] * 4, "at most 5 files"),
    ]:
        with pytest.raises(InvalidInput, match=reason):
            services.message_send(user=stranger, conversation_id=None, parent_id=None, content="Hi", document_ids=ids)
    assert not Conversation.objects.filter(owner=stranger).exists()

    mine = upload(owner, "mine.txt", "Mine")
    services.message_send(user=owner, conversation_id=None, parent_id=None, content="Hi", document_ids=[str(mine.pk)])
    with pytest.raises(InvalidInput, match="no longer there"):
        services.message_send(
            user=owner, conversation_id=None, parent_id=None, content="Again", document_ids=[str(mine.pk)]
        )
    theirs.refresh_from_db()
    assert theirs.message_id is None and theirs.conversation_id is None


def test_regenerating_keeps_the_sources_and_editing_keeps_the_files(monkeypatch):
    monkeypatch.setattr(documents, "PASSAGE_CHARS", 250)  # see above
    user = UserFactory()
    document = upload(user, "kettle-manual.txt", manual())
    turn = services.message_send(
        user=user,
        conversation_id=None,
        parent_id=None,
        content="How long does the warranty last?",
        document_ids=[str(document.pk)],
    )
    Message.objects.filter(pk=turn.assistant_message.pk).update(status=Message.Status.COMPLETED, content="3 years")
    sources = Message.objects.get(pk=turn.assistant_message.pk).sources

    again = services.message_regenerate(user=user, message_id=turn.assistant_message.pk)
    assert Message.objects.get(pk=again.assistant_message.pk).sources == sources
    Message.objects.filter(pk=again.assistant_message.pk).update(status=Message.Status.COMPLETED)
    edited = services.message_edit(user=user, message_id=turn.user_message.pk, content="How do I descale it?")
    assert Message.objects.get(pk=edited.user_message.pk).attachments == turn.user_message.attachments
    assert all("Descale" in s["text"] for s in Message.objects.get(pk=edited.assistant_message.pk).sources)


def test_deleting_the_chat_deletes_its_documents():
    user = UserFactory()
    conversation = ConversationFactory(owner=user)
    question, _reply = add_exchange(conversation, question="Q", answer="A")
    document = upload(user, "notes.md", "Some notes")
    documents.attach([document], conversation=conversation, message=question)
    services.conversation_delete(user=user, conversation_id=conversation.pk)
    assert not Document.objects.exists() and not DocumentPassage.objects.exists()


# The upload endpoint ------------------------------------------------------------------------------------------


def test_the_upload_endpoint_answers_json_and_refuses_bad_files_with_a_clear_error(client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    user = UserFactory()
    assert client.post("/documents/", {"file": SimpleUploadedFile("a.txt", b"hi")}).status_code == 302  # signed out
    client.force_login(user)

    created = client.post("/documents/", {"file": SimpleUploadedFile("notes.md", b"# Notes\n\nText.")})
    assert created.status_code == 201
    body = created.json()
    assert body["name"] == "notes.md" and body["kind"] == "markdown" and body["passages"] == 1

    refused = client.post("/documents/", {"file": SimpleUploadedFile("tool.exe", b"MZ")})
    assert refused.status_code == 400 and "is not a file Djinn can read" in refused.json()["error"]
    assert client.post("/documents/", {}).json() == {"error": "Choose a file to attach."}

    stranger = UserFactory()
    client.force_login(stranger)
    assert client.post(f"/documents/{body['id']}/remove/").status_code == 204
    assert Document.objects.filter(pk=body["id"]).exists()  # not theirs: nothing happens
    client.force_login(user)
    client.post(f"/documents/{body['id']}/remove/")
    assert not Document.objects.filter(pk=body["id"]).exists()


def test_files_never_sent_are_deleted_a_day_on_and_sent_ones_are_kept():
    from datetime import timedelta

    from django.utils import timezone

    from conversations.tasks import forget_unsent_documents

    user = UserFactory()
    old, _fresh, sent = (upload(user, f"{name}.txt", name) for name in ("old", "fresh", "sent"))
    conversation = ConversationFactory(owner=user)
    question, _reply = add_exchange(conversation, question="Q", answer="A")
    documents.attach([sent], conversation=conversation, message=question)
    day_ago = timezone.now() - timedelta(days=1, minutes=1)
    Document.objects.filter(pk__in=[old.pk, sent.pk]).update(created_at=day_ago)

    assert forget_unsent_documents() == 1
    assert set(Document.objects.values_list("name", flat=True)) == {"fresh.txt", "sent.txt"}
