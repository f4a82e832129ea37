from __future__ import annotations

from pathlib import PurePath

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from inference.models import LLMModel


@admin.register(LLMModel)
class LLMModelAdmin(admin.ModelAdmin):
    list_display = ("name", "display_name", "source_or_default", "context_length", "enabled", "is_default", "updated")
    list_editable = ("enabled",)
    list_filter = ("enabled", "is_default")
    search_fields = ("name", "display_name", "source")
    readonly_fields = ("created", "updated")
    actions = ("enable", "disable", "make_default")

    @admin.display(description="source")
    def source_or_default(self, obj: LLMModel) -> str:
        """The file or folder name (the whole path on hover and on the model's page): a long path pushed the list's
        last columns off a 1280 px screen."""
        if not obj.source:
            return "(bundled default model)"
        return format_html('<span title="{}">{}</span>', obj.source, PurePath(obj.source).name or obj.source)

    @admin.action(description="Enable the selected models")
    def enable(self, request: HttpRequest, queryset: QuerySet[LLMModel]) -> None:
        count = queryset.update(enabled=True)
        self.message_user(request, f"Enabled {count} model(s).")

    @admin.action(description="Disable the selected models")
    def disable(self, request: HttpRequest, queryset: QuerySet[LLMModel]) -> None:
        if queryset.filter(is_default=True).exists():
            self.message_user(
                request, "The default model cannot be disabled: make another one default first.", messages.ERROR
            )
            return
        count = queryset.update(enabled=False)
        self.message_user(request, f"Disabled {count} model(s).")

    @admin.action(description="Make the selected model the default")
    def make_default(self, request: HttpRequest, queryset: QuerySet[LLMModel]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model to make it the default.", messages.ERROR)
            return
        with transaction.atomic():
            LLMModel.objects.filter(is_default=True).update(is_default=False)
            queryset.update(is_default=True, enabled=True)
        self.message_user(request, f"{queryset.get()} is now the default model.")
