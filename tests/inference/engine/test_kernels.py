"""Each Triton kernel against its PyTorch reference.

Without a GPU the kernels run under Triton's interpreter on CPU tensors (small shapes keep it fast); with one
they run compiled on CUDA tensors (scripts/gpu_check.sh).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():
    # Must happen before the kernel modules are imported: Triton reads it when @triton.jit runs.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from inference.engine.kernels import kv_store, paged_attention, rmsnorm, rope, silu_mul
from inference.engine.kernels.reference import build_rope_cache_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    tol = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 4e-3}[dtype]
    torch.testing.assert_close(actual.float(), expected.float(), atol=tol, rtol=tol)


def _paged(
    dense: list[torch.Tensor], block_size: int, num_blocks: int, extra_table_slots: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter each sequence's dense (ctx, KVH, hd) rows over randomly chosen cache blocks.

    Returns (cache (NB, BS, KVH, hd), block_tables (B, maxb) int32 padded with -1). Unused blocks hold noise,
    so a kernel that reads past a context length or through a -1 pad gets a wrong answer.
    """
    kvh, hd = dense[0].shape[1:]
    cache = torch.randn(num_blocks, block_size, kvh, hd, dtype=dense[0].dtype, device=dense[0].device) * 10
    needed = [(len(x) + block_size - 1) // block_size for x in dense]
    free = torch.randperm(num_blocks).tolist()
    tables = torch.full((len(dense), max(needed) + extra_table_slots), -1, dtype=torch.int32)
    for i, (rows, n_blocks) in enumerate(zip(dense, needed, strict=True)):
        blocks = [free.pop() for _ in range(n_blocks)]
        tables[i, :n_blocks] = torch.tensor(blocks, dtype=torch.int32)
        for pos in range(len(rows)):
            cache[blocks[pos // block_size], pos % block_size] = rows[pos]
    return cache, tables.to(dense[0].device)


# RMSNorm


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("T", "D"), [(1, 64), (5, 100)])
def test_rms_norm_matches_reference(T: int, D: int, dtype: torch.dtype) -> None:
    x = torch.randn(T, D, dtype=dtype, device=DEVICE)
    weight = torch.randn(D, dtype=dtype, device=DEVICE)

    out, residual = rmsnorm.rms_norm(x, weight, 1e-5)

    expected_out, _ = rmsnorm.rms_norm_ref(x, weight, 1e-5)
    _close(out, expected_out, dtype)
    assert residual is x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_adds_the_residual_first_and_returns_the_sum(dtype: torch.dtype) -> None:
    x = torch.randn(6, 96, dtype=dtype, device=DEVICE)
    residual = torch.randn(6, 96, dtype=dtype, device=DEVICE)
    weight = torch.randn(96, dtype=dtype, device=DEVICE)

    out, new_residual = rmsnorm.rms_norm(x, weight, 1e-6, residual)

    expected_out, expected_residual = rmsnorm.rms_norm_ref(x, weight, 1e-6, residual)
    _close(out, expected_out, dtype)
    _close(new_residual, expected_residual, dtype)  # the interpreter truncates fp32 -> bf16: one ulp apart


def test_rms_norm_reads_a_strided_input() -> None:
    wide = torch.randn(4, 160, device=DEVICE)
    x = wide[:, :80]  # rows 160 apart
    weight = torch.randn(80, device=DEVICE)

    out, _ = rmsnorm.rms_norm(x, weight, 1e-5)

    _close(out, rmsnorm.rms_norm_ref(x.contiguous(), weight, 1e-5)[0], torch.float32)


def test_rms_norm_rejects_a_mismatched_weight() -> None:
    with pytest.raises(ValueError, match="weight"):
        rmsnorm.rms_norm(torch.randn(2, 64, device=DEVICE), torch.randn(32, device=DEVICE), 1e-5)


# RoPE


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("T", "H", "KVH", "hd"), [(1, 4, 4, 16), (7, 6, 2, 32), (3, 9, 3, 64)])
def test_rope_matches_reference(T: int, H: int, KVH: int, hd: int, dtype: torch.dtype) -> None:
    cos_sin = build_rope_cache_ref(hd, 64, 10000.0, None, DEVICE)
    q = torch.randn(T, H, hd, dtype=dtype, device=DEVICE)
    k = torch.randn(T, KVH, hd, dtype=dtype, device=DEVICE)
    positions = torch.randint(0, 64, (T,), device=DEVICE)

    q_out, k_out = rope.apply_rope(q, k, positions, cos_sin)

    q_ref, k_ref = rope.apply_rope_ref(q.float(), k.float(), positions, cos_sin)
    _close(q_out, q_ref, dtype)
    _close(k_out, k_ref, dtype)


def test_rope_reads_q_and_k_sliced_from_a_fused_projection() -> None:
    T, H, KVH, hd = 5, 4, 2, 32
    qkv = torch.randn(T, (H + 2 * KVH) * hd, device=DEVICE)
    q = qkv[:, : H * hd].view(T, H, hd)
    k = qkv[:, H * hd : (H + KVH) * hd].view(T, KVH, hd)
    cos_sin = build_rope_cache_ref(hd, 32, 500000.0, None, DEVICE)
    positions = torch.arange(10, 10 + T, device=DEVICE)

    q_out, k_out = rope.apply_rope(q, k, positions, cos_sin)

    q_ref, k_ref = rope.apply_rope_ref(q.contiguous(), k.contiguous(), positions, cos_sin)
    _close(q_out, q_ref, torch.float32)
    _close(k_out, k_ref, torch.float32)


# SiLU · mul


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("T", "F"), [(1, 64), (3, 1500)])
def test_silu_and_mul_matches_reference(T: int, F: int, dtype: torch.dtype) -> None:
    x = torch.randn(T, 2 * F, dtype=dtype, device=DEVICE)

    out = silu_mul.silu_and_mul(x)

    _close(out, silu_mul.silu_and_mul_ref(x.float()), dtype)


# KV store


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_store_kv_writes_each_token_at_its_slot_and_nothing_else(dtype: torch.dtype) -> None:
    NB, BS, KVH, hd, T = 6, 4, 3, 32, 9
    k = torch.randn(T, KVH, hd, dtype=dtype, device=DEVICE)
    v = torch.randn(T, KVH, hd, dtype=dtype, device=DEVICE)
    k_cache = torch.randn(NB, BS, KVH, hd, dtype=dtype, device=DEVICE)
    v_cache = torch.randn(NB, BS, KVH, hd, dtype=dtype, device=DEVICE)
    slots = torch.randperm(NB * BS, device=DEVICE)[:T]
    k_expected, v_expected = k_cache.clone(), v_cache.clone()
    kv_store.store_kv_ref(k, v, k_expected, v_expected, slots)

    kv_store.store_kv(k, v, k_cache, v_cache, slots)

    torch.testing.assert_close(k_cache, k_expected, atol=0, rtol=0)
    torch.testing.assert_close(v_cache, v_expected, atol=0, rtol=0)


def test_store_kv_rejects_int32_slots() -> None:
    k = torch.randn(2, 1, 16, device=DEVICE)
    cache = torch.zeros(2, 4, 1, 16, device=DEVICE)
    with pytest.raises(ValueError, match="slot_mapping"):
        kv_store.store_kv(k, k, cache, cache.clone(), torch.tensor([0, 1], dtype=torch.int32, device=DEVICE))


# Paged attention

# (H, KVH, hd, block_size, context lengths, partition size): GQA ratios 1, 3 and 4; contexts of one token,
# ending mid-block and on a block boundary, spanning several 64-key tiles and several split-K partitions.
DECODE_CASES = [
    (4, 4, 32, 4, [1, 9, 16], 64),
    (9, 3, 64, 16, [200, 37], 64),
    (8, 2, 16, 8, [130, 64, 5], 128),
    (6, 2, 32, 16, [70], 256),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("H", "KVH", "hd", "BS", "ctx_lens", "partition"), DECODE_CASES)
def test_paged_decode_attention_matches_reference(
    H: int, KVH: int, hd: int, BS: int, ctx_lens: list[int], partition: int, dtype: torch.dtype
) -> None:
    B = len(ctx_lens)
    dense_k = [torch.randn(n, KVH, hd, dtype=dtype, device=DEVICE) for n in ctx_lens]
    dense_v = [torch.randn(n, KVH, hd, dtype=dtype, device=DEVICE) for n in ctx_lens]
    k_cache, block_tables = _paged(dense_k, BS, num_blocks=64)
    v_cache = _copy_layout(dense_v, torch.randn_like(k_cache) * 10, block_tables, BS)
    q = torch.randn(B, H, hd, dtype=dtype, device=DEVICE)
    context_lens = torch.tensor(ctx_lens, dtype=torch.int32, device=DEVICE)
    scale = hd**-0.5

    out = paged_attention.paged_decode_attention(
        q, k_cache, v_cache, block_tables, context_lens, scale, partition_size=partition
    )

    expected = paged_attention.paged_decode_attention_ref(
        q.float(), k_cache.float(), v_cache.float(), block_tables, context_lens, scale
    )
    _close(out, expected, dtype)


# (H, KVH, hd, block_size, [(new tokens, context length)]): a fresh prompt, a chunk after a cached prefix,
# a single decode-like token, and a chunk spanning two 32-row query tiles and two 64-key tiles.
PREFILL_CASES = [
    (4, 4, 32, 4, [(5, 5)]),
    (9, 3, 64, 16, [(3, 20), (1, 7), (6, 6)]),
    (8, 2, 16, 8, [(40, 70), (2, 2)]),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("H", "KVH", "hd", "BS", "seqs"), PREFILL_CASES)
def test_paged_prefill_attention_matches_reference(
    H: int, KVH: int, hd: int, BS: int, seqs: list[tuple[int, int]], dtype: torch.dtype
) -> None:
    dense_k = [torch.randn(ctx, KVH, hd, dtype=dtype, device=DEVICE) for _, ctx in seqs]
    dense_v = [torch.randn(ctx, KVH, hd, dtype=dtype, device=DEVICE) for _, ctx in seqs]
    k_cache, block_tables = _paged(dense_k, BS, num_blocks=48)
    v_cache = _copy_layout(dense_v, torch.randn_like(k_cache) * 10, block_tables, BS)
    query_lens = torch.tensor([n for n, _ in seqs], dtype=torch.int32, device=DEVICE)
    context_lens = torch.tensor([ctx for _, ctx in seqs], dtype=torch.int32, device=DEVICE)
    q = torch.randn(int(query_lens.sum()), H, hd, dtype=dtype, device=DEVICE)
    scale = hd**-0.5

    out = paged_attention.paged_prefill_attention(q, k_cache, v_cache, block_tables, query_lens, context_lens, scale)

    expected = paged_attention.paged_prefill_attention_ref(
        q.float(), k_cache.float(), v_cache.float(), block_tables, query_lens, context_lens, scale
    )
    _close(out, expected, dtype)


def test_paged_decode_attention_rejects_int64_block_tables() -> None:
    q = torch.randn(1, 2, 16, device=DEVICE)
    cache = torch.zeros(2, 4, 1, 16, device=DEVICE)
    tables = torch.zeros(1, 1, dtype=torch.int64, device=DEVICE)
    lens = torch.ones(1, dtype=torch.int32, device=DEVICE)
    with pytest.raises(ValueError, match="block_tables"):
        paged_attention.paged_decode_attention(q, cache, cache, tables, lens, 0.25)


def _copy_layout(
    dense: list[torch.Tensor], cache: torch.Tensor, block_tables: torch.Tensor, block_size: int
) -> torch.Tensor:
    """Write dense rows into `cache` through an existing block table (V shares K's blocks)."""
    for i, rows in enumerate(dense):
        for pos in range(len(rows)):
            cache[int(block_tables[i, pos // block_size]), pos % block_size] = rows[pos]
    return cache


# Compiled for Hopper (sm_90) without a GPU: Triton lowers each kernel to PTX and runs the bundled ptxas, so a
# kernel that only the interpreter accepts fails here, in CI, not on a lent GPU machine. It needs a process
# without TRITON_INTERPRET, hence the subprocess.
COMPILE_ALL_KERNELS = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from inference.engine.kernels import kv_store, paged_attention as pa, rmsnorm, rope, silu_mul


def compile_for_hopper(kernel, pointers, constexprs, floats=()):
    kinds = {name: pointers.get(name, "fp32" if name in floats else "i32") for name in kernel.arg_names}
    kinds.update({name: "constexpr" for name in constexprs})
    triton.compile(ASTSource(kernel, kinds, constexprs), target=GPUTarget("cuda", 90, 32))


bf = "*bf16"
attn = {"q_ptr": bf, "k_cache_ptr": bf, "v_cache_ptr": bf, "block_tables_ptr": "*i32", "context_lens_ptr": "*i32"}
compile_for_hopper(
    rmsnorm._rms_norm_kernel,
    dict.fromkeys(["x_ptr", "residual_ptr", "weight_ptr", "out_ptr", "residual_out_ptr"], bf),
    {"HAS_RESIDUAL": True, "BLOCK_D": 1024},
    floats=("eps",),
)
compile_for_hopper(
    rope._rope_kernel,
    {**dict.fromkeys(["q_ptr", "k_ptr", "q_out_ptr", "k_out_ptr"], bf), "positions_ptr": "*i64",
     "cos_sin_ptr": "*fp32"},
    {"HALF": 32, "BLOCK_H": 16, "BLOCK_KVH": 4},
)
compile_for_hopper(silu_mul._silu_and_mul_kernel, {"x_ptr": bf, "out_ptr": bf}, {"BLOCK": 1024})
compile_for_hopper(
    kv_store._store_kv_kernel,
    {**dict.fromkeys(["k_ptr", "v_ptr", "k_cache_ptr", "v_cache_ptr"], bf), "slot_mapping_ptr": "*i64"},
    {"HD": 64, "BLOCK_KVH": 4},
)
for single in (True, False):
    compile_for_hopper(
        pa._decode_partition_kernel,
        {**attn, "out_ptr": bf if single else "*fp32", "m_ptr": "*fp32", "denom_ptr": "*fp32"},
        {"HD": 64, "BLOCK_G": 16, "BLOCK": 64, "PARTITION": 256, "SINGLE_PARTITION": single, "DOT_FP32": False},
        floats=("scale_log2",),
    )
compile_for_hopper(
    pa._decode_reduce_kernel,
    {"partial_ptr": "*fp32", "m_ptr": "*fp32", "denom_ptr": "*fp32", "context_lens_ptr": "*i32", "out_ptr": bf},
    {"HD": 64, "BLOCK_P": 4, "PARTITION": 256},
)
compile_for_hopper(
    pa._prefill_kernel,
    {**attn, "query_starts_ptr": "*i32", "query_lens_ptr": "*i32", "out_ptr": bf},
    {"HD": 128, "BLOCK_Q": 32, "BLOCK": 64, "DOT_FP32": False},
    floats=("scale_log2",),
)
print("all kernels compiled")
"""


def test_every_kernel_compiles_for_hopper(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # compile for real, never from an earlier run's cache
    repo_root = Path(__file__).resolve().parents[3]

    result = subprocess.run(
        [sys.executable, "-c", COMPILE_ALL_KERNELS], cwd=repo_root, env=env, capture_output=True, text=True, timeout=300
    )

    assert result.returncode == 0, result.stderr[-4000:]
    assert "all kernels compiled" in result.stdout
