"""Per-request sampling parameters and the batched sampler.

The sampler works on the whole batch at once: greedy rows are one argmax, sampled rows one inverse-CDF
draw. Top-k / top-p / min-p never sort the vocabulary: a small ``topk`` holds each row's kept set and the
draw happens among those candidates; only the rare row whose set is wider than the candidates looks further.
Penalties touch only the logits of tokens the sequence has seen.
Seeded requests draw their one uniform number from their own ``torch.Generator``, so a request's tokens
do not depend on what else shares the batch.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .errors import InvalidRequestError

if TYPE_CHECKING:
    from .sequence import Sequence

MAX_TOP_LOGPROBS = 20
_CANDIDATES = 256  # first top-k width for filtered rows; widened only for rows whose kept set is wider


@dataclass(frozen=True)
class Range:
    """The values a numeric sampling parameter may take: ``low`` to ``high`` (None: unbounded), ``low``
    itself excluded when ``low_open``. Defined once here (SAMPLING_RANGES); every front door (the REST
    serializers, /v1 and its schema) derives its own from these, and may only narrow them."""

    integer: bool
    low: float | None
    high: float | None
    low_open: bool = False
    help: str = ""

    def narrowed(self, *, low: float | None = None, high: float | None = None, help: str | None = None) -> Range:
        """The same range with a tighter bound or two (never a wider one)."""
        if low is not None and self.low is not None and low < self.low:
            raise ValueError(f"{low} is below this range's low of {self.low}.")
        if high is not None and self.high is not None and high > self.high:
            raise ValueError(f"{high} is above this range's high of {self.high}.")
        new_low = self.low if low is None else low
        return Range(
            self.integer,
            new_low,
            self.high if high is None else high,
            self.low_open and new_low == self.low,
            self.help if help is None else help,
        )

    def contains(self, value: object) -> bool:
        if not (_is_int(value) if self.integer else _is_number(value)):
            return False
        number: float = value  # type: ignore[assignment]  (an int stays one: 2**63 - 1 is not a float)
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            return False
        return self.high is None or number <= self.high

    def describe(self) -> str:
        """The range in words: "between 0 and 2", "in (0, 1]", "at least 1"."""
        low, high = _show(self.low), _show(self.high)
        if self.low_open:
            return f"in ({low}, {high}]" if self.high is not None else f"greater than {low}"
        if self.low is not None and self.high is not None:
            return f"between {low} and {high}"
        if self.low is not None:
            return f"at least {low}"
        return f"at most {high}"

    def check(self, name: str, value: object) -> None:
        """Raise InvalidRequestError unless ``value`` is in the range."""
        if not self.contains(value):
            kind = "an integer" if self.integer else "a number"
            raise InvalidRequestError(f"{name} must be {kind} {self.describe()}, got {value!r}.")

    def json_schema(self) -> dict[str, object]:
        """The range as OpenAPI 3.0 schema keywords."""
        schema: dict[str, object] = {"type": "integer" if self.integer else "number"}
        if self.low is not None:
            schema["minimum"] = int(self.low) if self.integer else self.low
            if self.low_open:
                schema["exclusiveMinimum"] = True
        if self.high is not None:
            schema["maximum"] = int(self.high) if self.integer else self.high
        if self.help:
            schema["description"] = self.help
        return schema


def _show(bound: float | None) -> str:
    return "" if bound is None else f"{bound:g}" if isinstance(bound, float) else str(bound)


# Every numeric sampling parameter and the values the engine accepts.
SAMPLING_RANGES: dict[str, Range] = {
    "max_tokens": Range(True, 1, None, help="At most this many reply tokens."),
    "temperature": Range(False, 0.0, 100.0, help="How random the reply is; 0 is greedy."),
    "top_p": Range(False, 0.0, 1.0, low_open=True, help="Nucleus sampling; 1 is off."),
    "top_k": Range(True, 0, None, help="Only the k likeliest tokens; 0 is off."),
    "min_p": Range(False, 0.0, 1.0, help="Only tokens at least this likely relative to the likeliest; 0 is off."),
    "repetition_penalty": Range(False, 0.0, 10.0, low_open=True, help="Penalty on tokens already seen; 1 is off."),
    "presence_penalty": Range(False, -2.0, 2.0, help="OpenAI's presence penalty; 0 is off."),
    "frequency_penalty": Range(False, -2.0, 2.0, help="OpenAI's frequency penalty; 0 is off."),
    "seed": Range(True, -(2**63), 2**64 - 1, help="The same seed and parameters give the same text."),
    "top_logprobs": Range(True, 0, MAX_TOP_LOGPROBS, help="Most likely alternatives to report per token."),
}


@dataclass
class SamplingParams:
    """How to pick each next token and when to stop. Out-of-range values raise InvalidRequestError.

    temperature 0 means greedy. top_k 0 (or -1) and top_p 1 and min_p 0 disable those filters.
    max_tokens None means "until EOS, a stop, or the end of the context".
    """

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: bool = False
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop)
        self.stop_token_ids = list(self.stop_token_ids)
        if self.top_k == -1:
            self.top_k = 0
        self._validate()

    def _validate(self) -> None:
        for name, allowed in SAMPLING_RANGES.items():
            value = getattr(self, name)
            if value is None and name in {"max_tokens", "seed"}:
                continue  # "until the end", "not seeded"
            allowed.check(name, value)
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise InvalidRequestError("stop must be a non-empty string or a list of non-empty strings.")
        if any(not _is_int(t) or t < 0 for t in self.stop_token_ids):
            raise InvalidRequestError("stop_token_ids must be non-negative integers.")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def has_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    @property
    def has_filters(self) -> bool:
        return self.top_k > 0 or self.top_p < 1.0 or self.min_p > 0.0


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


@dataclass
class TokenLogprob:
    """Log-probability of a chosen token under the model's raw distribution, and the most likely alternatives."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # (token_id, logprob), most likely first; empty unless top_logprobs > 0


def sample(logits: torch.Tensor, seqs: SequenceOf[Sequence]) -> tuple[list[int], list[TokenLogprob | None]]:
    """Pick the next token of each sequence. ``logits`` is (B, V) float32, row i belonging to ``seqs[i]``.

    Returns the B token ids and, per sequence, its TokenLogprob when it asked for logprobs (else None).
    Penalty state kept on the sequences is updated with the chosen tokens.
    """
    params = [s.params for s in seqs]
    raw = logits
    if any(p.has_penalties for p in params):
        logits = _apply_penalties(logits.clone(), seqs)
    all_greedy = all(p.is_greedy for p in params)
    tokens = logits.argmax(dim=-1).tolist() if all_greedy else _sample_random(logits, seqs)
    for seq, token in zip(seqs, tokens, strict=True):
        if seq.penalty_state is not None:
            seq.penalty_state.add(token)
    if not any(p.logprobs for p in params):
        return tokens, [None] * len(seqs)
    return tokens, _logprobs(raw, tokens, params)


def _sample_random(logits: torch.Tensor, seqs: SequenceOf[Sequence]) -> list[int]:
    """Greedy rows take the argmax; the others are drawn, over the whole vocabulary when unfiltered, else
    over their top-k / top-p / min-p candidates only (far cheaper than a softmax over all V for those rows)."""
    params = [s.params for s in seqs]
    device = logits.device
    u = _uniforms(seqs, device)  # (B,)
    tokens = [0] * len(seqs)
    greedy = [i for i, p in enumerate(params) if p.is_greedy]
    plain = [i for i, p in enumerate(params) if not p.is_greedy and not p.has_filters]
    filtered = [i for i, p in enumerate(params) if not p.is_greedy and p.has_filters]
    if greedy:
        for i, token in zip(greedy, _rows(logits, greedy).argmax(dim=-1).tolist(), strict=True):
            tokens[i] = token
    if plain:
        x = _scaled(_rows(logits, plain), [params[i] for i in plain])  # (R, V)
        cdf = torch.softmax(x, dim=-1).cumsum(dim=-1)  # (R, V)
        # The first index whose cumulative mass exceeds u: zero-probability tokens can never be chosen.
        picked = torch.searchsorted(cdf, u[plain, None] * cdf[:, -1:], right=True).clamp_(max=x.shape[1] - 1)
        for i, token in zip(plain, picked.squeeze(1).tolist(), strict=True):
            tokens[i] = token
    if filtered:
        rows_params = [params[i] for i in filtered]
        picked = _sample_filtered(_scaled(_rows(logits, filtered), rows_params), rows_params, u[filtered])
        for i, token in zip(filtered, picked.tolist(), strict=True):
            tokens[i] = token
    return tokens


def _rows(x: torch.Tensor, rows: list[int]) -> torch.Tensor:
    return x if len(rows) == x.shape[0] else x[rows]


def _scaled(x: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    if all(p.temperature == 1.0 for p in params):
        return x
    return x / torch.tensor([p.temperature for p in params], device=x.device)[:, None]


def _uniforms(seqs: SequenceOf[Sequence], device: torch.device) -> torch.Tensor:
    """One uniform number per row (B,); a seeded request draws its own from its generator, so what else
    is in the batch cannot change its tokens."""
    u = torch.rand(len(seqs), device=device)
    for i, seq in enumerate(seqs):
        if seq.params.seed is not None and not seq.params.is_greedy:
            if seq.generator is None:
                seq.generator = torch.Generator(device=device).manual_seed(seq.params.seed)
            u[i] = torch.rand(1, generator=seq.generator, device=device)
    return u


def _sample_filtered(x: torch.Tensor, params: list[SamplingParams], u: torch.Tensor) -> torch.Tensor:
    """Draw one token per row of x (R, V) from its kept candidates; u (R,) are the rows' uniform numbers.

    The kept set (top-k, then top-p on what top-k left, then min-p) is always a prefix of the row's tokens
    sorted by logit, so a small ``topk`` usually holds it; a row whose set reaches the last candidate goes
    round again with eight times as many.
    """
    n_rows, vocab = x.shape
    device = x.device
    top_k = torch.tensor([p.top_k if 0 < p.top_k < vocab else vocab for p in params], device=device)  # (R,)
    top_p = torch.tensor([p.top_p if p.top_p < 1.0 else math.inf for p in params], device=device)  # (R,)
    log_min_p = torch.tensor([math.log(p.min_p) if p.min_p > 0 else -math.inf for p in params], device=device)
    full_lse = x.logsumexp(dim=-1) if any(p.top_p < 1.0 and p.top_k == 0 for p in params) else None  # (R,)
    out = torch.empty(n_rows, dtype=torch.int64, device=device)
    rows = torch.arange(n_rows, device=device)
    width = min(vocab, max(_CANDIDATES, *(p.top_k for p in params)))
    while rows.numel() > 0:
        vals, ids = (x if rows.numel() == n_rows else x[rows]).topk(width, dim=-1)  # (r, W), best first
        keep = torch.arange(width, device=device)[None, :] < top_k[rows, None]  # (r, W)
        if full_lse is None:
            lse = vals.masked_fill(~keep, -math.inf).logsumexp(dim=-1)
        else:
            # top-p is measured on what top-k left when top_k is set (as Hugging Face and vLLM do).
            top_k_lse = vals.masked_fill(~keep, -math.inf).logsumexp(dim=-1)
            lse = torch.where(top_k[rows] < vocab, top_k_lse, full_lse[rows])
        probs = (vals - lse[:, None]).exp() * keep  # (r, W)
        keep &= probs.cumsum(dim=-1) - probs < top_p[rows, None]  # tokens while the mass before them is below p
        keep &= vals - vals[:, :1] >= log_min_p[rows, None]  # p_i >= min_p * p_max
        keep[:, 0] = True
        weights = (vals - vals[:, :1]).exp() * keep  # (r, W), unnormalised
        cdf = weights.cumsum(dim=-1)
        j = torch.searchsorted(cdf, u[rows, None] * cdf[:, -1:], right=True).clamp_(max=width - 1)  # (r, 1)
        picked = ids.gather(1, j).squeeze(1)  # (r,)
        settled = ~keep[:, -1] | (top_k[rows] <= width)
        out[rows[settled]] = picked[settled]
        rows = rows[~settled]
        width = min(vocab, width * 8)
    return out


class PenaltyState:
    """The tokens a sequence has seen (prompt and output, each once) and how often each was generated, so
    penalties touch only those logits instead of whole (B, V) rows."""

    def __init__(self, seq: Sequence, device: torch.device) -> None:
        seen = list(dict.fromkeys(seq.token_ids))
        generated = Counter(seq.output_token_ids)
        self.slot = {token: i for i, token in enumerate(seen)}
        self.ids = torch.tensor(seen, dtype=torch.int64, device=device)  # (S,)
        self.counts = torch.tensor([float(generated[t]) for t in seen], device=device)  # (S,)

    def add(self, token: int) -> None:
        slot = self.slot.get(token)
        if slot is None:
            self.slot[token] = len(self.slot)
            self.ids = torch.cat([self.ids, self.ids.new_tensor([token])])
            self.counts = torch.cat([self.counts, self.counts.new_tensor([1.0])])
        else:
            self.counts[slot] += 1


def _apply_penalties(logits: torch.Tensor, seqs: SequenceOf[Sequence]) -> torch.Tensor:
    """Repetition penalty (prompt and output tokens, Hugging Face style), presence and frequency penalties
    (output tokens only, OpenAI style) on the rows that ask for them. Modifies ``logits`` (B, V) in place."""
    vocab = logits.shape[1]
    device = logits.device
    rows = [i for i, s in enumerate(seqs) if s.params.has_penalties]
    states = []
    for i in rows:
        if seqs[i].penalty_state is None:
            seqs[i].penalty_state = PenaltyState(seqs[i], device)
        states.append(seqs[i].penalty_state)
    flat_index = torch.cat([state.ids + row * vocab for row, state in zip(rows, states, strict=True)])  # (N,)
    counts = torch.cat([state.counts for state in states])  # (N,)
    lengths = torch.tensor([len(state.slot) for state in states], device=device)

    def per_token(name: str) -> torch.Tensor:
        values = torch.tensor([getattr(seqs[i].params, name) for i in rows], device=device)
        return values.repeat_interleave(lengths)  # (N,)

    rep = per_token("repetition_penalty")
    flat = logits.view(-1)
    values = flat[flat_index]
    values = torch.where(values > 0, values / rep, values * rep)
    values = values - per_token("frequency_penalty") * counts - per_token("presence_penalty") * (counts > 0)
    flat[flat_index] = values
    return logits


def _logprobs(raw: torch.Tensor, tokens: list[int], params: list[SamplingParams]) -> list[TokenLogprob | None]:
    rows = [i for i, p in enumerate(params) if p.logprobs]
    logprobs = torch.log_softmax(_rows(raw, rows).float(), dim=-1)  # (R, V)
    chosen_ids = torch.tensor([tokens[i] for i in rows], device=raw.device)
    chosen = logprobs.gather(1, chosen_ids[:, None]).squeeze(1).tolist()
    k = max(params[i].top_logprobs for i in rows)
    top_vals: list[list[float]] = [[] for _ in rows]
    top_ids: list[list[int]] = [[] for _ in rows]
    if k > 0:
        values, ids = logprobs.topk(k, dim=-1)  # (R, k)
        top_vals, top_ids = values.tolist(), ids.tolist()
    out: list[TokenLogprob | None] = [None] * len(params)
    for j, i in enumerate(rows):
        n = params[i].top_logprobs
        out[i] = TokenLogprob(
            token_id=tokens[i], logprob=chosen[j], top=list(zip(top_ids[j][:n], top_vals[j][:n], strict=True))
        )
    return out
