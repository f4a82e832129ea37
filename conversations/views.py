"""The chat pages. "/" is a new chat for a signed-in user (the landing page for a visitor); "/c/<id>/" is
one conversation, its current branch rendered on the server and, when its last reply is still being
written, resumed by the page's JavaScript over the WebSocket."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.templatetags.static import static
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from accounts import views as account_views
from accounts.decorators import verified_required
from accounts.models import User
from conversations import presenters, selectors
from conversations.errors import NotFound
from conversations.models import Conversation
from inference.registry import model_list_enabled

SIDEBAR_LIMIT = 200  # the most recent; search reaches the rest


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return account_views.landing(request)
    return new_chat(request)


@never_cache
@verified_required
def new_chat(request: HttpRequest) -> HttpResponse:
    return _chat_page(request, user=request.user, conversation=None)  # type: ignore[arg-type]


@require_safe
@never_cache
@verified_required
def conversation_detail(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    try:
        conversation = selectors.conversation_get(user=user, conversation_id=conversation_id)
    except NotFound:
        raise Http404("Conversation not found.") from None
    return _chat_page(request, user=user, conversation=conversation)


def _chat_page(request: HttpRequest, *, user: User, conversation: Conversation | None) -> HttpResponse:
    messages = (
        presenters.branch_to_list(selectors.conversation_branch(user=user, conversation=conversation))
        if conversation
        else []
    )
    conversations = [
        presenters.conversation_to_dict(item) for item in selectors.conversation_list(user=user)[:SIDEBAR_LIMIT]
    ]
    models = [{"name": model.name, "display_name": model.display_name} for model in model_list_enabled()]
    chat_data: dict[str, Any] = {
        "conversation": presenters.conversation_to_dict(conversation) if conversation else None,
        "messages": messages,
        "conversations": conversations,
        "models": models,
        "default_model": models[0]["name"] if models else "",
        "logo_url": static("img/logo.svg"),
        "login_url": reverse("accounts:login"),
        "billing_url": reverse("accounts:settings_billing"),
    }
    context = {
        "conversation": conversation,
        "branch": messages,  # not "messages": base.html shows Django's messages under that name
        "conversations": conversations,
        "models": models,
        "selected_model": conversation.model if conversation else chat_data["default_model"],
        "chat_data": chat_data,
    }
    return render(request, "chat/chat.html", context)
