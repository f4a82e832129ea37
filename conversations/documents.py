"""Documents in chat: text, Markdown, code and PDF files attached to a message.

On upload the text is extracted (PDF with pypdf), split into passages of about a paragraph or a few, and stored
in PostgreSQL with a full-text search vector in the uploader's language. When a message is sent in a chat that
has documents, the passages that matter for it are put in the reply's prompt, within a token budget: all of them
when they fit, else the best ranked by PostgreSQL's ts_rank_cd for the message's words (the beginning of each
document when no word matches). The chosen passages are kept on the reply (``Message.sources``): the worker
builds its prompt from them and the page shows them under the reply.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable
from datetime import timedelta
from pathlib import PurePath
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q, Sum
from django.db.models.functions import Length
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.translation import gettext as _

from accounts.models import User
from conversations.errors import InvalidInput
from conversations.models import Conversation, Document, DocumentPassage, Message
from inference import runtime
from inference.models import LLMModel

logger = logging.getLogger(__name__)

# A whole number of megabytes (the limit the page states), within the request limit that every route has
# (config.asgi_handler), form fields included.
MAX_BYTES = max(1, min(3, (settings.DJINN_MAX_REQUEST_BYTES - 64 * 1024) // (1024 * 1024))) * 1024 * 1024
MAX_CHARACTERS = 1_000_000  # of extracted text
MAX_PER_MESSAGE = 5
MAX_UNSENT = 20  # uploaded and not sent yet, per user
UNSENT_KEEP = timedelta(days=1)
PASSAGE_CHARS = 700  # about 150-200 tokens of English: a few fit even a small context
# Of the model's context, at most this share goes to passages; and a reply keeps at least REPLY_ROOM tokens.
SOURCES_SHARE = 0.5
REPLY_ROOM = 512
_MAX_QUERY_WORDS = 32
# Choosing passages: text is at most this many characters a token (English is about 4), so a chat's documents
# with more characters than that times the budget cannot fit whole; the best ranked _MOST_CANDIDATES are tried,
# until less than _SMALLEST_PASSAGE_TOKENS of the budget is left.
_MOST_CHARS_PER_TOKEN = 6
_MOST_CANDIDATES = 200
_SMALLEST_PASSAGE_TOKENS = 24

TEXT_EXTENSIONS = {".txt": "text", ".text": "text", ".log": "text", ".csv": "text", ".tsv": "text"}
MARKDOWN_EXTENSIONS = {".md": "markdown", ".markdown": "markdown", ".rst": "markdown"}
CODE_EXTENSIONS = {
    ext: "code"
    for ext in [
        ".py",
        ".js",
        ".mjs",
        ".ts",
        ".tsx",
        ".jsx",
        ".java",
        ".kt",
        ".c",
        ".h",
        ".cc",
        ".cpp",
        ".hpp",
        ".cs",
        ".go",
        ".rs",
        ".rb",
        ".php",
        ".swift",
        ".scala",
        ".sh",
        ".bash",
        ".sql",
        ".html",
        ".htm",
        ".css",
        ".scss",
        ".json",
        ".yaml",
        ".yml",
        ".toml",
        ".ini",
        ".cfg",
        ".xml",
        ".r",
        ".lua",
        ".pl",
        ".hs",
        ".ex",
        ".exs",
        ".dart",
        ".vue",
    ]
}
KINDS = {**TEXT_EXTENSIONS, **MARKDOWN_EXTENSIONS, **CODE_EXTENSIONS, ".pdf": "pdf"}
ACCEPT = ",".join(sorted(KINDS))  # the file picker's accept attribute

# The uploader's language picks the stemming of the search; anything else: "simple" (words as they are).
_SEARCH_CONFIGS = {"en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian"}
_WORD = re.compile(r"\w+")
_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def search_config(language: str | None) -> str:
    return _SEARCH_CONFIGS.get((language or "").split("-")[0].lower(), "simple")


# Upload ----------------------------------------------------------------------------------------------------


def too_large(name: str) -> str:
    """What a file over MAX_BYTES is told (here, and by the upload view before it reads the file)."""
    return _("“%(name)s” is too large: a file may have at most %(count)d MB.") % {
        "name": name,
        "count": MAX_BYTES // (1024 * 1024),
    }


def document_upload(*, user: User, name: str, data: bytes, language: str | None) -> Document:
    """Store a file's text and its passages, not yet part of a chat. Raises InvalidInput (a clear reason: an
    unsupported type, too large, no text in it, too many waiting)."""
    name = PurePath((name or "").replace("\\", "/")).name.strip()[:255] or "document.txt"
    kind = KINDS.get(PurePath(name).suffix.lower())
    if kind is None:
        raise InvalidInput(
            _(
                "“%(name)s” is not a file Djinn can read: attach text, Markdown, PDF or code files "
                "(.txt, .md, .pdf, .py, .js, .json, …)."
            )
            % {"name": name}
        )
    if len(data) > MAX_BYTES:
        raise InvalidInput(too_large(name))
    if not data:
        raise InvalidInput(_("“%(name)s” is empty.") % {"name": name})
    pages = _pdf_pages(name, data) if kind == "pdf" else [(None, _decode(name, data))]
    characters = sum(len(text) for _page, text in pages)
    if not any(text.strip() for _page, text in pages):
        raise InvalidInput(_("“%(name)s” has no text to read.") % {"name": name})
    if characters > MAX_CHARACTERS:
        raise InvalidInput(
            _("“%(name)s” has too much text: at most %(count)s characters.")
            % {"name": name, "count": number_format(MAX_CHARACTERS, force_grouping=True)}
        )
    config = search_config(language)
    with transaction.atomic():
        documents_forget_unsent(user=user)
        if Document.objects.filter(owner=user, message=None).count() >= MAX_UNSENT:
            raise InvalidInput(
                _("%(count)d files are waiting to be sent: send or remove some first.") % {"count": MAX_UNSENT}
            )
        document = Document.objects.create(
            owner=user, name=name, kind=kind, size_bytes=len(data), characters=characters, search_config=config
        )
        passages = [
            DocumentPassage(document=document, part=part, page=page, text=text)
            for part, (page, text) in enumerate(_passages(pages), start=1)
        ]
        DocumentPassage.objects.bulk_create(passages, batch_size=500)
        DocumentPassage.objects.filter(document=document).update(search=SearchVector("text", config=config))
    return document


def document_remove(*, user: User, document_id: UUID | str) -> None:
    """Take back a file uploaded and not sent (a sent one stays with its chat: delete the chat to remove it)."""
    try:
        Document.objects.filter(owner=user, pk=document_id, message=None).delete()
    except (ValidationError, ValueError):
        pass  # a malformed id names nothing


def documents_forget_unsent(*, user: User | None = None) -> int:
    """Delete the files uploaded for a message never sent, UNSENT_KEEP on: ``user``'s (on their next upload),
    or everyone's (the beat task). Returns how many."""
    unsent = Document.objects.filter(message=None, created_at__lt=timezone.now() - UNSENT_KEEP)
    _total, by_model = (unsent.filter(owner=user) if user else unsent).delete()
    return by_model.get(Document._meta.label, 0)


def _decode(name: str, data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise InvalidInput(_("“%(name)s” is not a text file.") % {"name": name})
    for encoding in ("utf-8-sig", "utf-16") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ("utf-8-sig",):
        try:
            return data.decode(encoding).replace("\r\n", "\n")
        except UnicodeDecodeError:
            continue
    # Not UTF-8: most older text files are Windows-1252; a byte it lacks means it is no text file at all.
    try:
        return data.decode("cp1252").replace("\r\n", "\n")
    except UnicodeDecodeError:
        raise InvalidInput(
            _("“%(name)s” is not a text file Djinn can read (save it as UTF-8).") % {"name": name}
        ) from None


def _pdf_pages(name: str, data: bytes) -> list[tuple[int | None, str]]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise InvalidInput(_("“%(name)s” is protected by a password: attach a copy without one.") % {"name": name})
        pages = [(number, page.extract_text() or "") for number, page in enumerate(reader.pages, start=1)]
    except InvalidInput:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
        logger.info("Unreadable PDF %r: %s", name, exc)
        raise InvalidInput(_("“%(name)s” could not be read as a PDF.") % {"name": name}) from None
    if not any(text.strip() for _number, text in pages):
        raise InvalidInput(_("“%(name)s” has no text to read: it may be scanned images.") % {"name": name})
    return pages


def _passages(pages: Iterable[tuple[int | None, str]]) -> Iterable[tuple[int | None, str]]:
    """Passages of about PASSAGE_CHARS: whole paragraphs together, a long paragraph cut between sentences (or,
    failing that, between words). Each with the page it starts on."""
    for page, text in pages:
        current = ""
        for paragraph in _PARAGRAPH.split(text):
            paragraph = paragraph.strip()
            if not paragraph:
                continue
            for piece in _pieces(paragraph):
                if current and len(current) + len(piece) + 2 > PASSAGE_CHARS:
                    yield page, current
                    current = ""
                current = f"{current}\n\n{piece}" if current else piece
        if current:
            yield page, current


def _pieces(paragraph: str) -> Iterable[str]:
    if len(paragraph) <= PASSAGE_CHARS:
        yield paragraph
        return
    piece = ""
    for unit in _SENTENCE_END.split(paragraph):
        while len(unit) > PASSAGE_CHARS:  # one very long sentence (or none at all): cut between words
            cut = unit.rfind(" ", 0, PASSAGE_CHARS)
            cut = cut if cut > PASSAGE_CHARS // 2 else PASSAGE_CHARS
            if piece:
                yield piece
                piece = ""
            yield unit[:cut].strip()
            unit = unit[cut:].strip()
        if piece and len(piece) + len(unit) + 1 > PASSAGE_CHARS:
            yield piece
            piece = ""
        piece = f"{piece} {unit}" if piece else unit
    if piece:
        yield piece


# Sending ---------------------------------------------------------------------------------------------------


def documents_to_attach(*, user: User, document_ids: Any) -> list[Document]:
    """The user's unsent documents named by ``document_ids``, locked for the send that attaches them. Raises
    InvalidInput for a malformed list, too many, or one that is not (or no longer) waiting to be sent."""
    if document_ids is None:
        return []
    if not isinstance(document_ids, list) or not all(isinstance(item, str) for item in document_ids):
        raise InvalidInput(_("documents must be a list of ids."))
    if len(document_ids) > MAX_PER_MESSAGE:
        raise InvalidInput(_("A message carries at most %(count)d files.") % {"count": MAX_PER_MESSAGE})
    try:
        ids = {UUID(item) for item in document_ids}
    except ValueError:
        raise InvalidInput(_("documents must be a list of ids.")) from None
    found = list(Document.objects.select_for_update().filter(owner=user, message=None, pk__in=ids))
    if len(found) != len(ids):
        raise InvalidInput(_("A file of this message is no longer there: attach it again."))
    return sorted(found, key=lambda document: document.created_at)


def attach(documents: list[Document], *, conversation: Conversation, message: Message) -> None:
    """Make ``documents`` part of the chat, shown on ``message`` (saved by then)."""
    if documents:
        Document.objects.filter(pk__in=[d.pk for d in documents]).update(conversation=conversation, message=message)


def attachments(documents: list[Document]) -> list[dict[str, Any]]:
    return [{"id": str(d.pk), "name": d.name, "kind": d.kind, "size_bytes": d.size_bytes} for d in documents]


def select_sources(
    *,
    conversation: Conversation,
    attaching: list[Document],
    question: str,
    model: LLMModel,
    prompt_tokens: int,
    max_tokens: int | None,
) -> list[dict[str, Any]]:
    """The passages of the chat's documents (those it has and those ``attaching`` now) for a reply to
    ``question``, within what the context leaves after ``prompt_tokens`` and room for the reply; in document
    order, each {document, name, part, page, text}."""
    in_chat = Q(document__conversation_id=conversation.pk) | Q(document__in=[d.pk for d in attaching])
    if not attaching and not Document.objects.filter(conversation_id=conversation.pk).exists():
        return []
    context = runtime.context_length(model)
    reply_room = min(int(max_tokens or REPLY_ROOM), REPLY_ROOM, context // 4)
    budget = min(int(context * SOURCES_SHARE), context - prompt_tokens - reply_room - 64)  # 64: the heading
    if budget <= 0:
        return []
    tokenizer = runtime.get_tokenizer(model)

    def size(passage: DocumentPassage) -> int:
        return len(tokenizer.encode(passage.text)) + 12  # 12: its label

    in_order = (
        DocumentPassage.objects.filter(in_chat).select_related("document").order_by("document__created_at", "part")
    )
    # Tokenizing is the cost here (a 1 MB file is some 250,000 tokens): documents far longer than the budget in
    # characters are not counted whole, they go straight to the ranking, which counts only what it takes.
    characters = in_order.aggregate(total=Sum(Length("text")))["total"] or 0
    if characters <= budget * _MOST_CHARS_PER_TOKEN:
        passages = list(in_order)
        if sum(size(passage) for passage in passages) <= budget:
            return [_source(passage) for passage in passages]
    ranked = _ranked(in_chat, question)
    candidates = (
        _in_order_of(ranked[:_MOST_CANDIDATES])
        if ranked
        else list(in_order[:_MOST_CANDIDATES])  # no word matches: the beginning of the documents
    )
    chosen, used = [], 0
    for passage in candidates:
        if budget - used < _SMALLEST_PASSAGE_TOKENS:
            break
        tokens = size(passage)
        if used + tokens <= budget:
            chosen.append(passage)
            used += tokens
    chosen.sort(key=lambda p: (p.document.created_at, p.part))
    return [_source(passage) for passage in chosen]


def _in_order_of(ids: list[int]) -> list[DocumentPassage]:
    found = DocumentPassage.objects.select_related("document").in_bulk(ids)
    return [found[pk] for pk in ids if pk in found]


def _source(passage: DocumentPassage) -> dict[str, Any]:
    document = passage.document
    return {
        "document": str(document.pk),
        "name": document.name,
        "part": passage.part,
        "page": passage.page,
        "text": passage.text,
    }


def _ranked(in_chat: Q, question: str) -> list[int]:
    """Ids of the passages (of ``in_chat``) that share words with ``question``, best first (ts_rank_cd over the
    passage's own search configuration; any one word may match)."""
    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(question)))[:_MAX_QUERY_WORDS]
    if not words:
        return []
    ranked: list[tuple[float, int]] = []
    passages = DocumentPassage.objects.filter(in_chat)
    configs = set(passages.order_by().values_list("document__search_config", flat=True).distinct())
    for config in configs:
        query = SearchQuery(" OR ".join(words), config=config, search_type="websearch")
        rows = (
            passages.filter(document__search_config=config)
            .filter(search=query)
            .annotate(rank=SearchRank(F("search"), query, cover_density=True))
            .values_list("rank", "pk")
        )
        ranked.extend(rows)
    return [pk for _rank, pk in sorted(ranked, key=lambda row: (-row[0], row[1]))]
