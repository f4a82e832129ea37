"""The engine on a CUDA device, where the Triton kernels run compiled, against the same checkpoints on CPU.

These need a GPU; `scripts/gpu_check.sh` runs them on a lent machine. Elsewhere each one is skipped and
pytest's summary prints why (the kernels themselves are still checked everywhere, under Triton's interpreter,
by test_kernels.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from inference.engine import Engine, SamplingParams
from inference.engine.runner import ModelRunner
from tests.inference.engine.test_model import BLOCK, LLAMA3_ROPE, PROMPT, Pager

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (compiled Triton kernels); scripts/gpu_check.sh runs it"
)

FP32_ATOL = 1e-3  # the same float32 maths in another order (cuBLAS, Triton's ieee dots) vs CPU


def load(path: Path, device: str, dtype: torch.dtype = torch.float32) -> ModelRunner:
    return ModelRunner.load(path, device=device, num_kv_blocks=64, block_size=BLOCK, dtype=dtype)


def mixed_steps(runner: ModelRunner) -> list[torch.Tensor]:
    """Logits of a scripted run: a prefill in two chunks beside a whole one, a prefix-cache hit, batched decodes."""
    pager = Pager()
    a, b, c = PROMPT, PROMPT[5:16], PROMPT[::-1][:9]
    out = [runner.execute(pager.batch([("a", a[:10]), ("b", b[:4])]))]
    out.append(runner.execute(pager.batch([("b", b[4:]), ("a", [a[10]]), ("c", c)])))
    pager.share("d", "a", 8)  # two whole blocks of a, already in the cache
    out.append(runner.execute(pager.batch([("d", [3, 77, 140, 211, 5]), ("c", [42]), ("b", [17])])))
    out.append(runner.execute(pager.batch([("a", [9]), ("b", [8]), ("c", [7]), ("d", [6])])))
    return [logits.float().cpu() for logits in out]


def test_float32_runner_on_cuda_gives_the_cpu_logits_step_by_step(tiny_llama_path: Path) -> None:
    # given the tiny model on both devices, in float32
    cpu, cuda = load(tiny_llama_path, "cpu"), load(tiny_llama_path, "cuda")
    # when the same mixed steps run on each
    expected, got = mixed_steps(cpu), mixed_steps(cuda)
    # then every row of every step agrees
    for want, have in zip(expected, got, strict=True):
        torch.testing.assert_close(have, want, atol=FP32_ATOL, rtol=0)


@pytest.mark.parametrize(
    ("arch", "overrides"),
    [("qwen2", {"tie_word_embeddings": False}), ("llama", LLAMA3_ROPE)],
    ids=["qwen2-qkv-bias", "llama3-rope-scaling"],
)
def test_model_variants_on_cuda_give_the_cpu_logits(
    make_tiny_checkpoint: Callable[..., Path], arch: str, overrides: dict
) -> None:
    path = make_tiny_checkpoint(arch, **overrides)
    for want, have in zip(mixed_steps(load(path, "cpu")), mixed_steps(load(path, "cuda")), strict=True):
        torch.testing.assert_close(have, want, atol=FP32_ATOL, rtol=0)


def test_bf16_runner_on_cuda_stays_within_bf16_rounding_of_float32(tiny_llama_path: Path) -> None:
    # given the serving dtype on the GPU
    expected = mixed_steps(load(tiny_llama_path, "cpu"))
    got = mixed_steps(load(tiny_llama_path, "cuda", torch.bfloat16))
    # then logits come back float32, within the tolerance the CPU bf16 path is held to
    for want, have in zip(expected, got, strict=True):
        assert have.dtype == torch.float32
        torch.testing.assert_close(have, want, atol=0.05, rtol=0.02)


def test_concurrent_greedy_requests_on_cuda_give_the_cpu_replies(tiny_llama_path: Path) -> None:
    # given eight prompts sharing a prefix, served concurrently by one engine per device
    greedy = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    prompts = [PROMPT[: 4 + 2 * i] + [30 + i] for i in range(8)]

    def replies(device: str) -> list[list[int]]:
        results: list[list[int]] = [[] for _ in prompts]
        with Engine(tiny_llama_path, device=device, dtype=torch.float32, num_kv_blocks=64, block_size=BLOCK) as eng:

            def one(i: int) -> None:
                results[i] = eng.generate(prompts[i], greedy).token_ids

            threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
        return results

    # when / then
    cpu, cuda = replies("cpu"), replies("cuda")
    assert all(len(reply) == 24 for reply in cuda)
    assert cuda == cpu
