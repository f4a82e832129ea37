"""Forms of the chat pages that are plain HTML forms (the chat itself talks over the WebSocket)."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from conversations import projects


class ProjectForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=projects.MAX_NAME_CHARS)
    instructions = forms.CharField(
        label=_("Instructions"),
        required=False,
        max_length=projects.MAX_INSTRUCTIONS_CHARS,
        help_text=_(
            "How Djinn should answer in every chat of this project: the context, the tone, what to keep in "
            "mind. Sent with each message, after the chat's own settings."
        ),
        widget=forms.Textarea(attrs={"rows": 8}),
    )
