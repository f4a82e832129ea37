"""The Llama-family transformer (SmolLM2, Llama 3.x, Qwen2) on one flat, variable-length batch.

Plain objects instead of nn.Module: there is no training, and attribute lookups on modules cost
microseconds per op at batch 1, where a step is a few hundred small ops. q/k/v are one matmul and
gate/up another. Decode sequences (one new token each) come first in the batch and go through
paged decode attention; the rest (prefill chunks) through paged prefill attention, in the same layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import ops
from .config import ModelConfig
from .errors import ModelLoadError
from .linear import Embedding, Linear, Weight, build_linear, dequantize


@dataclass
class AttentionMetadata:
    """One step's batch as tensors. The first ``num_decodes`` sequences are decodes, one token each."""

    positions: torch.Tensor  # (T,) int64
    slot_mapping: torch.Tensor  # (T,) int64
    num_decodes: int
    decode_block_tables: torch.Tensor  # (Bd, maxb) int32, -1 padded
    decode_context_lens: torch.Tensor  # (Bd,) int32
    prefill_block_tables: torch.Tensor  # (Bp, maxb) int32, -1 padded
    prefill_query_lens: torch.Tensor  # (Bp,) int32
    prefill_context_lens: torch.Tensor  # (Bp,) int32
    logit_indices: torch.Tensor  # (B,) int64: the token whose logits each sequence needs


@dataclass
class Layer:
    attn_norm: torch.Tensor  # (D,)
    qkv: Linear  # D -> (H + 2 KVH) hd
    o: Linear  # H hd -> D
    mlp_norm: torch.Tensor  # (D,)
    gate_up: Linear  # D -> 2 F
    down: Linear  # F -> D


class Transformer:
    def __init__(
        self,
        config: ModelConfig,
        weights: dict[str, Weight],
        *,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        """Takes (pops) the tensors it needs out of ``weights``. Call set_max_context before forward."""
        self.config = config
        self.device = device
        self.dtype = dtype
        c = config
        self.scale = c.head_dim**-0.5
        self.q_size = c.num_heads * c.head_dim

        def take(name: str) -> Weight:
            try:
                return weights.pop(name)
            except KeyError:
                raise ModelLoadError(f"The checkpoint lacks tensor {name!r}.") from None

        def dense(name: str) -> torch.Tensor:
            return dequantize(take(name), dtype).to(device)

        def linear(names: list[str], bias: list[str] | None = None) -> Linear:
            parts = [take(n) for n in names]
            biases = [dense(n) for n in bias] if bias else None
            return build_linear(parts, bias=biases, device=device, dtype=dtype)

        # The embedding and head first, while the process is smallest: they need the most scratch memory.
        embed = take("model.embed_tokens.weight")
        tied = c.tie_word_embeddings or "lm_head.weight" not in weights
        self.embed = Embedding(embed, device=device, dtype=dtype)
        # A tied head reads a dense embedding table as is rather than keeping a second copy.
        shared = self.embed.table if tied else None
        self.lm_head = build_linear(
            [embed if tied else take("lm_head.weight")], device=device, dtype=dtype, dense=shared
        )
        self.norm = dense("model.norm.weight")
        self.layers: list[Layer] = []
        for i in range(c.num_layers):
            p = f"model.layers.{i}."
            attn = [f"{p}self_attn.{x}_proj.weight" for x in "qkv"]
            self.layers.append(
                Layer(
                    attn_norm=dense(p + "input_layernorm.weight"),
                    qkv=linear(attn, [f"{p}self_attn.{x}_proj.bias" for x in "qkv"] if c.qkv_bias else None),
                    o=linear([p + "self_attn.o_proj.weight"]),
                    mlp_norm=dense(p + "post_attention_layernorm.weight"),
                    gate_up=linear([p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"]),
                    down=linear([p + "mlp.down_proj.weight"]),
                )
            )
        self.cos_sin = torch.empty(0, c.head_dim)  # (max_context, hd) float32, see set_max_context

    def set_max_context(self, max_context: int) -> None:
        """Positions run from 0 to max_context - 1 (the rope cache is built for exactly those)."""
        self.cos_sin = rope_cache(self.config, max_context, self.device)

    def forward(
        self,
        input_ids: torch.Tensor,
        meta: AttentionMetadata,
        k_caches: list[torch.Tensor],
        v_caches: list[torch.Tensor],
    ) -> torch.Tensor:
        """input_ids (T,) -> float32 logits (B, V) for meta.logit_indices. k/v_caches: per layer (NB, BS, KVH, hd)."""
        c = self.config
        T = input_ids.shape[0]
        x = self.embed(input_ids)  # (T, D)
        # Everything that depends only on the step, not the layer, is built once here and shared by all layers.
        block_size = k_caches[0].shape[1]
        rope = ops.rope_rows(meta.positions, self.cos_sin, self.dtype)  # (T, 1, 2, hd/2) or None on CUDA
        plans = _StepPlans(
            decode=ops.plan_decode(meta.decode_block_tables, meta.decode_context_lens, block_size, self.dtype),
            prefill=ops.plan_prefill(
                meta.prefill_block_tables,
                meta.prefill_query_lens,
                meta.prefill_context_lens,
                block_size,
                c.num_heads // c.num_kv_heads,
                self.dtype,
            ),
        )
        residual = None
        for layer, k_cache, v_cache in zip(self.layers, k_caches, v_caches, strict=True):
            h, residual = ops.rms_norm(x, layer.attn_norm, c.rms_norm_eps, residual)
            qkv = layer.qkv(h).view(T, -1, c.head_dim)  # (T, H + 2 KVH, hd)
            q, k, v = ops.apply_rope_qkv(qkv, c.num_heads, c.num_kv_heads, meta.positions, self.cos_sin, rope)
            ops.store_kv(k, v, k_cache, v_cache, meta.slot_mapping)
            o = self._attention(q, k_cache, v_cache, meta, plans)  # (T, H, hd)
            x = layer.o(o.reshape(T, self.q_size))
            h, residual = ops.rms_norm(x, layer.mlp_norm, c.rms_norm_eps, residual)
            x = layer.down(ops.silu_and_mul(layer.gate_up(h)))
        # Only the tokens that need logits go through the final norm and the head.
        idx = meta.logit_indices
        h, _ = ops.rms_norm(x.index_select(0, idx), self.norm, c.rms_norm_eps, residual.index_select(0, idx))
        return self.lm_head(h).float()  # (B, V)

    def _attention(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
        plans: _StepPlans,
    ) -> torch.Tensor:  # q (T, H, hd) -> (T, H, hd)
        nd = meta.num_decodes
        if nd == 0:
            return self._prefill(q, k_cache, v_cache, meta, plans)
        decode = ops.paged_decode_attention(
            q[:nd], k_cache, v_cache, meta.decode_block_tables, meta.decode_context_lens, self.scale, plans.decode
        )
        if nd == q.shape[0]:
            return decode
        return torch.cat([decode, self._prefill(q[nd:], k_cache, v_cache, meta, plans)])

    def _prefill(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
        plans: _StepPlans,
    ) -> torch.Tensor:
        return ops.paged_prefill_attention(
            q,
            k_cache,
            v_cache,
            meta.prefill_block_tables,
            meta.prefill_query_lens,
            meta.prefill_context_lens,
            self.scale,
            plans.prefill,
        )


@dataclass
class _StepPlans:
    """One step's attention gather indices and masks (None on CUDA), shared by every layer."""

    decode: ops.DecodePlan | None
    prefill: list[ops.PrefillSeq] | None


def rope_cache(config: ModelConfig, max_pos: int, device: torch.device) -> torch.Tensor:
    """(max_pos, hd) float32 cos|sin. GGUF Llama 3.x files carry per-frequency divisors instead of
    rope_scaling metadata; they are applied here the way llama.cpp does."""
    hd = config.head_dim
    if config.rope_freq_factors is None:
        return ops.build_rope_cache(hd, max_pos, config.rope_theta, config.rope_scaling, device)
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))  # (hd/2,)
    inv_freq = inv_freq / torch.tensor(config.rope_freq_factors, dtype=torch.float64)
    angles = torch.outer(torch.arange(max_pos, dtype=torch.float64), inv_freq)  # (max_pos, hd/2)
    return torch.cat((angles.cos(), angles.sin()), dim=-1).to(device=device, dtype=torch.float32)
