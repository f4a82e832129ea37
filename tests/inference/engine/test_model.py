"""The model runner against Hugging Face transformers on tiny random checkpoints (no mocks)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from inference.engine.batch import Batch
from inference.engine.errors import ModelLoadError
from inference.engine.runner import ModelRunner, cache_bytes_per_block

BLOCK = 4  # small blocks so short prompts span several and prefix hits are partial
ATOL = 2e-4  # float32 engine vs float32 transformers


class Pager:
    """Hands out KV blocks per sequence and builds Batches the way the scheduler does."""

    def __init__(self, block_size: int = BLOCK) -> None:
        self.block_size = block_size
        self.next_block = 0
        self.tables: dict[str, list[int]] = {}
        self.lens: dict[str, int] = {}

    def share(self, name: str, source: str, num_tokens: int) -> None:
        """Start ``name`` with the first ``num_tokens`` (whole blocks) of ``source`` already cached."""
        self.tables[name] = self.tables[source][: num_tokens // self.block_size]
        self.lens[name] = num_tokens

    def batch(self, steps: list[tuple[str, list[int]]]) -> Batch:
        ids, positions, slots, qlens, ctx, tables = [], [], [], [], [], []
        for name, tokens in steps:
            table = self.tables.setdefault(name, [])
            start = self.lens.get(name, 0)
            for pos in range(start, start + len(tokens)):
                if pos // self.block_size == len(table):
                    table.append(self.next_block)
                    self.next_block += 1
                slots.append(table[pos // self.block_size] * self.block_size + pos % self.block_size)
                positions.append(pos)
            ids += tokens
            self.lens[name] = start + len(tokens)
            qlens.append(len(tokens))
            ctx.append(self.lens[name])
            tables.append(list(table))
        return Batch(ids, positions, qlens, ctx, tables, slots)


def hf_logits(path: Path, tokens: list[int]) -> torch.Tensor:
    """(T, V) float32 logits of transformers' own implementation for one sequence."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].float()


def load(path: Path, dtype: torch.dtype = torch.float32) -> ModelRunner:
    return ModelRunner.load(path, num_kv_blocks=64, block_size=BLOCK, dtype=dtype)


LLAMA3_ROPE = {
    "tie_word_embeddings": True,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    },
}
PROMPT = [1, 67, 309, 324, 277, 201, 45, 88, 120, 7, 300, 2, 9, 410, 55, 13, 96, 250]


def test_prefill_then_decode_match_transformers_step_by_step(tiny_llama_path: Path) -> None:
    # given a prompt prefilled in one step, then 5 tokens decoded one at a time
    runner, pager = load(tiny_llama_path), Pager()
    reference = hf_logits(tiny_llama_path, PROMPT)
    # when
    prefill = runner.execute(pager.batch([("a", PROMPT[:13])]))
    decodes = [runner.execute(pager.batch([("a", [t])])) for t in PROMPT[13:]]
    # then
    torch.testing.assert_close(prefill[0], reference[12], atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.cat(decodes), reference[13:], atol=ATOL, rtol=0)


def test_a_mixed_batch_of_decodes_and_prefill_chunks_in_any_order_matches_transformers(
    tiny_llama_path: Path,
) -> None:
    # given three sequences of different lengths: one decoding, two prefilling (one in two chunks)
    runner, pager = load(tiny_llama_path), Pager()
    a, b, c = PROMPT, PROMPT[5:16], PROMPT[::-1][:9]
    runner.execute(pager.batch([("a", a[:10]), ("b", b[:4])]))
    # when the step lists a prefill chunk first, then a decode, then a whole prefill
    logits = runner.execute(pager.batch([("b", b[4:]), ("a", [a[10]]), ("c", c)]))
    # then each row is its own sequence's next-token logits
    assert logits.shape == (3, runner.config.vocab_size)
    torch.testing.assert_close(logits[0], hf_logits(tiny_llama_path, b)[-1], atol=ATOL, rtol=0)
    torch.testing.assert_close(logits[1], hf_logits(tiny_llama_path, a[:11])[-1], atol=ATOL, rtol=0)
    torch.testing.assert_close(logits[2], hf_logits(tiny_llama_path, c)[-1], atol=ATOL, rtol=0)


def test_a_prefix_cache_hit_reuses_filled_blocks_and_matches_transformers(tiny_llama_path: Path) -> None:
    # given sequence "a" fully prefilled, and "b" sharing a's first 12 tokens (3 whole blocks)
    runner, pager = load(tiny_llama_path), Pager()
    runner.execute(pager.batch([("a", PROMPT)]))
    b = PROMPT[:12] + [3, 77, 140, 211, 5]
    pager.share("b", "a", 12)
    # when only b's new tokens are computed, attending to a's cached blocks, then b decodes once
    prefill = runner.execute(pager.batch([("b", b[12:])]))
    decode = runner.execute(pager.batch([("b", [42])]))
    # then
    reference = hf_logits(tiny_llama_path, [*b, 42])
    assert pager.tables["b"][:3] == pager.tables["a"][:3]
    torch.testing.assert_close(prefill[0], reference[-2], atol=ATOL, rtol=0)
    torch.testing.assert_close(decode[0], reference[-1], atol=ATOL, rtol=0)


def test_several_decodes_in_one_step_match_transformers(tiny_llama_path: Path) -> None:
    # given two sequences of different lengths, both prefilled
    runner, pager = load(tiny_llama_path), Pager()
    a, b = PROMPT[:7], PROMPT[3:17]
    runner.execute(pager.batch([("a", a), ("b", b)]))
    # when both decode in one step
    logits = runner.execute(pager.batch([("a", [11]), ("b", [12])]))
    # then
    torch.testing.assert_close(logits[0], hf_logits(tiny_llama_path, [*a, 11])[-1], atol=ATOL, rtol=0)
    torch.testing.assert_close(logits[1], hf_logits(tiny_llama_path, [*b, 12])[-1], atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("arch", "overrides"),
    [
        ("qwen2", {"tie_word_embeddings": False}),  # qkv bias
        ("llama", {"tie_word_embeddings": False}),
        ("llama", LLAMA3_ROPE),
    ],
    ids=["qwen2-qkv-bias", "llama-untied", "llama3-rope-scaling"],
)
def test_model_variants_match_transformers(
    make_tiny_checkpoint: Callable[..., Path], arch: str, overrides: dict
) -> None:
    # given a variant checkpoint
    path = make_tiny_checkpoint(arch, **overrides)
    runner, pager = load(path), Pager()
    reference = hf_logits(path, PROMPT)
    # when
    prefill = runner.execute(pager.batch([("a", PROMPT[:-1])]))
    decode = runner.execute(pager.batch([("a", PROMPT[-1:])]))
    # then
    torch.testing.assert_close(prefill[0], reference[-2], atol=ATOL, rtol=0)
    torch.testing.assert_close(decode[0], reference[-1], atol=ATOL, rtol=0)


def test_config_reads_qwen2_bias_tying_and_llama3_rope_scaling(
    tiny_qwen2_path: Path, make_tiny_checkpoint: Callable[..., Path]
) -> None:
    # given
    llama3 = make_tiny_checkpoint("llama", **LLAMA3_ROPE)
    # when
    qwen, llama = load(tiny_qwen2_path).config, load(llama3).config
    # then
    assert (qwen.arch, qwen.qkv_bias, qwen.tie_word_embeddings) == ("qwen2", True, False)
    assert (qwen.num_heads, qwen.num_kv_heads, qwen.head_dim) == (4, 2, 16)
    assert llama.rope_scaling == LLAMA3_ROPE["rope_scaling"]
    assert llama.rope_theta == 500000.0
    assert llama.eos_token_ids == [2]


def test_bf16_engine_stays_close_to_float32_transformers(tiny_llama_path: Path) -> None:
    # given the default bf16 activations
    runner, pager = load(tiny_llama_path, dtype=torch.bfloat16), Pager()
    reference = hf_logits(tiny_llama_path, PROMPT)
    # when
    prefill = runner.execute(pager.batch([("a", PROMPT[:-1])]))
    decode = runner.execute(pager.batch([("a", PROMPT[-1:])]))
    # then logits are float32 and within bf16 rounding of the reference
    assert prefill.dtype == torch.float32
    torch.testing.assert_close(prefill[0], reference[-2], atol=0.05, rtol=0.02)
    torch.testing.assert_close(decode[0], reference[-1], atol=0.05, rtol=0.02)


def test_a_sharded_checkpoint_gives_the_same_logits(tiny_llama_path: Path, tmp_path: Path) -> None:
    # given the tiny model saved in several safetensors shards with an index
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.float32)
    model.save_pretrained(tmp_path, max_shard_size="40KB")
    shutil.copy(tiny_llama_path / "tokenizer.json", tmp_path)
    # when
    sharded = load(tmp_path).execute(Pager().batch([("a", PROMPT)]))
    single = load(tiny_llama_path).execute(Pager().batch([("a", PROMPT)]))
    # then
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    assert (tmp_path / "model.safetensors.index.json").exists()
    torch.testing.assert_close(sharded, single, atol=1e-6, rtol=0)


def test_cache_is_sized_from_bytes_and_bounds_max_context(tiny_llama_path: Path) -> None:
    # given the bytes of 10 blocks of 16 tokens
    config = load(tiny_llama_path).config
    ten_blocks = 10 * cache_bytes_per_block(config, 16, torch.bfloat16)
    # when
    runner = ModelRunner.load(tiny_llama_path, kv_cache_bytes=ten_blocks)
    # then
    assert (runner.num_kv_blocks, runner.block_size, runner.max_context) == (10, 16, 160)
    assert runner.k_cache.shape == (2, 10, 16, 2, 16)


def test_default_cache_holds_the_model_context(tiny_llama_path: Path) -> None:
    # when
    runner = ModelRunner.load(tiny_llama_path)
    # then the tiny model's whole context (512) fits many times over
    assert runner.max_context == 512
    assert runner.num_kv_blocks * runner.block_size >= 64 * 512


def test_missing_path_raises_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        ModelRunner.load(tmp_path / "nope.gguf")


def test_folder_without_config_raises_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"config\.json is missing"):
        ModelRunner.load(tmp_path)


def test_unknown_architecture_raises_model_load_error(tiny_llama_path: Path, tmp_path: Path) -> None:
    # given a checkpoint whose config names an architecture the engine does not run
    shutil.copytree(tiny_llama_path, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    # then
    with pytest.raises(ModelLoadError, match="Unsupported model architecture 'gpt2'"):
        ModelRunner.load(tmp_path / "m")


def test_truncated_safetensors_raises_model_load_error(tiny_llama_path: Path, tmp_path: Path) -> None:
    # given a checkpoint whose weights file was cut short
    shutil.copytree(tiny_llama_path, tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    # then
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        ModelRunner.load(tmp_path / "m")
