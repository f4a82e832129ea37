"""Hugging Face checkpoint folders: config.json plus one or many *.safetensors files."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .config import ModelConfig, config_from_hf
from .errors import ModelLoadError

INDEX_FILE = "model.safetensors.index.json"


def load_hf(folder: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Read ``folder`` into (config, weights by their checkpoint names), tensors as stored (usually bf16)."""
    config = config_from_hf(_read_json(folder / "config.json"))
    weights: dict[str, torch.Tensor] = {}
    for file in _weight_files(folder):
        try:
            with safe_open(file, framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    weights[name] = f.get_tensor(name)
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(f"{file} could not be read ({exc}); it may be truncated or corrupt.") from exc
    return config, weights


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{path} is missing: a Hugging Face checkpoint folder needs it.") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc}).") from exc


def _weight_files(folder: Path) -> list[Path]:
    if (folder / INDEX_FILE).exists():
        weight_map = _read_json(folder / INDEX_FILE).get("weight_map", {})
        files = [folder / name for name in dict.fromkeys(weight_map.values())]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise ModelLoadError(f"{folder}: {INDEX_FILE} lists shards that are missing: {', '.join(missing)}.")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{folder} has no *.safetensors weights (PyTorch .bin checkpoints are not supported).")
    return files
