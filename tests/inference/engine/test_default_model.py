"""End to end with the default model (SmolLM2-135M-Instruct, Q4_1 GGUF): tokenizer, template, runner, engine.

The expected answer is the one llama.cpp and Hugging Face transformers give for the same prompt (shared notes).
"""

from __future__ import annotations

import pytest

from inference.engine.engine import Engine
from inference.engine.sampling import SamplingParams

pytestmark = pytest.mark.slow

FRANCE = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
IM_END = 2


@pytest.fixture(scope="module")
def engine():
    with Engine(None) as engine:
        yield engine


def test_greedy_answer_to_capital_of_france_with_default_system_prompt(engine):
    output = engine.generate(FRANCE, SamplingParams(temperature=0.0, max_tokens=48))

    assert output.text == "The capital of France is Paris."
    assert output.finish_reason == "stop"
    assert output.token_ids[-1] == IM_END
    assert output.usage.prompt_tokens == 42


def test_streamed_deltas_add_up_to_the_same_answer(engine):
    request_id = engine.submit(FRANCE, SamplingParams(temperature=0.0, max_tokens=48))

    deltas = list(engine.stream(request_id))

    assert "".join(delta.text for delta in deltas) == "The capital of France is Paris."
    assert [delta.finish_reason for delta in deltas] == [None] * (len(deltas) - 1) + ["stop"]
