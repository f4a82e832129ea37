"""Conversations in the Django admin, private by default.

Message contents (and a conversation's system prompt) are read-only everywhere in the admin and shown only to
staff with the ``conversations.view_message_content`` permission (superusers have every permission). Every
time a member of staff opens a user's conversation or message, a StaffAccess row records it, with whether the
contents were shown; admins read that log under "Staff accesses to conversations" and nobody can change it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.text import Truncator

from conversations.models import Conversation, Message, SharedLink, StaffAccess

CONTENT_PERMISSION = "conversations.view_message_content"
_CONTENT_FIELDS = ("content", "error")  # an error can quote what was written

_MESSAGE_FIELDS = (
    "id",
    "role",
    "status",
    "parent",
    "content",
    "finish_reason",
    "error",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "ttft_ms",
    "duration_ms",
    "feedback",
    "created_at",
)


def can_read_content(request: HttpRequest) -> bool:
    return request.user.has_perm(CONTENT_PERMISSION)


def _without_content(fields: tuple[str, ...], request: HttpRequest, hidden: tuple[str, ...]) -> tuple[str, ...]:
    return fields if can_read_content(request) else tuple(name for name in fields if name not in hidden)


def _record(request: HttpRequest, conversation: Conversation, message: Message | None = None) -> None:
    StaffAccess.objects.create(
        staff=request.user,
        staff_email=request.user.email,
        owner_id=conversation.owner_id,
        owner_email=conversation.owner.email,
        conversation_id=conversation.pk,
        message_id=message.pk if message else None,
        content_shown=can_read_content(request),
        ip=request.META.get("REMOTE_ADDR") or None,
    )


class MessageInline(admin.TabularInline):
    model = Message
    fk_name = "conversation"
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("created_at",)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return _without_content(_MESSAGE_FIELDS, request, _CONTENT_FIELDS)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return self.get_fields(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class _AuditedAdmin(admin.ModelAdmin):
    """Each page of one object shown to staff writes a StaffAccess row (ModelAdmin.change_view, the documented
    place to add to the change page)."""

    audited: Callable[[Any], tuple[Conversation, Message | None]]  # each subclass: whose conversation obj is in

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().change_view(request, object_id, form_url, extra_context)
        obj = self.get_object(request, object_id)
        if obj is not None and response.status_code == 200:
            _record(request, *self.audited(obj))
        return response


@admin.register(Conversation)
class ConversationAdmin(_AuditedAdmin):
    list_display = ("title", "owner", "model", "pinned", "archived", "created_at", "updated_at")
    list_filter = ("archived", "pinned", "title_is_provisional", "model", "created_at")
    search_fields = ("title", "owner__email")
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    inlines = (MessageInline,)

    # A title is content too: until one is generated it is the first words of the user's first message.
    def get_list_display(self, request: HttpRequest) -> tuple[str, ...]:
        shown = self.list_display
        return shown if can_read_content(request) else ("short_id", *shown[1:])

    def get_search_fields(self, request: HttpRequest) -> tuple[str, ...]:
        return self.search_fields if can_read_content(request) else ("owner__email", "=id")

    @admin.display(description="conversation", ordering="id")
    def short_id(self, obj: Conversation) -> str:
        return str(obj.pk)[:8]

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return () if can_read_content(request) else ("system_prompt", "title")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        content = ("system_prompt",) if can_read_content(request) else ()
        # The project is the owner's: staff choosing another user's would mix two accounts' chats.
        return ("id", "owner", "project", "current_leaf", "created_at", *content)

    def audited(self, obj: Conversation) -> tuple[Conversation, None]:
        return obj, None


@admin.register(Message)
class MessageAdmin(_AuditedAdmin):
    """Read-only: what a user wrote or was answered is never edited by staff."""

    list_display = (
        "short_id",
        "conversation_title",
        "role",
        "status",
        "model",
        "tokens",
        "ttft",
        "rating",
        "created_at",
    )
    list_filter = ("feedback", "status", "role", "model", "finish_reason", "created_at")
    search_fields = ("id", "conversation__title", "conversation__owner__email")
    list_select_related = ("conversation",)
    date_hierarchy = "created_at"

    @admin.display(description="id", ordering="id")
    def short_id(self, obj: Message) -> str:
        return str(obj.pk)[:8]  # the whole id is on the message's page; 36 characters pushed columns off a 1280 px list

    @admin.display(description="conversation", ordering="conversation__title")
    def conversation_title(self, obj: Message) -> str:
        return Truncator(obj.conversation.title).chars(40)

    def get_list_display(self, request: HttpRequest) -> tuple[str, ...]:
        if can_read_content(request):
            return self.list_display
        return tuple("conversation" if name == "conversation_title" else name for name in self.list_display)

    def get_search_fields(self, request: HttpRequest) -> tuple[str, ...]:
        if can_read_content(request):
            return self.search_fields
        return tuple(name for name in self.search_fields if name != "conversation__title")

    @admin.display(description="tokens", ordering="completion_tokens")
    def tokens(self, obj: Message) -> int | None:
        return obj.completion_tokens

    @admin.display(description="rating", ordering="feedback")
    def rating(self, obj: Message) -> str:
        return {1: "👍", -1: "👎"}.get(obj.feedback, "")  # type: ignore[arg-type]

    @admin.display(description="TTFT ms", ordering="ttft_ms")
    def ttft(self, obj: Message) -> int | None:
        return obj.ttft_ms

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = ("conversation", *_MESSAGE_FIELDS, "params", "updated_at", "heartbeat_at", "content_seq")
        return _without_content(fields, request, _CONTENT_FIELDS)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return self.get_fields(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def audited(self, obj: Message) -> tuple[Conversation, Message]:
        return obj.conversation, obj


@admin.register(StaffAccess)
class StaffAccessAdmin(admin.ModelAdmin):
    """The audit log: who among staff opened whose conversation, when, and whether they saw its contents."""

    list_display = ("at", "staff_email", "owner_email", "conversation_id", "message_id", "content_shown", "ip")
    list_filter = ("content_shown", "at")
    search_fields = ("staff_email", "owner_email", "=conversation_id")
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SharedLink)
class SharedLinkAdmin(admin.ModelAdmin):
    """Shared links, for taking one down (revoke). Their snapshots are contents: shown only with the permission."""

    list_display = ("short_token", "owner", "created_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("owner__email", "=token")
    list_select_related = ("owner",)
    actions = ("revoke",)

    @admin.display(description="link")
    def short_token(self, obj: SharedLink) -> str:
        return f"/s/{obj.token[:8]}…"

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        base = ("token", "owner", "conversation", "created_at", "revoked_at")
        return (*base, "title", "messages") if can_read_content(request) else base

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return self.get_fields(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke the selected links (they stop opening at once)")
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} link(s).")
