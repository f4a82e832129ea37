"""The chat WebSocket: one per browser tab at ``/ws/chat/``.

The browser sends small JSON commands; each one calls a service or selector in a worker thread
(``database_sync_to_async``) and answers with events. Replies stream from the generation's Redis
stream: every watched generation is its own asyncio task following it (``inference.follow``, fed by the
process's one stream reader), so nothing here blocks the event loop, and a slow client only ever delays its
own tasks, never the worker that writes the stream nor other clients.

Frames (DESIGN.md, "A chat message, end to end", has the flow). Browser -> server, each a JSON object
with a ``type``; ``client_id`` (optional) comes back on the answer or the error:

    message.send {conversation, parent, content, model, system_prompt, params, project, documents: [id]}
                                                                                 -> turn.created, then
    message.regenerate {message} / message.edit {message, content}                  conversation.branch,
    / message.continue {message} (a reply cut at its length limit: written on)      then the reply's events
    generation.watch {id, after} -> the events with seq > after;  generation.cancel {id}
    conversation.rename {conversation, title} / .pin {conversation, pinned} / .archive {conversation,
        archived} / .set_system_prompt {conversation, system_prompt} / .set_params {conversation, params:
        {temperature?, max_tokens?}} / .set_project {conversation, project: id | null}
        -> conversation.updated (every tab)
    (a new turn: conversation.updated {conversation, new_turn: true} to the user's other tabs; ``parent`` on
    message.send must still be the end of the branch, else error conversation_changed, then conversation.branch)
    conversation.delete {conversation} -> conversation.deleted {conversation} (every tab)
    conversation.switch_branch {message} / conversation.open {conversation} -> conversation.branch
    conversation.search {query, archived, after?} -> conversation.list {query, archived, after, next, conversations}
    conversation.share {conversation} -> conversation.shared {conversation, url} (a read-only link to a snapshot)
    message.feedback {message, rating: 1 | -1 | null} -> message.updated {message} (every tab)
    ping -> pong (the page's heartbeat);  generation.state {id} -> generation.state {id, state} (a reply that
    shows nothing yet: queued, loading_model, running, or its final status)
    (a page of PAGE_SIZE by keyset: ``after`` is the ``next`` of the page before; ``next`` is null on the last)

Server -> browser also: generation.delta {id, seq, text}, generation.done {id, seq, finish_reason, usage,
message}, generation.error {id, seq, message, code}, generation.waiting {id, seq} (a watch with nothing to
say for WATCH_QUIET_S: it is alive), generation.interrupted {id, seq, message} (the stream could not be read:
watch again after a pause), error {code, message, client_id?, retry_after_s?, limit?} (``retry_after_s``
and ``limit`` when a plan's limit was reached). Conversations and messages are presenters' dicts; a branch is
``presenters.branch_to_list``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop
from django.utils.translation.trans_real import parse_accept_lang_header

from config.errors import UNAVAILABLE_ERRORS
from conversations import presenters, selectors, services, sharing
from conversations.errors import ConversationError, InvalidInput, LimitReached, NotFound, Stale
from conversations.following import FAILED, db, reply_settle
from conversations.models import Conversation
from conversations.sessions import session_signs_in
from inference import streams
from inference.follow import FollowInterrupted, follow
from inference.redis import get_async_redis

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
# How long a watch waits for events before it looks at the database (s): a generation whose stream has
# expired, or that was finished by someone who wrote no event, still ends on the client. The page hears
# from a watch at least this often (generation.waiting), and watches again if it does not.
WATCH_QUIET_S = 10.0
INTERRUPTED = gettext_noop("Lost contact with the reply stream. Reconnecting…")
MAX_WATCHES = 8  # per connection; a tab follows one reply at a time, the rest is headroom for races
MAX_FRAME_CHARS = 256_000
# Frames a connection may send: a burst of FLOOD_BURST, then FLOOD_RATE a second. Past that a frame is refused
# with an error; a client that keeps at it past FLOOD_CLOSE_AFTER refusals is disconnected (CLOSE_FLOOD).
FLOOD_BURST = 40
FLOOD_RATE = 10.0
FLOOD_CLOSE_AFTER = 200
CLOSE_FLOOD = 4429
UNAVAILABLE = gettext_noop("Djinn cannot reach its database or cache right now. Try again in a few seconds.")
PAGE_SIZE = 100  # conversations in one page of the sidebar (conversation.search)
# A command that makes a turn is recorded by its client_id (the page's own id for it) for SENT_TTL_S, so the page
# can send it again after a dropped connection without making it twice. A second copy that finds the first still
# being made waits up to SENT_WAIT_TRIES x SENT_WAIT_S for it.
SENT_TTL_S = 600
SENT_PENDING = "pending"
SENT_WAIT_TRIES = 20  # 2 s at most: this connection's other frames (its heartbeat's ping) wait meanwhile
SENT_WAIT_S = 0.1


def sent_key(user_id: int, command: dict[str, Any]) -> str:
    """The record of a turn-making command: its client_id and what it asks, so the same id on a different
    command (a careless client's) is a different command."""
    fields = ("client_id", "type", "conversation", "parent", "message", "content")
    identity = json.dumps([command.get(name) for name in fields], sort_keys=True, default=str)
    return f"djinn:sent:{user_id}:{hashlib.sha256(identity.encode()).hexdigest()}"


EVENT_TYPES = {"delta": "generation.delta", "done": "generation.done", "error": "generation.error"}


Handler = Callable[["ChatConsumer", dict[str, Any]], Awaitable[None]]


def user_group(user_id: int) -> str:
    """The channel-layer group of one user's open tabs (the title task sends ``conversation.updated`` here)."""
    return f"user.{user_id}"


def connection_language(scope: dict[str, Any]) -> str:
    """The language a connection speaks: the user's choice in Settings, else the first of the handshake's
    Accept-Language that Djinn has, else the default (what the pages do, in accounts.middleware)."""
    user = scope.get("user")
    if user is not None and user.is_authenticated and user.language:
        return user.language
    headers = dict(scope.get("headers") or [])
    accepted = headers.get(b"accept-language", b"").decode("latin-1")
    for code, _quality in parse_accept_lang_header(accepted):
        if code == "*":
            break
        try:
            return translation.get_supported_language_variant(code)
        except LookupError:
            continue
    return settings.LANGUAGE_CODE


class ChatConsumer(AsyncJsonWebsocketConsumer):
    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels runs consumers outside Django's middleware: every event (a frame, a group message, the
        # connection itself) is handled in the connection's language. The override is context-local, so the
        # sync code run through database_sync_to_async and the watch tasks started here see it too.
        if not hasattr(self, "language"):
            self.language = connection_language(self.scope)
        with translation.override(self.language):
            await super().dispatch(message)

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.watches: dict[str, asyncio.Task[None]] = {}
        self.group: str | None = None
        self.allowance = float(FLOOD_BURST)
        self.allowance_at = asyncio.get_running_loop().time()
        self.refused = 0
        if self.user is None or not self.user.is_authenticated:
            # Accept before closing so the browser sees the 4401 code (a refused handshake only shows 1006).
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.session_key = getattr(self.scope.get("session"), "session_key", None)
        # In the group before the handshake completes: from the moment the tab is open it hears its user's
        # events (a title, another tab's rename, the session ending).
        self.group = user_group(self.user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for task in self.watches.values():
            task.cancel()
        self.watches.clear()
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    # Frames in -----------------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if not self._take_allowance():
            self.refused += 1
            if self.refused > FLOOD_CLOSE_AFTER:
                await self.close(code=CLOSE_FLOOD)
            elif self.refused == 1 or self.refused % 50 == 0:
                await self.send_error("rate_limited", _("Too many messages at once: slow down."))
            return
        if text_data is None:
            await self.send_error("invalid_input", _("Frames must be JSON text."))
            return
        if len(text_data) > MAX_FRAME_CHARS:
            await self.send_error("invalid_input", _("That frame is too large."))
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self.send_error("invalid_input", _("That frame is not valid JSON."))
            return
        if not isinstance(content, dict):
            await self.send_error("invalid_input", _("A frame must be a JSON object with a type."))
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        if self.group is None:
            return  # not signed in: the socket is closing
        client_id = content.get("client_id")
        client_id = client_id if isinstance(client_id, str) and len(client_id) <= 100 else None
        handler = HANDLERS.get(content.get("type"))  # type: ignore[arg-type]
        try:
            if handler is None:
                raise InvalidInput(_("Unknown frame type %(type)s.") % {"type": repr(str(content.get("type"))[:40])})
            await handler(self, content)
        except LimitReached as exc:
            # The page says when the user can send again, and offers a plan with more.
            await self.send_error(
                exc.code, exc.message, client_id=client_id, retry_after_s=exc.retry_after_s, limit=exc.kind
            )
        except ConversationError as exc:
            await self.send_error(exc.code, exc.message, client_id=client_id)
        except UNAVAILABLE_ERRORS as exc:
            logger.warning("A %s frame found a dependency away: %s", str(content.get("type"))[:40], exc)
            await self.send_error("service_unavailable", _(UNAVAILABLE), client_id=client_id)

    def _take_allowance(self) -> bool:
        """A token bucket of frames: FLOOD_BURST at once, FLOOD_RATE a second after that."""
        now = asyncio.get_running_loop().time()
        self.allowance = min(float(FLOOD_BURST), self.allowance + (now - self.allowance_at) * FLOOD_RATE)
        self.allowance_at = now
        if self.allowance < 1:
            return False
        self.allowance -= 1
        return True

    # Commands --------------------------------------------------------------------------------------

    async def message_send(self, content: dict[str, Any]) -> None:
        params = content.get("params")
        if params is not None and not isinstance(params, dict):
            raise InvalidInput(_("params must be an object."))
        conversation_id = _uuid(content, "conversation", required=False)
        parent_id = _uuid(content, "parent", required=False)
        try:
            await self.start_turn(
                services.message_send,
                content,
                user=self.user,
                conversation_id=conversation_id,
                parent_id=parent_id,
                content=_text(content, "content"),
                model=_text(content, "model", required=False),
                system_prompt=_text(content, "system_prompt", required=False, allow_empty=True),
                params=params,
                expect_leaf=parent_id is not None,  # the page sends the end of the branch it shows
                project_id=_uuid(content, "project", required=False),
                document_ids=content.get("documents"),
            )
        except Stale as exc:
            # Another tab added a turn this one missed: say so, then show the branch as it is now.
            client_id = content.get("client_id")
            await self.send_error(exc.code, exc.message, client_id=client_id if isinstance(client_id, str) else None)
            conversation = await db(selectors.conversation_get)(user=self.user, conversation_id=conversation_id)
            await self.send_branch(conversation)

    async def message_regenerate(self, content: dict[str, Any]) -> None:
        await self.start_turn(
            services.message_regenerate, content, user=self.user, message_id=_uuid(content, "message")
        )

    async def message_continue(self, content: dict[str, Any]) -> None:
        await self.start_turn(services.message_continue, content, user=self.user, message_id=_uuid(content, "message"))

    async def message_edit(self, content: dict[str, Any]) -> None:
        await self.start_turn(
            services.message_edit,
            content,
            user=self.user,
            message_id=_uuid(content, "message"),
            content=_text(content, "content"),
        )

    async def message_feedback(self, content: dict[str, Any]) -> None:
        rating = content.get("rating")
        if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int)):
            raise InvalidInput(_("rating must be 1, -1 or null."))
        message = await db(services.message_feedback)(
            user=self.user, message_id=_uuid(content, "message"), rating=rating
        )
        data = presenters.message_to_dict(message)
        await self.channel_layer.group_send(self.group, {"type": "message.updated", "message": data})

    async def generation_watch(self, content: dict[str, Any]) -> None:
        generation_id = _uuid(content, "id")
        after = content.get("after", 0)
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise InvalidInput(_("after must be the last seq you have (0 or more)."))
        # The ownership check, before any XREAD.
        await db(selectors.generation_get)(user=self.user, generation_id=generation_id)
        self.watch(str(generation_id), after)

    async def generation_cancel(self, content: dict[str, Any]) -> None:
        await db(services.generation_cancel)(user=self.user, message_id=_uuid(content, "id"))

    async def conversation_rename(self, content: dict[str, Any]) -> None:
        conversation = await db(services.conversation_rename)(
            user=self.user, conversation_id=_uuid(content, "conversation"), title=_text(content, "title")
        )
        await self.broadcast_updated(conversation)

    async def conversation_pin(self, content: dict[str, Any]) -> None:
        conversation = await db(services.conversation_set_pinned)(
            user=self.user, conversation_id=_uuid(content, "conversation"), pinned=_bool(content, "pinned")
        )
        await self.broadcast_updated(conversation)

    async def conversation_archive(self, content: dict[str, Any]) -> None:
        conversation = await db(services.conversation_set_archived)(
            user=self.user, conversation_id=_uuid(content, "conversation"), archived=_bool(content, "archived")
        )
        await self.broadcast_updated(conversation)

    async def conversation_set_system_prompt(self, content: dict[str, Any]) -> None:
        conversation = await db(services.conversation_set_system_prompt)(
            user=self.user,
            conversation_id=_uuid(content, "conversation"),
            system_prompt=_text(content, "system_prompt", allow_empty=True),
        )
        await self.broadcast_updated(conversation)

    async def conversation_set_params(self, content: dict[str, Any]) -> None:
        conversation = await db(services.conversation_set_params)(
            user=self.user, conversation_id=_uuid(content, "conversation"), params=content.get("params")
        )
        await self.broadcast_updated(conversation)

    async def conversation_set_project(self, content: dict[str, Any]) -> None:
        conversation = await db(services.conversation_set_project)(
            user=self.user,
            conversation_id=_uuid(content, "conversation"),
            project_id=_uuid(content, "project", required=False),
        )
        await self.broadcast_updated(conversation)

    async def conversation_delete(self, content: dict[str, Any]) -> None:
        conversation_id = _uuid(content, "conversation")
        await db(services.conversation_delete)(user=self.user, conversation_id=conversation_id)
        await self.channel_layer.group_send(
            self.group, {"type": "conversation.deleted", "conversation": str(conversation_id)}
        )

    async def conversation_switch_branch(self, content: dict[str, Any]) -> None:
        conversation = await db(services.conversation_switch_branch)(
            user=self.user, message_id=_uuid(content, "message")
        )
        await self.send_branch(conversation)

    async def conversation_open(self, content: dict[str, Any]) -> None:
        conversation = await db(selectors.conversation_get)(
            user=self.user, conversation_id=_uuid(content, "conversation")
        )
        await self.send_branch(conversation)

    async def conversation_share(self, content: dict[str, Any]) -> None:
        link = await db(sharing.share_create)(user=self.user, conversation_id=_uuid(content, "conversation"))
        await self.send_json(
            {"type": "conversation.shared", "conversation": str(link.conversation_id), "url": f"/s/{link.token}/"}
        )

    async def generation_state(self, content: dict[str, Any]) -> None:
        """Where a reply that shows nothing yet stands: queued (no worker has taken it), loading_model (a worker
        is loading its model), running (its prompt is being read), or finished."""
        message = await db(selectors.message_get)(user=self.user, message_id=_uuid(content, "id"))
        state = message.status
        if state == "queued" and await streams.amodel_loading(message.model):
            state = "loading_model"
        await self.send_json({"type": "generation.state", "id": str(message.pk), "state": state})

    async def ping(self, content: dict[str, Any]) -> None:
        """The page's heartbeat: a connection that stops answering is one to replace."""
        await self.send_json({"type": "pong"})

    async def conversation_search(self, content: dict[str, Any]) -> None:
        query = _text(content, "query", required=False, allow_empty=True) or None
        archived = _bool(content, "archived") if "archived" in content else False
        after = _text(content, "after", required=False) or None
        conversations, next_cursor = await db(_search)(user=self.user, query=query, archived=archived, after=after)
        await self.send_json(
            {
                "type": "conversation.list",
                "query": query or "",
                "archived": archived,
                "after": after,
                "next": next_cursor,
                "conversations": conversations,
            }
        )

    # Events out ------------------------------------------------------------------------------------

    async def send_error(self, code: str, message: str, *, client_id: str | None = None, **extra: Any) -> None:
        frame: dict[str, Any] = {"type": "error", "code": code, "message": message, **extra}
        if client_id is not None:
            frame["client_id"] = client_id
        await self.send_json(frame)

    async def start_turn(self, service: Callable[..., services.Turn], command: dict[str, Any], **kwargs: Any) -> None:
        """Make a new turn with ``service`` and answer it: the turn, then the branch it made current, then the
        reply as it streams. The service and both frames' reads share one trip to a worker thread: the reply
        is queued by then, and every trip on the event loop is CPU the engine's first token waits for.

        A ``command`` with a ``client_id`` makes its turn once: the page sends it again, as it was, on a new
        connection when the first one died before the answer came (the command may or may not have reached the
        server), and gets the turn the first one made, if it did (SENT_TTL_S)."""
        client_id = command.get("client_id")
        client_id = client_id if isinstance(client_id, str) and client_id else None
        key = sent_key(self.user.pk, command) if client_id else None
        claimed = key is None or await get_async_redis().set(key, SENT_PENDING, nx=True, ex=SENT_TTL_S)
        if not claimed and await self._answer_again(key, client_id):
            return
        try:
            turn, frame, branch = await db(_turn_frames)(service, kwargs)
        except Exception:  # (not a cancellation: the turn may have been committed meanwhile)
            if key is not None:
                with contextlib.suppress(*UNAVAILABLE_ERRORS):
                    await get_async_redis().delete(key)  # not made: the same command may be tried again
            raise
        try:
            frame["client_id"] = client_id
            await self.send_json(frame)  # first: the turn's first frame waits for nothing more
            await self.send_json(branch)
            self.watch(str(turn.assistant_message.id), 0, fresh=True)
        finally:
            if key is not None:
                # Recorded even when the client is gone before the frames (send raises): its resend finds the turn.
                with contextlib.suppress(*UNAVAILABLE_ERRORS):
                    await get_async_redis().set(key, str(turn.assistant_message.id), ex=SENT_TTL_S)
        # The user's other tabs move the conversation to the top of their list (this one knows already), and a tab
        # showing it asks for its branch (conversation.open), so the new turn appears there too, streaming.
        await self.channel_layer.group_send(
            self.group,
            {
                "type": "conversation.updated",
                "conversation": frame["conversation"],
                "new_turn": True,
                "except": self.channel_name,
            },
        )

    async def _answer_again(self, key: str, client_id: str | None) -> bool:
        """The command ``key`` names was taken before (on a connection since lost, or still being made): answer
        with the turn it made. False when it made none (it failed, or its record is gone): make it now."""
        for _attempt in range(SENT_WAIT_TRIES):
            value = await get_async_redis().get(key)
            if value is None:
                if await get_async_redis().set(key, SENT_PENDING, nx=True, ex=SENT_TTL_S):
                    return False  # ours now
                continue
            value = value.decode() if isinstance(value, bytes) else value
            if value != SENT_PENDING:
                try:
                    frame, branch = await db(_existing_turn_frames)(user=self.user, reply_id=value)
                except NotFound:  # deleted since (or a database restored from before it): make it again
                    await get_async_redis().set(key, SENT_PENDING, ex=SENT_TTL_S)
                    return False
                frame["client_id"] = client_id
                await self.send_json(frame)
                await self.send_json(branch)
                self.watch(frame["assistant_message"]["id"], 0)
                return True
            await asyncio.sleep(SENT_WAIT_S)
        raise ConversationError(_("This message is still being sent. Try again in a moment."), code="busy")

    async def send_branch(self, conversation: Conversation) -> None:
        frame = await db(_branch_frame)(user=self.user, conversation=conversation)
        await self.send_json(frame)

    async def broadcast_updated(self, conversation: Conversation) -> None:
        """Tell all of this user's tabs (this one included) how the conversation looks now."""
        data = presenters.conversation_to_dict(conversation)  # plain fields: no query
        await self.channel_layer.group_send(self.group, {"type": "conversation.updated", "conversation": data})

    # Channel-layer events from the group (this user's tabs and the title task).

    async def session_check(self, event: dict[str, Any]) -> None:
        """The user logged out, changed the password, or was deactivated or deleted (conversations.sessions):
        close if this connection's session no longer signs them in."""
        if self.session_key is not None and self.session_key == event.get("keep"):
            return
        ended = self.session_key is not None and self.session_key == event.get("ended")
        if ended or not await db(session_signs_in)(self.session_key, self.user.pk):
            await self.close(code=CLOSE_UNAUTHENTICATED)

    async def conversation_updated(self, event: dict[str, Any]) -> None:
        if event.get("except") == self.channel_name:
            return
        frame = {"type": "conversation.updated", "conversation": event["conversation"]}
        if event.get("new_turn"):
            frame["new_turn"] = True
        await self.send_json(frame)

    async def message_updated(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "message.updated", "message": event["message"]})

    async def conversation_deleted(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "conversation.deleted", "conversation": event["conversation"]})

    # Watching a generation -------------------------------------------------------------------------

    def watch(self, generation_id: str, after: int, *, fresh: bool = False) -> None:
        """Forward the generation's events after seq ``after`` (a new watch of the same id replaces the old).
        ``fresh``: a reply this connection has just queued, which cannot have finished yet."""
        old = self.watches.pop(generation_id, None)
        if old is not None:
            old.cancel()
        if len(self.watches) >= MAX_WATCHES:
            oldest = next(iter(self.watches))
            self.watches.pop(oldest).cancel()
        task = asyncio.create_task(self._forward(generation_id, after, fresh), name=f"watch {generation_id}")
        self.watches[generation_id] = task
        task.add_done_callback(lambda done: self._watch_done(generation_id, done))

    def _watch_done(self, generation_id: str, task: asyncio.Task[None]) -> None:
        if self.watches.get(generation_id) is task:
            del self.watches[generation_id]
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "Watching a generation failed", exc_info=task.exception(), extra={"generation_id": generation_id}
            )

    async def _forward(self, generation_id: str, after: int, fresh: bool) -> None:
        last = after
        try:
            async for batch in follow(
                {generation_id: after}, settle=reply_settle(self.user), quiet_s=WATCH_QUIET_S, fresh=fresh
            ):
                if not batch:
                    # Quiet (queued, a model loading, a long prefill): the page knows the watch is alive.
                    await self.send_json({"type": "generation.waiting", "id": generation_id, "seq": last})
                    continue
                for event in batch:
                    await self.send_json(await self._event_frame(generation_id, event))
                    last = event["seq"]
        except FollowInterrupted:
            # Redis is unreachable: the page watches again from what it has, after a pause.
            await self._interrupted(generation_id, last)
        except OSError:
            return  # the client went away while a frame was on its way (uvicorn's ClientDisconnected)
        except Exception:  # whatever broke, the page must not be left following a reply nobody forwards
            logger.exception("Watching a generation failed", extra={"generation_id": generation_id})
            await self._interrupted(generation_id, last)

    async def _interrupted(self, generation_id: str, last: int) -> None:
        """Tell the page the watch stopped: it watches again from what it has, after a pause."""
        with contextlib.suppress(OSError):
            await self.send_json(
                {"type": "generation.interrupted", "id": generation_id, "seq": last, "message": _(INTERRUPTED)}
            )

    async def _event_frame(self, generation_id: str, event: dict[str, Any]) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": EVENT_TYPES[event["type"]], "id": generation_id, "seq": event["seq"]}
        if event["type"] == "delta":
            frame["text"] = event["text"]
        elif event["type"] == "done":
            frame["finish_reason"] = event.get("finish_reason")
            frame["usage"] = event.get("usage")
            try:
                frame["message"] = await db(_message_dict)(user=self.user, message_id=generation_id)
            except NotFound:
                frame["message"] = None  # deleted meanwhile: the event still ends the reply
            except UNAVAILABLE_ERRORS as exc:
                # PostgreSQL away: the reply still ends on the page, with the text it streamed.
                logger.warning("The saved reply %s could not be read: %s", generation_id, exc)
                frame["message"] = None
        else:
            # A reason Djinn wrote (in English, marked for translation) is said in the connection's language.
            frame["message"] = _(event.get("message") or FAILED)
            frame["code"] = event.get("code") or "generation_failed"
        return frame


HANDLERS: dict[str, Handler] = {
    "message.send": ChatConsumer.message_send,
    "message.regenerate": ChatConsumer.message_regenerate,
    "message.edit": ChatConsumer.message_edit,
    "message.continue": ChatConsumer.message_continue,
    "message.feedback": ChatConsumer.message_feedback,
    "generation.watch": ChatConsumer.generation_watch,
    "generation.cancel": ChatConsumer.generation_cancel,
    "generation.state": ChatConsumer.generation_state,
    "conversation.rename": ChatConsumer.conversation_rename,
    "conversation.pin": ChatConsumer.conversation_pin,
    "conversation.archive": ChatConsumer.conversation_archive,
    "conversation.set_system_prompt": ChatConsumer.conversation_set_system_prompt,
    "conversation.set_params": ChatConsumer.conversation_set_params,
    "conversation.set_project": ChatConsumer.conversation_set_project,
    "conversation.delete": ChatConsumer.conversation_delete,
    "conversation.switch_branch": ChatConsumer.conversation_switch_branch,
    "conversation.open": ChatConsumer.conversation_open,
    "conversation.search": ChatConsumer.conversation_search,
    "conversation.share": ChatConsumer.conversation_share,
    "ping": ChatConsumer.ping,
}


# Synchronous helpers, run in a worker thread -----------------------------------------------------


def _turn_frames(
    service: Callable[..., services.Turn], kwargs: dict[str, Any]
) -> tuple[services.Turn, dict[str, Any], dict[str, Any]]:
    """The turn ``service(**kwargs)`` makes, its ``turn.created`` frame and the ``conversation.branch`` frame."""
    turn = service(**kwargs)
    return turn, _created_frame(turn), _branch_frame(user=kwargs["user"], conversation=turn.conversation)


def _existing_turn_frames(*, user: Any, reply_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """turn.created and conversation.branch for a turn made before (the reply ``reply_id`` and its question)."""
    reply = selectors.message_get(user=user, message_id=UUID(reply_id))  # its conversation comes with it
    question = selectors.message_get(user=user, message_id=reply.parent_id)
    turn = services.Turn(reply.conversation, question, reply)
    return _created_frame(turn), _branch_frame(user=user, conversation=reply.conversation)


def _created_frame(turn: services.Turn) -> dict[str, Any]:
    return {
        "type": "turn.created",
        "conversation": presenters.conversation_to_dict(turn.conversation),
        "user_message": presenters.message_to_dict(turn.user_message),
        "assistant_message": presenters.message_to_dict(turn.assistant_message),
    }


def _branch_frame(*, user: Any, conversation: Conversation) -> dict[str, Any]:
    branch = selectors.conversation_branch(user=user, conversation=conversation)
    return {
        "type": "conversation.branch",
        "conversation": presenters.conversation_to_dict(conversation),
        "messages": presenters.branch_to_list(branch),
    }


def _message_dict(*, user: Any, message_id: str) -> dict[str, Any]:
    return presenters.message_to_dict(selectors.message_get(user=user, message_id=UUID(message_id)))


def _search(
    *, user: Any, query: str | None, archived: bool, after: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    conversations, next_cursor = selectors.conversation_page(
        user=user, archived=archived, query=query, after=after, limit=PAGE_SIZE
    )
    return [presenters.conversation_to_dict(conversation) for conversation in conversations], next_cursor


# Frame fields ------------------------------------------------------------------------------------


def _uuid(content: dict[str, Any], key: str, *, required: bool = True) -> Any:
    value = content.get(key)
    if value is None and not required:
        return None
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            pass
    raise InvalidInput(_("%(key)s must be an id.") % {"key": key})


def _text(content: dict[str, Any], key: str, *, required: bool = True, allow_empty: bool = False) -> str | None:
    value = content.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise InvalidInput(_("%(key)s must be text.") % {"key": key})
    if not allow_empty and not value.strip():
        raise InvalidInput(
            _("Write a message first.") if key == "content" else _("%(key)s must not be empty.") % {"key": key}
        )
    return value


def _bool(content: dict[str, Any], key: str) -> bool:
    value = content.get(key)
    if not isinstance(value, bool):
        raise InvalidInput(_("%(key)s must be true or false.") % {"key": key})
    return value
