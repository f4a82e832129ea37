"""Projects: named groups of a user's conversations with their own instructions (like ChatGPT's projects).

Reads and writes in one place, scoped to ``user`` like the rest of the app: someone else's project raises
NotFound exactly like an unknown one. A project's instructions go into the system message of each of its
chats (prompts.chat_messages). Deleting a project keeps its chats: they go back to the chat list.
"""

from __future__ import annotations

from uuid import UUID

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from conversations.errors import InvalidInput, NotFound
from conversations.models import Conversation, Project

MAX_PROJECTS = 200  # per user: the sidebar lists them all
MAX_NAME_CHARS = 100
MAX_INSTRUCTIONS_CHARS = 20_000
PROJECT_CHATS_SHOWN = 100  # on a project's page, the most recent


def project_list(*, user: User) -> QuerySet[Project]:
    return Project.objects.filter(owner=user).order_by("name", "created_at")


def project_get(*, user: User, project_id: UUID | str) -> Project:
    try:
        return Project.objects.get(owner=user, pk=project_id)
    except (Project.DoesNotExist, ValidationError, ValueError, TypeError):  # a malformed id is an unknown one
        raise NotFound(_("Project not found.")) from None


def project_conversations(*, user: User, project: Project) -> QuerySet[Conversation]:
    """The project's chats, archived ones too, most recently active first."""
    return Conversation.objects.filter(owner=user, project=project).order_by("-updated_at", "-id")


def project_create(*, user: User, name: str, instructions: str = "") -> Project:
    """Raises InvalidInput (an empty or long name, long instructions, one project too many)."""
    name, instructions = _clean(name, instructions)
    with transaction.atomic():
        # Serialise one user's creations so two at once cannot both pass the count.
        User.objects.select_for_update().filter(pk=user.pk).first()
        if Project.objects.filter(owner=user).count() >= MAX_PROJECTS:
            raise InvalidInput(
                _("You have %(count)d projects, the most there can be: delete one first.") % {"count": MAX_PROJECTS}
            )
        return Project.objects.create(owner=user, name=name, instructions=instructions)


def project_update(*, user: User, project_id: UUID | str, name: str, instructions: str) -> Project:
    name, instructions = _clean(name, instructions)
    with transaction.atomic():
        project = _locked(user, project_id)
        project.name, project.instructions, project.updated_at = name, instructions, timezone.now()
        project.save(update_fields=["name", "instructions", "updated_at"])
    return project


def project_delete(*, user: User, project_id: UUID | str) -> int:
    """Delete the project; its chats stay, out of any project. Returns how many chats it held."""
    with transaction.atomic():
        project = _locked(user, project_id)
        moved = Conversation.objects.filter(owner=user, project=project).update(project=None)
        project.delete()
    return moved


def _locked(user: User, project_id: UUID | str) -> Project:
    try:
        return Project.objects.select_for_update().get(owner=user, pk=project_id)
    except (Project.DoesNotExist, ValidationError, ValueError, TypeError):
        raise NotFound(_("Project not found.")) from None


def _clean(name: str, instructions: str) -> tuple[str, str]:
    name = " ".join((name or "").split())
    if not name:
        raise InvalidInput(_("A project needs a name."))
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInput(_("A project's name has at most %(count)d characters.") % {"count": MAX_NAME_CHARS})
    instructions = (instructions or "").replace("\x00", "").strip()
    if len(instructions) > MAX_INSTRUCTIONS_CHARS:
        raise InvalidInput(
            _("A project's instructions have at most %(count)d characters.") % {"count": MAX_INSTRUCTIONS_CHARS}
        )
    return name, instructions
