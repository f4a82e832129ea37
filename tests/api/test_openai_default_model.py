"""The default model (SmolLM2-135M-Instruct, Q4_1 GGUF) end to end through the openai SDK: web server,
worker, engine. Registered beside the tiny default entry, so the session's worker serves both."""

from __future__ import annotations

import pytest

from inference.engine.paths import resolve_model_path
from tests.api.openai_support import sdk
from tests.conversations.factories import LLMModelFactory

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker", "llm_model"),
]
FRANCE = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@pytest.fixture
def smollm2():
    return LLMModelFactory(
        name="smollm2-gguf", display_name="SmolLM2 (GGUF)", source=str(resolve_model_path(None)), is_default=False
    )


def test_the_default_model_answers_the_capital_of_france(live_server_url, api_key, smollm2):
    client = sdk(live_server_url, api_key)

    completion = client.chat.completions.create(model=smollm2.name, messages=FRANCE, temperature=0, max_tokens=48)
    streamed = client.chat.completions.create(
        model=smollm2.name, messages=FRANCE, temperature=0, max_tokens=48, stream=True
    )

    assert completion.choices[0].message.content == "The capital of France is Paris."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 42
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed) == "The capital of France is Paris."
