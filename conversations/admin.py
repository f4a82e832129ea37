from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from conversations.models import Conversation, Message

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
    "created_at",
)


class MessageInline(admin.TabularInline):
    model = Message
    fk_name = "conversation"
    fields = _MESSAGE_FIELDS
    readonly_fields = _MESSAGE_FIELDS
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("created_at",)

    def has_add_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("title", "owner", "model", "pinned", "archived", "created_at", "updated_at")
    list_filter = ("archived", "pinned", "title_is_provisional", "model", "created_at")
    search_fields = ("title", "owner__email")
    list_select_related = ("owner",)
    raw_id_fields = ("owner", "current_leaf")
    readonly_fields = ("id", "created_at")
    date_hierarchy = "created_at"
    inlines = (MessageInline,)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "conversation", "role", "status", "model", "completion_tokens", "ttft_ms", "created_at")
    list_filter = ("status", "role", "model", "finish_reason", "created_at")
    search_fields = ("id", "conversation__title", "conversation__owner__email")
    list_select_related = ("conversation",)
    raw_id_fields = ("conversation", "parent")
    readonly_fields = ("id", "created_at", "updated_at", "heartbeat_at", "content_seq")
    date_hierarchy = "created_at"
