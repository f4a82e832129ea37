"""The chat pages. "/" is a new chat for a signed-in user (the landing page for a visitor); "/c/<id>/" is
one conversation, its current branch rendered on the server and, when its last reply is still being
written, resumed by the page's JavaScript over the WebSocket."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from kombu.exceptions import OperationalError as BrokerError

from accounts import views as account_views
from accounts.decorators import verified_required
from accounts.models import User
from config.errors import UNAVAILABLE_ERRORS
from conversations import documents, exports, presenters, projects, selectors, sharing, tasks
from conversations.errors import InvalidInput, NotFound
from conversations.forms import ProjectForm
from conversations.models import Conversation, DataExport, Project
from inference.registry import model_list_enabled

SIDEBAR_PAGE = 100  # the most recent; scrolling the sidebar loads the next pages (conversation.search)


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


@require_safe
@never_cache
@verified_required
def project_detail(request: HttpRequest, project_id: UUID) -> HttpResponse:
    """A project: a new chat in it, above the list of its chats."""
    user: User = request.user  # type: ignore[assignment]
    project = _project_or_404(user, project_id)
    return _chat_page(request, user=user, conversation=None, project=project)


def _project_or_404(user: User, project_id: UUID) -> Project:
    try:
        return projects.project_get(user=user, project_id=project_id)
    except NotFound:
        raise Http404("Project not found.") from None


def _chat_page(
    request: HttpRequest, *, user: User, conversation: Conversation | None, project: Project | None = None
) -> HttpResponse:
    if conversation and conversation.project_id:
        try:
            project = projects.project_get(user=user, project_id=conversation.project_id)
        except NotFound:  # deleted since the chat was read: the chat is out of it now
            project = None
    project_list = list(projects.project_list(user=user))
    project_chats = (
        list(projects.project_conversations(user=user, project=project)[: projects.PROJECT_CHATS_SHOWN])
        if project and not conversation
        else []
    )
    messages = (
        presenters.branch_to_list(selectors.conversation_branch(user=user, conversation=conversation))
        if conversation
        else []
    )
    first_page, next_cursor = selectors.conversation_page(user=user, limit=SIDEBAR_PAGE)
    conversations = [presenters.conversation_to_dict(item) for item in first_page]
    models = [{"name": model.name, "display_name": model.display_name} for model in model_list_enabled()]
    chat_data: dict[str, Any] = {
        "conversation": presenters.conversation_to_dict(conversation) if conversation else None,
        "messages": messages,
        "conversations": conversations,
        "conversations_next": next_cursor,
        "models": models,
        "projects": [{"id": str(item.pk), "name": item.name} for item in project_list],
        "project": str(project.pk) if project else None,
        "default_model": models[0]["name"] if models else "",
        "logo_url": static("img/logo.svg"),
        "login_url": reverse("accounts:login"),
        "billing_url": reverse("accounts:settings_billing"),
        "documents_url": reverse("conversations:document_upload"),
        "documents_max_files": documents.MAX_PER_MESSAGE,
        "documents_max_bytes": documents.MAX_BYTES,
    }
    context = {
        "conversation": conversation,
        "branch": messages,  # not "messages": base.html shows Django's messages under that name
        "conversations": conversations,
        "models": models,
        "selected_model": conversation.model if conversation else chat_data["default_model"],
        "projects": project_list,
        "project": project,
        "project_chats": project_chats,
        "documents_accept": documents.ACCEPT,
        "documents_max_files": documents.MAX_PER_MESSAGE,
        "documents_max_mb": documents.MAX_BYTES // (1024 * 1024),
        "chat_data": chat_data,
    }
    return render(request, "chat/chat.html", context)


# Projects ----------------------------------------------------------------------------------------------


@never_cache
@verified_required
@require_http_methods(["GET", "POST"])
def project_new(request: HttpRequest) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = projects.project_create(user=user, **form.cleaned_data)
        except InvalidInput as exc:
            form.add_error(None, exc.message)
        else:
            return redirect("conversations:project", project.pk)
    return render(request, "chat/project_form.html", {"form": form, "project": None})


@never_cache
@verified_required
@require_http_methods(["GET", "POST"])
def project_edit(request: HttpRequest, project_id: UUID) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    project = _project_or_404(user, project_id)
    initial = {"name": project.name, "instructions": project.instructions}
    form = ProjectForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            projects.project_update(user=user, project_id=project.pk, **form.cleaned_data)
        except (InvalidInput, NotFound) as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, _("The project is saved."))
            return redirect("conversations:project", project.pk)
    return render(request, "chat/project_form.html", {"form": form, "project": project})


@never_cache
@verified_required
@require_http_methods(["GET", "POST"])
def project_delete(request: HttpRequest, project_id: UUID) -> HttpResponse:
    """Asks first (GET), deletes on POST; the project's chats stay, back in the chat list."""
    user: User = request.user  # type: ignore[assignment]
    project = _project_or_404(user, project_id)
    if request.method == "POST":
        moved = projects.project_delete(user=user, project_id=project.pk)
        said = _("The project “%(name)s” is deleted.") % {"name": project.name}
        if moved:
            said += " " + _("Its chats (%(count)d) stay in your chat list.") % {"count": moved}
        messages.success(request, said)
        return redirect("home")
    chats = projects.project_conversations(user=user, project=project).count()
    return render(request, "chat/project_delete.html", {"project": project, "chats": chats})


# Documents ---------------------------------------------------------------------------------------------


@never_cache
@verified_required
@require_POST
def document_upload(request: HttpRequest) -> JsonResponse:
    """A file for the next message (multipart field ``file``): its text is read and stored, and the answer is
    {id, name, kind, size_bytes, characters, passages}, or 400 {error} saying what is wrong with it."""
    user: User = request.user  # type: ignore[assignment]
    upload = request.FILES.get("file")
    if upload is None:
        return JsonResponse({"error": _("Choose a file to attach.")}, status=400)
    if upload.size is not None and upload.size > documents.MAX_BYTES:
        return JsonResponse({"error": documents.too_large(upload.name or "")}, status=400)
    try:
        document = documents.document_upload(
            user=user, name=upload.name or "", data=upload.read(), language=get_language()
        )
    except InvalidInput as exc:
        return JsonResponse({"error": exc.message}, status=400)
    answer = documents.attachments([document])[0] | {
        "characters": document.characters,
        "passages": document.passages.count(),
    }
    return JsonResponse(answer, status=201)


@never_cache
@verified_required
@require_POST
def document_remove(request: HttpRequest, document_id: UUID) -> HttpResponse:
    """Take back a file attached to the composer and not sent."""
    documents.document_remove(user=request.user, document_id=document_id)  # type: ignore[arg-type]
    return HttpResponse(status=204)


# Shared links ------------------------------------------------------------------------------------------


@require_safe
def shared(request: HttpRequest, token: str) -> HttpResponse:
    """A shared snapshot, for anyone with the link: read-only, rendered like the chat, never indexed."""
    try:
        link = sharing.share_get_public(token=token)
    except NotFound:
        raise Http404("This shared link does not exist or was revoked.") from None
    response = render(request, "chat/shared.html", {"link": link})
    response["X-Robots-Tag"] = "noindex, nofollow, noarchive"
    response["Cache-Control"] = "private, no-cache"  # a revoked link must stop showing at once
    return response


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def settings_shared_links(request: HttpRequest) -> HttpResponse:
    """The user's shared links, each with a button that revokes it (POST ``revoke`` = its id)."""
    user: User = request.user  # type: ignore[assignment]
    if request.method == "POST":
        try:
            link = sharing.share_revoke(user=user, share_id=int(request.POST.get("revoke", "")))
        except (ValueError, NotFound):
            raise Http404("No such shared link.") from None
        messages.success(request, _("The link to “%(title)s” is revoked: it no longer opens.") % {"title": link.title})
        return redirect("conversations:settings_shared_links")
    context = {"links": sharing.share_list(user=user), "section": "shared_links"}
    return render(request, "chat/settings_shared_links.html", context)


# Export your data --------------------------------------------------------------------------------------


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def settings_export(request: HttpRequest) -> HttpResponse:
    """Ask for a ZIP of every conversation (built by a default-queue task), and download the ones ready.
    While one is being built the page refreshes itself every few seconds."""
    user: User = request.user  # type: ignore[assignment]
    if request.method == "POST":
        try:
            export = exports.export_request(user=user)
        except InvalidInput as exc:
            messages.error(request, exc.message)
            return redirect("conversations:settings_export")
        try:
            tasks.export_build.delay(export.pk)
        except (*UNAVAILABLE_ERRORS, BrokerError):
            export.delete()
            messages.error(request, _("Djinn cannot start the export right now. Try again in a minute."))
        else:
            messages.success(request, _("Your export is being prepared: it appears below when it is ready."))
        return redirect("conversations:settings_export")
    exports.export_forget_old(user=user)
    listed = list(exports.export_list(user=user))
    context = {
        "exports": listed,
        "preparing": any(export.status == DataExport.Status.PENDING for export in listed),
        "keep_days": exports.EXPORT_KEEP_DAYS,
        "section": "export",
    }
    return render(request, "chat/settings_export.html", context)


@never_cache
@login_required
@require_safe
def export_download(request: HttpRequest, export_id: int) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    try:
        export = exports.export_get_ready(user=user, export_id=export_id)
    except NotFound:
        raise Http404("Export not found.") from None
    response = HttpResponse(bytes(export.archive), content_type="application/zip")
    name = f"djinn-export-{export.created_at:%Y-%m-%d}.zip"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
