from __future__ import annotations

import math

import pytest
import torch

from inference.engine.errors import InvalidRequestError
from inference.engine.sampling import SAMPLING_RANGES, SamplingParams, sample
from inference.engine.sequence import Sequence

VOCAB = 5000


@pytest.fixture(autouse=True)
def _seeded_global_rng() -> None:
    """Unseeded requests draw from torch's global generator: fix it so these tests are repeatable."""
    torch.manual_seed(0)


def make_seqs(n: int, prompt: list[int] | None = None, **params: object) -> list[Sequence]:
    return [Sequence(f"r{i}", prompt or [1, 2, 3], SamplingParams(**params)) for i in range(n)]


def peaked_logits(probs: list[float], vocab: int = VOCAB) -> torch.Tensor:
    """One row whose first len(probs) tokens have these probabilities and the rest almost none."""
    logits = torch.full((vocab,), -1e4)
    logits[: len(probs)] = torch.tensor(probs).log()
    return logits


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": -0.1},
        {"temperature": math.nan},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"top_k": -2},
        {"min_p": 1.1},
        {"repetition_penalty": 0.0},
        {"presence_penalty": 2.5},
        {"frequency_penalty": -3.0},
        {"max_tokens": 0},
        {"max_tokens": 2.5},
        {"seed": 2**64},
        {"stop": [""]},
        {"stop_token_ids": [-1]},
        {"top_logprobs": 21},
    ],
)
def test_out_of_range_parameters_raise_invalid_request(bad: dict) -> None:
    with pytest.raises(InvalidRequestError):
        SamplingParams(**bad)


def test_a_single_stop_string_becomes_a_list_and_top_k_minus_one_means_off() -> None:
    params = SamplingParams(stop="###", top_k=-1)

    assert params.stop == ["###"]
    assert params.top_k == 0


def test_greedy_picks_the_argmax_of_every_row() -> None:
    logits = torch.randn(4, VOCAB)

    tokens, logprobs = sample(logits, make_seqs(4, temperature=0.0))

    assert tokens == logits.argmax(dim=-1).tolist()
    assert logprobs == [None] * 4


def test_greedy_rows_stay_greedy_beside_sampled_rows() -> None:
    logits = torch.randn(2, VOCAB)
    seqs = make_seqs(1, temperature=0.0) + make_seqs(1, temperature=1.0)

    tokens, _ = sample(logits, seqs)

    assert tokens[0] == int(logits[0].argmax())


def test_the_same_seed_gives_the_same_tokens_whatever_else_is_in_the_batch() -> None:
    logits = torch.randn(8, 3, VOCAB)
    alone = make_seqs(1, temperature=1.0, top_p=0.9, seed=1234)
    crowded = make_seqs(1, temperature=1.0, top_p=0.9, seed=1234) + make_seqs(2, temperature=0.8)

    tokens_alone = [sample(step[:1], alone)[0][0] for step in logits]
    tokens_crowded = [sample(step, crowded)[0][0] for step in logits]

    assert tokens_alone == tokens_crowded


def test_different_seeds_give_different_tokens() -> None:
    logits = torch.zeros(20, 1, VOCAB)
    first = make_seqs(1, temperature=1.0, seed=1)
    second = make_seqs(1, temperature=1.0, seed=2)

    tokens_first = [sample(step, first)[0][0] for step in logits]
    tokens_second = [sample(step, second)[0][0] for step in logits]

    assert tokens_first != tokens_second


def test_top_k_keeps_only_the_k_most_likely_tokens() -> None:
    logits = torch.randn(VOCAB).expand(300, VOCAB)

    tokens, _ = sample(logits, make_seqs(300, temperature=5.0, top_k=3))

    assert set(tokens) <= set(logits[0].topk(3).indices.tolist())
    assert len(set(tokens)) == 3


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = peaked_logits([0.5, 0.3, 0.1, 0.1]).expand(300, VOCAB)

    tokens, _ = sample(logits, make_seqs(300, temperature=1.0, top_p=0.7))

    assert set(tokens) == {0, 1}


def test_top_p_looks_past_the_first_candidates_when_the_nucleus_is_wide() -> None:
    # 1000 almost equally likely tokens: the 0.5 nucleus holds about 500 of them, wider than the first top-k pass.
    logits = torch.full((VOCAB,), -1e4)
    logits[:1000] = -torch.arange(1000) * 1e-4
    batch = logits.expand(400, VOCAB)

    tokens, _ = sample(batch, make_seqs(400, temperature=1.0, top_p=0.5))

    assert max(tokens) < 560
    assert max(tokens) > 300


def test_min_p_drops_tokens_far_less_likely_than_the_best() -> None:
    logits = peaked_logits([0.6, 0.3, 0.05, 0.05]).expand(300, VOCAB)

    tokens, _ = sample(logits, make_seqs(300, temperature=1.0, min_p=0.2))

    assert set(tokens) == {0, 1}


def test_min_p_looks_past_the_first_candidates_when_many_tokens_qualify() -> None:
    # p_i / p_max = exp(-i / 1000) >= 0.5 for the first 694 tokens.
    logits = torch.full((VOCAB,), -1e4)
    logits[:1000] = -torch.arange(1000) * 1e-3
    batch = logits.expand(400, VOCAB)

    tokens, _ = sample(batch, make_seqs(400, temperature=1.0, min_p=0.5))

    assert max(tokens) < 694
    assert max(tokens) > 400


def test_greedy_plain_and_filtered_rows_are_each_drawn_their_own_way_in_one_batch() -> None:
    logits = peaked_logits([0.5, 0.3, 0.1, 0.1]).expand(300, VOCAB).clone()
    logits[0] = logits[0].flip(0)  # a greedy row whose best token is the last one
    seqs = make_seqs(1, temperature=0.0) + make_seqs(149, temperature=1.0) + make_seqs(150, top_k=1)

    tokens, _ = sample(logits, seqs)

    assert tokens[0] == VOCAB - 1
    assert set(tokens[1:150]) == {0, 1, 2, 3}
    assert set(tokens[150:]) == {0}


def test_repetition_penalty_steers_away_from_prompt_tokens() -> None:
    logits = peaked_logits([0.2, 0.5, 0.3])[None, :]
    seqs = [Sequence("r", [1, 1, 1], SamplingParams(temperature=0.0, repetition_penalty=2.0))]

    tokens, _ = sample(logits, seqs)

    assert tokens == [2]


def test_frequency_penalty_grows_with_each_repeat_of_an_output_token() -> None:
    logits = torch.zeros(1, VOCAB)
    logits[0, 7] = 1.0
    logits[0, 8] = 0.5
    seq = Sequence("r", [1, 2], SamplingParams(temperature=0.0, frequency_penalty=0.3))

    picked = []
    for _ in range(3):
        token = sample(logits, [seq])[0][0]
        seq.token_ids.append(token)
        picked.append(token)

    assert picked == [7, 7, 8]


def test_presence_penalty_applies_once_per_seen_output_token() -> None:
    logits = torch.zeros(1, VOCAB)
    logits[0, 7] = 1.0
    logits[0, 8] = 0.5
    seq = Sequence("r", [1, 2], SamplingParams(temperature=0.0, presence_penalty=0.4))

    picked = []
    for _ in range(3):
        token = sample(logits, [seq])[0][0]
        seq.token_ids.append(token)
        picked.append(token)

    assert picked == [7, 7, 7]


def test_logprobs_report_the_chosen_token_and_the_best_alternatives() -> None:
    logits = torch.randn(2, VOCAB)
    seqs = make_seqs(1, temperature=0.0, logprobs=True, top_logprobs=3) + make_seqs(1, temperature=0.0)

    tokens, logprobs = sample(logits, seqs)

    expected = torch.log_softmax(logits[0], dim=-1)
    assert logprobs[0].token_id == tokens[0]
    assert logprobs[0].logprob == pytest.approx(float(expected.max()), abs=1e-5)
    assert [t for t, _ in logprobs[0].top] == expected.topk(3).indices.tolist()
    assert logprobs[1] is None


def test_each_parameter_range_is_checked_at_its_bounds_exactly():
    seed, top_p = SAMPLING_RANGES["seed"], SAMPLING_RANGES["top_p"]

    assert seed.contains(2**64 - 1) and seed.contains(-(2**63))  # exact, never rounded through a float
    assert not seed.contains(2**64) and not seed.contains(1.5) and not seed.contains(True)
    assert top_p.contains(1.0) and top_p.contains(5e-324)
    assert not top_p.contains(0.0) and not top_p.contains(float("nan"))
    assert top_p.describe() == "in (0, 1]"
    assert SAMPLING_RANGES["temperature"].describe() == "between 0 and 100"
    assert SAMPLING_RANGES["max_tokens"].describe() == "at least 1"


def test_a_front_door_may_narrow_a_range_but_never_widen_it():
    temperature = SAMPLING_RANGES["temperature"]

    narrowed = temperature.narrowed(high=2.0)

    assert narrowed.contains(2.0) and not narrowed.contains(2.5)
    assert narrowed.json_schema() == {"type": "number", "minimum": 0.0, "maximum": 2.0, "description": temperature.help}
    with pytest.raises(ValueError):
        temperature.narrowed(high=1000.0)
    with pytest.raises(ValueError):
        SAMPLING_RANGES["top_k"].narrowed(low=-1)


def test_sampling_params_refuse_a_value_outside_its_range_naming_it():
    with pytest.raises(InvalidRequestError, match=r"top_p must be a number in \(0, 1\], got 0"):
        SamplingParams(top_p=0)
