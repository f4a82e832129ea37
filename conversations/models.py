"""Conversations and their message trees.

A conversation's messages form a tree: editing a user message or regenerating a reply adds a sibling
under the same parent. The conversation remembers its current leaf, and the page shows the branch from
the root down to it. An assistant message's id is also its generation id (the Redis stream's name).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.utils import timezone

# Full-text search uses the "simple" configuration (no stemming, no stop words): conversations come in
# any language, and prefix matching covers most of what stemming would.
SEARCH_CONFIG = "simple"


class Project(models.Model):
    """A named group of conversations with its own instructions, sent to the model in each of its chats (between
    the chat's system prompt and the owner's custom instructions). Deleting a project keeps its chats: they go
    back to the owner's chat list."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=100)
    instructions = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "created_at"]
        indexes = [models.Index(fields=["owner", "name"], name="project_owner_idx")]

    def __str__(self) -> str:
        # Not the name: it is the owner's words (see Conversation.__str__).
        return f"Project {str(self.pk)[:8]}"


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200)
    title_is_provisional = models.BooleanField(
        default=True, help_text="Cut from the first message; replaced by a generated title after the first reply."
    )
    model = models.CharField(max_length=100, help_text="Name of the LLMModel that answers in this conversation.")
    system_prompt = models.TextField(blank=True)
    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="conversations")
    params = models.JSONField(
        default=dict, blank=True, help_text="Sampling settings of this chat (temperature, max_tokens) over the model's."
    )
    current_leaf = models.ForeignKey("Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    pinned = models.BooleanField(default=False)
    archived = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)  # set by services on every change worth a re-sort

    class Meta:
        ordering = ["-pinned", "-updated_at"]
        indexes = [
            models.Index(fields=["owner", "archived", "-pinned", "-updated_at"], name="conv_owner_list_idx"),
            GinIndex(SearchVector("title", config=SEARCH_CONFIG), name="conv_title_search_idx"),
        ]

    def __str__(self) -> str:
        # Not the title: it is content (the first words of the first message until one is generated), and the
        # admin shows an object's name to staff who may not read contents.
        return f"Conversation {str(self.pk)[:8]}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"
        SYSTEM = "system"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        COMPLETED = "completed"
        CANCELLED = "cancelled"
        FAILED = "failed"

    FINISHED = (Status.COMPLETED, Status.CANCELLED, Status.FAILED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    # While a reply streams, content is saved about once a second: content_seq is the seq of the last stream
    # event it includes, so a page that renders it watches the stream after that seq (no gap, no duplicate).
    content_seq = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETED)
    finish_reason = models.CharField(max_length=16, blank=True)
    error = models.TextField(blank=True, help_text="Why the generation failed, as shown to the user.")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0, help_text="Prompt tokens served from the prefix cache.")
    model = models.CharField(max_length=100, blank=True)
    params = models.JSONField(default=dict, blank=True, help_text="Sampling parameters the reply was asked with.")
    ttft_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="From the message's creation (queueing included) to its first token, in ms."
    )
    duration_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="From the worker taking the reply to its last token, in ms."
    )
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last sign of life of its worker.")
    feedback = models.SmallIntegerField(
        null=True,
        blank=True,
        choices=[(1, "Good reply"), (-1, "Bad reply")],
        help_text="The user's thumbs up (1) or down (-1) on a reply.",
    )
    attachments = models.JSONField(
        default=list, blank=True, help_text="A user message's documents: [{id, name, size_bytes}]."
    )
    sources = models.JSONField(
        default=list,
        blank=True,
        help_text="A reply's passages of the chat's documents put in its prompt: [{document, name, part, page, text}].",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        # What users wrote and the model answered is shown in the admin only to staff given this permission
        # (superusers have it), and each time it is, a StaffAccess row records who looked.
        permissions = [("view_message_content", "Can read the contents of users' conversations")]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="msg_conversation_idx"),
            models.Index(fields=["parent", "created_at"], name="msg_parent_idx"),
            # The sweeper looks only at unfinished generations.
            models.Index(
                fields=["status", "heartbeat_at"],
                name="msg_unfinished_idx",
                condition=models.Q(status__in=["queued", "running"]),
            ),
            GinIndex(SearchVector("content", config=SEARCH_CONFIG), name="msg_content_search_idx"),
            # The daily roll-up (conversations.rollups) reads a day's replies.
            models.Index(fields=["created_at"], name="msg_reply_created_idx", condition=models.Q(role="assistant")),
        ]

    def __str__(self) -> str:
        return f"{self.role} {self.id}"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class ReplyDay(models.Model):
    """A day of chat replies rolled up (conversations.rollups, kept by a beat task) by model and status, with
    the time to first token, for the analytics page."""

    day = models.DateField()
    model = models.CharField(max_length=100)
    status = models.CharField(max_length=16)
    replies = models.PositiveIntegerField(default=0)
    ttft_ms_p50 = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms_p90 = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-day", "model", "status"]
        constraints = [models.UniqueConstraint(fields=["day", "model", "status"], name="reply_day_unique")]

    def __str__(self) -> str:
        return f"{self.day} {self.model} {self.status}: {self.replies}"


class StaffAccess(models.Model):
    """A member of staff opened a user's conversation (or one of its messages) in the admin: the audit log
    admins read. Kept when either account or the conversation is deleted (the e-mail addresses are copied)."""

    at = models.DateTimeField(default=timezone.now, db_index=True, editable=False)
    staff = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    staff_email = models.EmailField(editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    owner_email = models.EmailField(editable=False)
    conversation_id = models.UUIDField(db_index=True, editable=False)
    message_id = models.UUIDField(null=True, blank=True, editable=False)
    content_shown = models.BooleanField(
        editable=False,
        help_text="Whether the messages' contents were on the page (the staff member has the permission).",
    )
    ip = models.GenericIPAddressField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-at"]
        verbose_name = "staff access to a conversation"
        verbose_name_plural = "staff accesses to conversations"

    def __str__(self) -> str:
        return f"{self.staff_email} opened {self.owner_email}'s conversation {self.conversation_id}"


class SharedLink(models.Model):
    """A read-only link to a snapshot of one branch of a conversation, as it was when shared: what is written in
    the conversation afterwards is not shown. Anyone with the link reads it until its owner revokes it."""

    token = models.CharField(max_length=43, unique=True, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="shared_links")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="shared_links")
    title = models.CharField(max_length=200)
    messages = models.JSONField(help_text="The branch when shared: [{role, content, model, created_at}].")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="shared_owner_idx")]

    def __str__(self) -> str:
        return f"{self.title} ({'revoked' if self.revoked_at else 'shared'})"


class DataExport(models.Model):
    """A ZIP of all of a user's conversations (JSON and Markdown), built by a ``default`` queue task and offered
    for download for EXPORT_KEEP_DAYS. Kept in PostgreSQL: web and workers share no disk in a cluster."""

    class Status(models.TextChoices):
        PENDING = "pending"
        READY = "ready"
        FAILED = "failed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="data_exports")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    archive = models.BinaryField(null=True, editable=False)
    size_bytes = models.PositiveBigIntegerField(default=0)
    conversations = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="export_owner_idx")]

    def __str__(self) -> str:
        return f"Export {self.pk} of user {self.owner_id} ({self.status})"


class Document(models.Model):
    """A file attached to a chat: its text, extracted on upload and split into passages (DocumentPassage) that
    replies draw on. Uploaded before the message that carries it is sent (``conversation`` and ``message`` empty
    until then); a document never sent is deleted after a day (documents.documents_forget_unsent)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="documents")
    conversation = models.ForeignKey(
        Conversation, null=True, blank=True, on_delete=models.CASCADE, related_name="documents"
    )
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="documents")
    name = models.CharField(max_length=255)
    kind = models.CharField(max_length=16, help_text="text, markdown, code or pdf")
    size_bytes = models.PositiveIntegerField()
    characters = models.PositiveIntegerField(help_text="Length of the extracted text.")
    search_config = models.CharField(
        max_length=32, default="english", help_text="PostgreSQL text search configuration of its passages."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="document_conversation_idx"),
            models.Index(fields=["owner", "created_at"], name="document_owner_idx", condition=models.Q(message=None)),
        ]

    def __str__(self) -> str:
        return f"Document {str(self.pk)[:8]}"


class DocumentPassage(models.Model):
    """One passage of a document's text (about a paragraph or a few), ranked against a question by PostgreSQL's
    full-text search over ``search`` (filled on insert with the document's search_config)."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="passages")
    part = models.PositiveIntegerField(help_text="1-based position in the document.")
    page = models.PositiveIntegerField(null=True, blank=True, help_text="The PDF page it starts on.")
    text = models.TextField()
    search = SearchVectorField(null=True)

    class Meta:
        ordering = ["document", "part"]
        constraints = [models.UniqueConstraint(fields=["document", "part"], name="passage_document_part")]
        indexes = [GinIndex(fields=["search"], name="passage_search_idx")]

    def __str__(self) -> str:
        return f"Passage {self.part} of {self.document_id}"
