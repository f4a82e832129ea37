"""Per-request sampling parameters and the batched sampler.

The sampler works on the whole batch at once: greedy rows are one argmax, sampled rows one inverse-CDF
draw over the (filtered) distribution. Top-k / top-p never sort the vocabulary: a small ``topk`` finds
each row's cut-off logit, and only the rare row whose nucleus is wider than the candidates looks further.
Seeded requests draw their one uniform number from their own ``torch.Generator``, so a request's tokens
do not depend on what else shares the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .errors import InvalidRequestError

if TYPE_CHECKING:
    from .sequence import Sequence

MAX_TOP_LOGPROBS = 20
_CANDIDATES = 256  # first top-k width used to find top-p cut-offs; widened only for rows that need it


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
        def fail(message: str) -> None:
            raise InvalidRequestError(message)

        if self.max_tokens is not None and (not _is_int(self.max_tokens) or self.max_tokens < 1):
            fail(f"max_tokens must be a positive integer, got {self.max_tokens!r}.")
        if not _is_number(self.temperature) or not 0.0 <= self.temperature <= 100.0:
            fail(f"temperature must be between 0 and 100, got {self.temperature!r}.")
        if not _is_number(self.top_p) or not 0.0 < self.top_p <= 1.0:
            fail(f"top_p must be in (0, 1], got {self.top_p!r}.")
        if not _is_int(self.top_k) or self.top_k < 0:
            fail(f"top_k must be 0 (off) or a positive integer, got {self.top_k!r}.")
        if not _is_number(self.min_p) or not 0.0 <= self.min_p <= 1.0:
            fail(f"min_p must be in [0, 1], got {self.min_p!r}.")
        if not _is_number(self.repetition_penalty) or not 0.0 < self.repetition_penalty <= 10.0:
            fail(f"repetition_penalty must be in (0, 10], got {self.repetition_penalty!r}.")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not _is_number(value) or not -2.0 <= value <= 2.0:
                fail(f"{name} must be between -2 and 2, got {value!r}.")
        if self.seed is not None and (not _is_int(self.seed) or not -(2**63) <= self.seed < 2**64):
            fail(f"seed must be an integer that fits in 64 bits, got {self.seed!r}.")
        if any(not isinstance(s, str) or not s for s in self.stop):
            fail("stop must be a non-empty string or a list of non-empty strings.")
        if any(not _is_int(t) or t < 0 for t in self.stop_token_ids):
            fail("stop_token_ids must be non-negative integers.")
        if not _is_int(self.top_logprobs) or not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            fail(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {self.top_logprobs!r}.")

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
    greedy = [p.is_greedy for p in params]
    tokens = logits.argmax(dim=-1) if all(greedy) else _sample_random(logits, seqs, greedy)  # (B,)
    token_list = tokens.tolist()
    _count_outputs(seqs, token_list)
    if not any(p.logprobs for p in params):
        return token_list, [None] * len(seqs)
    return token_list, _logprobs(raw, token_list, params)


def _sample_random(logits: torch.Tensor, seqs: SequenceOf[Sequence], greedy: list[bool]) -> torch.Tensor:
    params = [s.params for s in seqs]
    device = logits.device
    temps = torch.tensor([p.temperature if p.temperature > 0 else 1.0 for p in params], device=device)
    x = logits / temps[:, None]  # (B, V)
    if any(p.has_filters for p in params):
        x = _apply_filters(x, params)
    probs = torch.softmax(x, dim=-1)  # (B, V); filtered tokens have probability 0
    cdf = probs.cumsum(dim=-1)  # (B, V)
    # One uniform number per row; seeded rows draw it from their own generator so the batch cannot shift it.
    u = torch.rand(len(seqs), 1, device=device)  # (B, 1)
    for i, seq in enumerate(seqs):
        if seq.params.seed is not None and not greedy[i]:
            if seq.generator is None:
                seq.generator = torch.Generator(device=device).manual_seed(seq.params.seed)
            u[i] = torch.rand(1, generator=seq.generator, device=device)
    # The first index whose cumulative mass exceeds u: zero-probability tokens can never be chosen.
    sampled = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1).clamp_(max=logits.shape[1] - 1)
    if any(greedy):
        greedy_mask = torch.tensor(greedy, device=device)
        sampled = torch.where(greedy_mask, logits.argmax(dim=-1), sampled)
    return sampled


def _apply_filters(x: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Set logits outside each row's top-k / top-p / min-p set to -inf. x is (B, V), temperature applied."""
    batch, vocab = x.shape
    device = x.device
    if any(p.top_k > 0 or p.top_p < 1.0 for p in params):
        top_k = torch.tensor([p.top_k if 0 < p.top_k < vocab else vocab for p in params], device=device)  # (B,)
        top_p = torch.tensor([p.top_p for p in params], device=device)  # (B,)
        cutoff = torch.full((batch,), -math.inf, device=device)  # (B,) smallest logit each row keeps
        rows = torch.tensor([i for i, p in enumerate(params) if p.top_k > 0 or p.top_p < 1.0], device=device)
        width = min(vocab, max(_CANDIDATES, *(p.top_k for p in params)))
        while rows.numel() > 0:
            found, done = _cutoffs(x[rows], top_k[rows], top_p[rows], width)
            cutoff[rows[done]] = found[done]
            rows = rows[~done]
            width = min(vocab, width * 8)  # only rows whose nucleus is wider than the candidates go round again
        x = x.masked_fill(x < cutoff[:, None], -math.inf)
    if any(p.min_p > 0.0 for p in params):
        min_p = torch.tensor([p.min_p for p in params], device=device)  # (B,)
        probs = torch.softmax(x, dim=-1)  # (B, V)
        x = x.masked_fill(probs < min_p[:, None] * probs.amax(dim=-1, keepdim=True), -math.inf)
    return x


def _cutoffs(
    x: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut-off logit of each row (R, V) from its ``width`` best candidates, and whether that settled it.

    A row is settled when its kept set ends inside the candidates or top-k bounds it; otherwise its
    nucleus may go on past them and the caller retries with more candidates.
    """
    vals = x.topk(width, dim=-1).values  # (R, W), best first
    in_k = torch.arange(width, device=x.device)[None, :] < top_k[:, None]  # (R, W)
    # top-p is measured on the top-k distribution when top_k is set (as Hugging Face and vLLM do).
    lse = torch.where(top_k < x.shape[1], vals.masked_fill(~in_k, -math.inf).logsumexp(-1), x.logsumexp(-1))
    probs = (vals - lse[:, None]).exp().masked_fill(~in_k, 0.0)  # (R, W)
    mass_before = probs.cumsum(dim=-1) - probs  # (R, W)
    n_keep = (in_k & (mass_before < top_p[:, None])).sum(dim=-1).clamp(min=1)  # (R,)
    found = vals.gather(1, (n_keep - 1)[:, None]).squeeze(1)  # (R,)
    done = (n_keep < width) | (top_k <= width)
    return found, done


def _apply_penalties(logits: torch.Tensor, seqs: SequenceOf[Sequence]) -> torch.Tensor:
    """Repetition penalty (prompt and output tokens, Hugging Face style), presence and frequency penalties
    (output tokens only, OpenAI style) on the rows that ask for them. Modifies ``logits`` (B, V) in place."""
    vocab = logits.shape[1]
    device = logits.device
    rows = [i for i, s in enumerate(seqs) if s.params.has_penalties]
    for i in rows:
        seq = seqs[i]
        if seq.output_counts is None:
            seq.output_counts = _bincount(seq.output_token_ids, vocab, device)
            seq.prompt_mask = _bincount(seq.token_ids[: seq.num_prompt_tokens], vocab, device) > 0
    counts = torch.stack([seqs[i].output_counts for i in rows])  # (R, V)
    in_prompt = torch.stack([seqs[i].prompt_mask for i in rows])  # (R, V)
    rep = torch.tensor([seqs[i].params.repetition_penalty for i in rows], device=device)[:, None]  # (R, 1)
    presence = torch.tensor([seqs[i].params.presence_penalty for i in rows], device=device)[:, None]
    frequency = torch.tensor([seqs[i].params.frequency_penalty for i in rows], device=device)[:, None]
    x = logits[rows]  # (R, V)
    seen = in_prompt | (counts > 0)
    x = torch.where(seen, torch.where(x > 0, x / rep, x * rep), x)
    x = x - frequency * counts - presence * (counts > 0).float()
    logits[rows] = x
    return logits


def _bincount(token_ids: list[int], vocab: int, device: torch.device) -> torch.Tensor:
    ids = torch.tensor(token_ids, dtype=torch.int64, device=device)
    return torch.bincount(ids, minlength=vocab)[:vocab].float()  # (V,)


def _count_outputs(seqs: SequenceOf[Sequence], tokens: list[int]) -> None:
    for seq, token in zip(seqs, tokens, strict=True):
        if seq.output_counts is not None:
            seq.output_counts[token] += 1


def _logprobs(raw: torch.Tensor, tokens: list[int], params: list[SamplingParams]) -> list[TokenLogprob | None]:
    rows = [i for i, p in enumerate(params) if p.logprobs]
    logprobs = torch.log_softmax(raw[rows].float(), dim=-1)  # (R, V)
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
        top = list(zip(top_ids[j][:n], top_vals[j][:n], strict=True))
        out[i] = TokenLogprob(token_id=tokens[i], logprob=chosen[j], top=top)
    return out
