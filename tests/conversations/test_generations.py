"""The reply, title and sweeper tasks, run in this process against the tiny model (no worker needed).

Transactional: the pump's keeper saves partial replies from its own thread, on its own connection, which must
see the rows the test wrote."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY

from config.celery import app
from conversations import generations, prompts, services, titles
from conversations.models import Conversation, Message
from conversations.tasks import generate_reply, generate_title, sweep_stale_generations
from inference import pump, runtime, streams
from inference.engine.paths import resolve_model_path
from inference.models import LLMModel
from inference.redis import get_redis
from tests.conversations.factories import ConversationFactory, LLMModelFactory, add_exchange, queued_turn
from tests.factories import UserFactory

pytestmark = [pytest.mark.usefixtures("llm_model"), pytest.mark.django_db(transaction=True)]
GREEDY = {"temperature": 0, "max_tokens": 20}


@pytest.fixture
def user():
    return UserFactory()


def queued_reply(user, *, content="Hello there", params=GREEDY) -> Message:
    return queued_turn(user, content=content, params=params)


def events(message):
    return streams.read_events(message.pk, after=0)


def finished_count(status):
    value = REGISTRY.get_sample_value(
        "djinn_generations_finished_total", {"model": "smollm2-135m-instruct", "status": status}
    )
    return value or 0


def test_a_reply_streams_its_text_and_saves_it_with_usage_and_timings(user):
    reply = queued_reply(user)
    completed_before = finished_count("completed")

    generations.reply_generate(reply.pk)

    reply.refresh_from_db()
    stream = events(reply)
    deltas, done = stream[:-1], stream[-1]
    assert reply.status == Message.Status.COMPLETED
    assert reply.finish_reason == "length"
    assert reply.completion_tokens == 20
    assert reply.prompt_tokens > 0
    assert reply.ttft_ms is not None and reply.duration_ms is not None
    assert [e["seq"] for e in stream] == list(range(1, len(stream) + 1))
    assert {e["type"] for e in deltas} == {"delta"}
    assert "".join(e["text"] for e in deltas) == reply.content != ""
    assert reply.content_seq == len(deltas)
    assert done["type"] == "done"
    assert done["finish_reason"] == "length"
    assert done["usage"] == {"prompt_tokens": reply.prompt_tokens, "completion_tokens": 20, "cached_tokens": 0}
    assert finished_count("completed") == completed_before + 1


def test_the_task_entry_point_takes_a_string_id(user):
    reply = queued_reply(user)
    Conversation.objects.filter(pk=reply.conversation_id).update(title_is_provisional=False)

    generate_reply(str(reply.pk))

    reply.refresh_from_db()
    assert reply.status == Message.Status.COMPLETED


def test_redelivery_of_a_finished_reply_is_a_no_op(user):
    reply = queued_reply(user)
    generations.reply_generate(reply.pk)
    saved = Message.objects.values().get(pk=reply.pk)
    streamed = events(reply)

    generations.reply_generate(reply.pk)

    assert Message.objects.values().get(pk=reply.pk) == saved
    assert events(reply) == streamed


def test_a_reply_another_worker_is_writing_is_left_alone(user):
    conversation = ConversationFactory(owner=user)
    _, reply = add_exchange(conversation, status=Message.Status.RUNNING)
    Message.objects.filter(pk=reply.pk).update(heartbeat_at=timezone.now())

    generations.reply_generate(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.RUNNING
    assert events(reply) == []


def test_an_orphaned_reply_is_marked_failed_after_what_its_dead_worker_streamed_and_keeps_it_all(user):
    conversation = ConversationFactory(owner=user)
    _, reply = add_exchange(conversation, status=Message.Status.RUNNING)
    stale = timezone.now() - timedelta(minutes=5)
    Message.objects.filter(pk=reply.pk).update(content="Part", content_seq=1, heartbeat_at=stale)
    writer = streams.StreamWriter(reply.pk)
    writer.delta("Part")
    writer.delta("ial")  # streamed after the dead worker's last save

    generations.reply_generate(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.FAILED
    assert reply.error == generations.ORPHANED
    assert (reply.content, reply.content_seq) == ("Partial", 2)
    assert [(e["seq"], e["type"]) for e in events(reply)] == [(1, "delta"), (2, "delta"), (3, "error")]
    assert events(reply)[-1]["message"] == generations.ORPHANED


def test_cancel_mid_reply_keeps_the_partial_text(user):
    reply = queued_reply(user, params={"temperature": 0, "max_tokens": 400})

    def cancel_after_first_delta():
        streams.read_events(reply.pk, after=0, block_ms=30_000)
        streams.request_cancel(reply.pk)

    canceller = threading.Thread(target=cancel_after_first_delta)
    canceller.start()
    generations.reply_generate(reply.pk)
    canceller.join()

    reply.refresh_from_db()
    stream = events(reply)
    assert reply.status == Message.Status.CANCELLED
    assert reply.finish_reason == "cancelled"
    assert 0 < reply.completion_tokens < 400
    assert reply.content == "".join(e["text"] for e in stream if e["type"] == "delta")
    assert (stream[-1]["type"], stream[-1]["finish_reason"]) == ("done", "cancelled")


def test_a_reply_cancelled_before_its_worker_starts_ends_empty(user):
    reply = queued_reply(user)
    streams.request_cancel(reply.pk)

    generations.reply_generate(reply.pk)

    reply.refresh_from_db()
    assert (reply.status, reply.content) == (Message.Status.CANCELLED, "")
    assert [e["type"] for e in events(reply)] == ["done"]


def test_a_reply_that_no_longer_fits_the_context_fails_with_a_clear_error(user, llm_model):
    reply = queued_reply(user, content="word " * 40)
    LLMModel.objects.filter(pk=llm_model.pk).update(context_length=32)

    generations.reply_generate(reply.pk)

    reply.refresh_from_db()
    (event,) = events(reply)
    assert reply.status == Message.Status.FAILED
    assert "too long" in reply.error
    assert (event["type"], event["code"]) == ("error", "context_length_exceeded")


def test_a_reply_whose_model_was_disabled_fails(user, llm_model):
    reply = queued_reply(user)
    LLMModel.objects.filter(pk=llm_model.pk).update(enabled=False)

    generations.reply_generate(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.FAILED
    assert events(reply)[-1]["code"] == "model_not_found"


def test_max_tokens_is_capped_by_the_room_left_in_the_context(user):
    reply = queued_reply(user, params={"temperature": 0, "max_tokens": 100_000})

    generations.reply_generate(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.COMPLETED
    assert reply.prompt_tokens + reply.completion_tokens == 512


def test_the_first_completed_reply_asks_for_a_title_and_later_ones_do_not(user):
    reply = queued_reply(user)
    first = generations.reply_generate(reply.pk)
    Conversation.objects.filter(pk=reply.conversation_id).update(title_is_provisional=False)
    _question, second = add_exchange(reply.conversation, parent=reply, question="More", status=Message.Status.QUEUED)

    later = generations.reply_generate(second.pk)

    assert first == reply.conversation_id
    assert later is None


# The prompt ---------------------------------------------------------------------------------------------


def test_the_prompt_starts_with_the_system_prompt_and_the_custom_instructions():
    owner = UserFactory(custom_instructions="I am a chef.")
    conversation = ConversationFactory(owner=owner, system_prompt="Answer in French.")
    question, reply = add_exchange(conversation, question="Hi", answer="Bonjour")

    chat = prompts.chat_messages(owner=owner, conversation=conversation, path=[question, reply])

    assert chat == [
        {"role": "system", "content": "Answer in French.\n\nI am a chef."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bonjour"},
    ]


def test_the_prompt_has_no_system_message_when_there_is_nothing_to_say():
    owner = UserFactory(custom_instructions="  ")
    conversation = ConversationFactory(owner=owner)
    question, _ = add_exchange(conversation, question="Hi")

    assert prompts.chat_messages(owner=owner, conversation=conversation, path=[question]) == [
        {"role": "user", "content": "Hi"}
    ]


# The stale sweeper and the heartbeat watcher -----------------------------------------------------------------


def test_the_sweeper_fails_silent_and_never_started_replies_only(user, settings):
    conversation = ConversationFactory(owner=user)
    now = timezone.now()
    _, stale = add_exchange(conversation, status=Message.Status.RUNNING)
    _, alive = add_exchange(conversation, status=Message.Status.RUNNING)
    _, forgotten = add_exchange(conversation, status=Message.Status.QUEUED)
    _, waiting = add_exchange(conversation, status=Message.Status.QUEUED)
    _, done = add_exchange(conversation)
    Message.objects.filter(pk=stale.pk).update(heartbeat_at=now - timedelta(seconds=61))
    Message.objects.filter(pk=alive.pk).update(heartbeat_at=now - timedelta(seconds=5))
    Message.objects.filter(pk=forgotten.pk).update(created_at=now - timedelta(minutes=16))

    failed = sweep_stale_generations()

    statuses = dict(Message.objects.filter(role="assistant").values_list("pk", "status"))
    assert failed == 2
    assert statuses == {
        stale.pk: "failed",
        alive.pk: "running",
        forgotten.pk: "failed",
        waiting.pk: "queued",
        done.pk: "completed",
    }
    assert Message.objects.get(pk=stale.pk).error == generations.ORPHANED
    assert Message.objects.get(pk=forgotten.pk).error == generations.NEVER_STARTED
    assert events(stale)[-1]["type"] == "error"
    assert sweep_stale_generations() == 0  # nothing twice


def test_a_reply_waiting_for_its_model_is_kept_alive_by_the_pump(user, monkeypatch):
    monkeypatch.setattr(pump, "TICK_S", 0.05)
    conversation = ConversationFactory(owner=user)
    _, reply = add_exchange(conversation, status=Message.Status.RUNNING)
    Message.objects.filter(pk=reply.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=1))

    tracked = pump.get_pump().track(str(reply.pk), save=generations.save_reply_partials)
    try:
        deadline = timezone.now() + timedelta(seconds=10)
        while Message.objects.get(pk=reply.pk).heartbeat_at < timezone.now() - timedelta(seconds=5):
            assert timezone.now() < deadline, "no heartbeat"
    finally:
        pump.get_pump().untrack(tracked)

    assert streams.worker_alive(reply.pk)
    assert sweep_stale_generations() == 0


def test_the_delivery_count_gives_up_a_reply_whose_task_keeps_stopping_its_worker(user, settings):
    settings.DJINN_TASK_MAX_DELIVERIES = 2
    reply = queued_reply(user)
    task_id = str(uuid.uuid4())
    get_redis().set(
        f"djinn:task:{task_id}:deliveries", 2
    )  # delivered twice, each time its worker died before the claim

    generations.reply_generate(reply.pk, task_id=task_id)

    reply.refresh_from_db()
    assert reply.status == Message.Status.FAILED
    assert reply.error == generations.GAVE_UP.format(n=2)
    assert events(reply)[-1]["code"] == "gave_up"


# Titles -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "title"),
    [
        ('"Paris in Winter."', "Paris in Winter"),
        ("Title: **Learning Rust!**\nMore text", "Learning Rust"),
        ("\n\n  'Soup'  ", "Soup"),
        ("# Trip planning…", "Trip planning"),
        ("", ""),
        ("word " * 40, ("word " * 16).strip()),
        ("Plan\x00ning\x07 a trip", "Planning a trip"),  # control characters out (PostgreSQL refuses NUL)
    ],
)
def test_clean_title(raw, title):
    assert titles.clean_title(raw) == title


def receive_in(group):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group, channel)

    async def receive():
        return await asyncio.wait_for(layer.receive(channel), timeout=10)

    return lambda: async_to_sync(receive)()


def test_the_title_task_writes_a_title_and_tells_the_owners_pages(user):
    reply = queued_reply(user)
    generations.reply_generate(reply.pk)
    receive = receive_in(f"user.{user.pk}")

    titles.title_generate(reply.conversation_id)

    conversation = Conversation.objects.get(pk=reply.conversation_id)
    event = receive()
    assert not conversation.title_is_provisional
    assert 0 < len(conversation.title) <= titles.TITLE_MAX_CHARS
    assert event["type"] == "conversation.updated"
    assert event["conversation"]["id"] == str(conversation.pk)
    assert event["conversation"]["title"] == conversation.title


def test_the_title_task_keeps_the_provisional_title_when_the_model_fails(user, llm_model):
    reply = queued_reply(user, content="Plan a trip")
    generations.reply_generate(reply.pk)
    LLMModel.objects.filter(pk=llm_model.pk).update(enabled=False)

    titles.title_generate(reply.conversation_id)

    conversation = Conversation.objects.get(pk=reply.conversation_id)
    assert (conversation.title, conversation.title_is_provisional) == ("Plan a trip", False)


@pytest.mark.parametrize(
    ("title", "acceptable"),
    [
        ("Planning a trip to Lisbon", True),
        ("python", False),  # one word
        ("Weekend plans with friends", False),  # nothing of the conversation in it
        ("Lisbon trip for idiots", False),  # rude, and the user did not say it
        ("Lisbon neighbourhoods", False),  # the title of another recent chat
        ("A stupid question about Lisbon", True),  # the user said "stupid" first
        ("Lisbon " * 13, False),  # too long
    ],
)
def test_a_model_title_is_kept_only_when_it_is_about_the_chat_new_and_polite(title, acceptable):
    question = "Is this a stupid question? How do I plan a trip to Lisbon?"
    answer = "Start with the neighbourhoods of Lisbon."

    assert (
        titles.title_acceptable(title, question=question, answer=answer, recent=["Lisbon Neighbourhoods"]) is acceptable
    )


def test_the_title_task_leaves_a_title_the_user_chose(user):
    reply = queued_reply(user)
    generations.reply_generate(reply.pk)
    services.conversation_rename(user=user, conversation_id=reply.conversation_id, title="Mine")

    titles.title_generate(reply.conversation_id)

    assert Conversation.objects.get(pk=reply.conversation_id).title == "Mine"


@pytest.mark.parametrize(
    ("task", "queue"),
    [(generate_reply, "inference"), (generate_title, "inference"), (sweep_stale_generations, "default")],
)
def test_tasks_are_routed_to_their_queues(task, queue):
    route = app.amqp.router.route(task._get_exec_options(), task.name)

    assert route["queue"].name == queue


def test_partial_text_is_saved_while_the_reply_streams_never_ahead_of_its_stream(user, monkeypatch):
    monkeypatch.setattr(pump, "TICK_S", 0.02)
    reply = queued_reply(user, params={"temperature": 0, "max_tokens": 400})
    saved = []
    done = threading.Event()

    def look() -> None:
        while not done.is_set():
            row = Message.objects.values_list("status", "content", "content_seq").get(pk=reply.pk)
            if row[0] == Message.Status.RUNNING and row[2] and row not in saved:
                saved.append(row)
        connection.close()

    looker = threading.Thread(target=look)
    looker.start()
    try:
        generations.reply_generate(reply.pk)
    finally:
        done.set()
        looker.join()

    reply.refresh_from_db()
    stream = events(reply)
    assert len({seq for _status, _content, seq in saved}) >= 2  # saved again and again while it streamed
    for _status, content, seq in saved:
        assert content == "".join(e["text"] for e in stream[:seq])
    assert reply.content.startswith(saved[-1][1])


def test_a_queued_reply_whose_task_never_reached_the_broker_is_listed_to_be_sent_again(user):
    old = timezone.now() - timedelta(seconds=generations.REQUEUE_AFTER_S + 5)
    lost, sent, _fresh = queued_reply(user), queued_reply(user), queued_reply(user)  # fresh: too young
    Message.objects.filter(pk__in=[lost.pk, sent.pk]).update(created_at=old)
    get_redis().set(generations.enqueued_key(sent.pk), "1", ex=60)  # its task is in the queue

    assert generations.replies_to_requeue() == [lost.pk]


def test_a_reply_cut_at_its_length_limit_is_continued_where_it_stopped(user, monkeypatch):
    monkeypatch.setattr(services, "reply_enqueue", lambda message_id: True)
    first = queued_reply(user, content="Tell me a story", params={"temperature": 0, "max_tokens": 10})
    generations.reply_generate(first.pk)
    first.refresh_from_db()
    assert first.finish_reason == "length"

    turn = services.message_continue(user=user, message_id=first.pk)
    continuation = turn.assistant_message
    assert continuation.parent_id == first.pk and continuation.params == first.params
    generations.reply_generate(continuation.pk)

    continuation.refresh_from_db()
    conversation = Conversation.objects.get(pk=first.conversation_id)
    assert conversation.current_leaf_id == continuation.pk
    assert continuation.status == Message.Status.COMPLETED and continuation.content
    # The model read the first part back as the start of its own reply, left open: no new turn after it.
    chat = prompts.chat_messages(owner=user, conversation=conversation, path=[first.parent])
    tokenizer = runtime.get_tokenizer(LLMModel.objects.get(name=first.model))
    open_reply = tokenizer.apply_chat_template(chat, add_generation_prompt=True) + first.content
    assert continuation.prompt_tokens == len(tokenizer.encode(open_reply))
    # And the two parts are one reply to it from now on.
    chat = prompts.chat_messages(owner=user, conversation=conversation, path=[first.parent, first, continuation])
    assert chat[-1] == {"role": "assistant", "content": first.content + continuation.content}


@pytest.mark.slow
def test_with_the_default_model_a_continued_reply_reads_as_one_reply_written_at_once(user, monkeypatch):
    # Greedy decoding: SmolLM2's reply of 12 tokens, continued, goes on as its reply of 24 tokens does (the same
    # next words: the model wrote on instead of starting a new reply). Not necessarily to the end: a prefill and a
    # decode step round differently, which may tip a near tie a few tokens later.
    monkeypatch.setattr(services, "reply_enqueue", lambda message_id: True)
    smollm2 = LLMModelFactory(name="smollm2-gguf", source=str(resolve_model_path(None)), is_default=False)
    replies = {}
    for max_tokens in (24, 12):
        reply = queued_reply(user, content="Describe the sea.", params={"temperature": 0, "max_tokens": max_tokens})
        Message.objects.filter(pk=reply.pk).update(model=smollm2.name)
        Conversation.objects.filter(pk=reply.conversation_id).update(model=smollm2.name)
        generations.reply_generate(reply.pk)
        replies[max_tokens] = Message.objects.get(pk=reply.pk)
    assert replies[12].finish_reason == "length"

    continuation = services.message_continue(user=user, message_id=replies[12].pk).assistant_message
    generations.reply_generate(continuation.pk)

    continuation.refresh_from_db()
    first, whole = replies[12].content, replies[24].content
    assert whole.startswith(first)
    written = first + continuation.content
    same = next((i for i, (a, b) in enumerate(zip(written, whole, strict=False)) if a != b), len(whole))
    assert same >= len(first) + 3, (first, continuation.content, whole)
    assert continuation.prompt_tokens == replies[12].prompt_tokens + 12  # the text read back as it was written


def test_only_a_finished_reply_cut_at_its_limit_can_be_continued(user, monkeypatch):
    monkeypatch.setattr(services, "reply_enqueue", lambda message_id: True)
    conversation = ConversationFactory(owner=user)
    question, complete = add_exchange(conversation, question="Hi", answer="Hello!")
    Message.objects.filter(pk=complete.pk).update(finish_reason="stop")
    _q, queued = add_exchange(conversation, parent=complete, question="More", status=Message.Status.QUEUED)
    stranger = UserFactory()

    for message, error in [
        (question, "Only a finished reply"),
        (complete, "only a reply cut at its length limit"),
        (queued, "Only a finished reply"),
    ]:
        with pytest.raises(services.InvalidInput, match=error):
            services.message_continue(user=user, message_id=message.pk)
    Message.objects.filter(pk=complete.pk).update(finish_reason="length")
    with pytest.raises(services.NotFound):
        services.message_continue(user=stranger, message_id=complete.pk)
    assert Message.objects.filter(conversation=conversation).count() == 4


@pytest.mark.slow
def test_with_the_default_model_a_document_question_is_answered_from_the_retrieved_passage(user, monkeypatch):
    from conversations import documents
    from tests.conversations.test_documents import WARRANTY, manual

    monkeypatch.setattr(services, "reply_enqueue", lambda message_id: True)
    monkeypatch.setattr(documents, "SOURCES_SHARE", 0.1)  # a prompt of about 800 tokens: quicker on a CPU
    smollm2 = LLMModelFactory(name="smollm2-gguf", source=str(resolve_model_path(None)), is_default=False)
    document = documents.document_upload(user=user, name="kettle.txt", data=manual(100).encode(), language="en")
    turn = services.message_send(
        user=user,
        conversation_id=None,
        parent_id=None,
        content="How long does the warranty of the Zephyr kettle last?",
        model=smollm2.name,
        params={"temperature": 0, "max_tokens": 40},
        document_ids=[str(document.pk)],
    )
    reply = Message.objects.get(pk=turn.assistant_message.pk)
    assert any(WARRANTY in source["text"] for source in reply.sources)
    assert len(reply.sources) < document.passages.count()  # the manual does not fit: its passages were ranked

    generations.reply_generate(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.COMPLETED
    assert "thirty-six months" in reply.content.lower() or "36 months" in reply.content, reply.content
