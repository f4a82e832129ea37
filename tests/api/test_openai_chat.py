"""POST /v1/chat/completions through the official openai SDK, against uvicorn and a Celery worker serving
the tiny random model (which never stops early: a greedy reply runs to max_tokens)."""

from __future__ import annotations

import re

import pytest

from tests.api.openai_support import HELLO, MODEL, raw, sdk

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker", "llm_model")]


@pytest.fixture
def client(live_server_url, api_key):
    return sdk(live_server_url, api_key)


def greedy(client, max_tokens=20, **kwargs):
    return client.chat.completions.create(model=MODEL, messages=HELLO, temperature=0, max_tokens=max_tokens, **kwargs)


def test_a_completion_has_the_reply_its_finish_reason_and_usage(client):
    completion = greedy(client, max_tokens=12)

    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "length"
    assert completion.usage.completion_tokens == 12
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 12
    assert completion.usage.prompt_tokens_details.cached_tokens == 0


def test_a_repeated_long_prompt_reports_cached_tokens(client):
    messages = [{"role": "system", "content": "You are a terse assistant. " * 12}, *HELLO]

    first = client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=4)
    second = client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=4)

    assert first.usage.prompt_tokens == second.usage.prompt_tokens
    assert 0 < second.usage.prompt_tokens_details.cached_tokens < second.usage.prompt_tokens


def test_max_completion_tokens_works_like_max_tokens(client):
    completion = client.chat.completions.create(model=MODEL, messages=HELLO, temperature=0, max_completion_tokens=7)

    assert completion.usage.completion_tokens == 7
    assert completion.choices[0].finish_reason == "length"


def test_a_stream_starts_with_the_role_and_adds_up_to_the_same_reply(client):
    whole = greedy(client).choices[0].message.content

    chunks = list(greedy(client, stream=True))

    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == whole
    assert [chunk.choices[0].finish_reason for chunk in chunks] == [None] * (len(chunks) - 1) + ["length"]
    assert all(chunk.usage is None for chunk in chunks)


def test_include_usage_adds_a_last_chunk_with_no_choices_and_the_usage(client):
    chunks = list(greedy(client, max_tokens=9, stream=True, stream_options={"include_usage": True}))

    *choice_chunks, last = chunks
    assert last.choices == []
    assert last.usage.completion_tokens == 9
    assert last.usage.total_tokens == last.usage.prompt_tokens + 9
    assert choice_chunks[-1].choices[0].finish_reason == "length"
    assert all(chunk.usage is None for chunk in choice_chunks)


def test_a_stream_is_server_sent_events_ending_with_done(live_server_url, api_key):
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 3, "temperature": 0, "stream": True}
    response = raw(live_server_url, "POST", "/v1/chat/completions", key=api_key, json=body)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in events)
    assert events[-1] == "data: [DONE]"


def test_a_stop_string_ends_the_reply_before_it(client):
    text = greedy(client, max_tokens=40).choices[0].message.content
    stop = re.search(r"[A-Za-z]{2,}", text[3:]).group()  # something the reply writes after a few characters

    completion = greedy(client, max_tokens=40, stop=[stop, "never-written-stop"])

    assert completion.choices[0].message.content == text[: text.index(stop)]
    assert completion.choices[0].finish_reason == "stop"


def test_the_same_seed_gives_the_same_text_and_another_seed_another(client):
    def sample(seed):
        completion = client.chat.completions.create(
            model=MODEL, messages=HELLO, temperature=1, top_p=1, seed=seed, max_tokens=24
        )
        return completion.choices[0].message.content

    first = sample(1234)

    assert sample(1234) == first
    assert sample(4321) != first


def test_n_choices_are_separate_generations(client):
    completion = client.chat.completions.create(
        model=MODEL, messages=HELLO, temperature=1, seed=7, n=3, max_tokens=10, logprobs=True
    )

    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    assert len({choice.message.content for choice in completion.choices}) == 3
    # usage counts every token each choice made; a sampled choice may end before max_tokens at the model's end
    # token, which is counted (it was computed) but has no logprobs entry (it is not part of the text)
    made = [len(choice.logprobs.content) for choice in completion.choices]
    ended = sum(choice.finish_reason == "stop" for choice in completion.choices)
    assert completion.usage.completion_tokens == sum(made) + ended
    assert all(n == 10 for n, choice in zip(made, completion.choices, strict=True) if choice.finish_reason == "length")
    assert all(n <= 10 for n in made)


def test_n_choices_stream_interleaved_each_with_its_finish_reason(client):
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=HELLO, temperature=0, n=2, max_tokens=6, stream=True)
    )

    finished = [chunk.choices[0].index for chunk in chunks if chunk.choices[0].finish_reason]
    assert sorted(finished) == [0, 1]
    texts = ["".join(c.choices[0].delta.content or "" for c in chunks if c.choices[0].index == i) for i in (0, 1)]
    assert texts[0] == texts[1]  # greedy: both choices write the same


def test_logprobs_come_per_token_with_the_top_alternatives(client):
    completion = greedy(client, max_tokens=8, logprobs=True, top_logprobs=3)

    entries = completion.choices[0].logprobs.content
    assert len(entries) == 8
    for entry in entries:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)  # greedy: the likeliest was chosen
        assert entry.bytes == list(entry.token.encode())


def test_streamed_logprobs_cover_every_token(client):
    chunks = list(greedy(client, max_tokens=8, logprobs=True, stream=True))

    entries = [entry for chunk in chunks if chunk.choices[0].logprobs for entry in chunk.choices[0].logprobs.content]
    assert len(entries) == 8
    assert all(entry.top_logprobs == [] for entry in entries)


def test_vllm_sampling_extras_and_penalties_are_accepted(client):
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "Again"},
        ],
        temperature=0.8,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        seed=3,
        max_tokens=5,
        user="someone@example.com",
        extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1},
    )

    assert completion.usage.completion_tokens == 5


def test_responses_carry_a_request_id_and_the_processing_time(client):
    response = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, temperature=0, max_tokens=2
    )

    assert response.headers["x-request-id"]
    assert int(response.headers["openai-processing-ms"]) >= 0
    assert response.parse().usage.completion_tokens == 2
