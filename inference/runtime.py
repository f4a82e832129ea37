"""The only door from the rest of Djinn to the engine.

A process holds at most one Engine per model, created on first use and shared by every thread (the
inference worker runs its tasks as threads, so one engine batches them all). The web process never
loads weights: it only needs a model's tokenizer and context length, to refuse a prompt that cannot fit
before anything is queued.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from gguf import GGUFReader

from inference import metrics, streams
from inference.engine import Engine, ModelLoadError, Tokenizer, load_tokenizer, resolve_model_path, tokenizer_from_gguf
from inference.faults import retrying_db
from inference.models import LLMModel
from inference.registry import model_get, model_source

logger = logging.getLogger(__name__)

_lock = threading.Lock()
# Keyed by (name, source): after an admin points a model at new weights, the next request loads them;
# the engine with the old weights lives on for the replies it is still producing.
_engines: dict[tuple[str, str], Engine] = {}
_checkpoint_infos: dict[str, tuple[Tokenizer, int]] = {}
# What preload() did: the default model's name, whether it is loaded, why not.
_preload_state: dict[str, Any] = {"model": None, "loaded": False, "error": None}
# Set when the worker has been told to stop (SIGTERM): no engine is loaded any more.
_stopping = threading.Event()


def get_engine(model: LLMModel | None = None) -> Engine:
    """This process's engine for ``model`` (None: the default model), loading it on first use.

    Raises ModelLoadError when the weights cannot be loaded, LLMModel.DoesNotExist when there is no model.
    """
    model = model or model_get(None)
    key = (model.name, model_source(model))
    engine = _engines.get(key)
    if engine is None:
        with _lock:
            engine = _engines.get(key)
            if engine is None and _stopping.is_set():
                raise ModelLoadError("This inference worker is shutting down.")
            if engine is None:
                path = resolve_model_path(key[1] or None)
                logger.info("Loading model %s from %s", model.name, path, extra={"model": model.name})
                started = time.monotonic()
                with streams.model_loading(model.name):  # replies waiting on it say "loading the model"
                    engine = Engine(path, device=settings.DJINN_DEVICE)
                engine.on_step = metrics.step_observer(model.name)
                _engines[key] = engine
                took = time.monotonic() - started
                metrics.model_loaded(model.name, took)
                logger.info("Loaded model %s in %.1f s", model.name, took, extra={"model": model.name})
    return engine


def readiness() -> tuple[bool, dict[str, Any]]:
    """Whether this inference worker is ready to take replies: the default model loaded (preload). For its
    /readyz (inference.metrics), so an orchestrator sends it no traffic while it loads."""
    if _preload_state["loaded"]:
        return True, {"model": _preload_state["model"], "loaded": True}
    return False, {"model": _preload_state["model"], "loaded": False, "error": _preload_state["error"]}


def preload() -> None:
    """Load the default model now, before the inference worker takes its first reply (which would otherwise
    wait for the load). Best effort: if it cannot load yet (no migrations, the database away), the first
    reply loads it instead, heart-beating meanwhile."""
    try:
        model = retrying_db(lambda: model_get(None), deadline_s=settings.DJINN_DB_RETRY_S, what="Reading the model")
        _preload_state["model"] = model.name
        get_engine(model)
        _preload_state.update(loaded=True, error=None)
    except Exception as exc:  # best effort, whatever stops it: the first reply does the work instead
        _preload_state["error"] = str(exc)
        logger.warning("The model was not loaded at start: %s", exc)
    finally:
        close_old_connections()


def get_tokenizer(model: LLMModel | None = None) -> Tokenizer:
    """The model's tokenizer, without loading its weights (or the loaded engine's own)."""
    model = model or model_get(None)
    source = model_source(model)
    engine = _engines.get((model.name, source))
    if engine is not None:
        return engine.tokenizer
    return _checkpoint_info(source)[0]


def context_length(model: LLMModel | None = None) -> int:
    """Tokens a prompt plus its reply may span: the smallest of the registry's limit (when set), the
    checkpoint's own, and, where this process has the engine loaded, its KV cache's capacity."""
    model = model or model_get(None)
    source = model_source(model)
    engine = _engines.get((model.name, source))
    if engine is not None:
        limits = [engine.config.max_position_embeddings, engine.max_model_len]
    else:
        limits = [_checkpoint_info(source)[1]]
    if model.context_length:
        limits.append(model.context_length)
    return min(limits)


def warm_up(model: LLMModel | None = None) -> None:
    """Read the model's tokenizer and context length now rather than on the first message (a GGUF file
    takes seconds to parse). For a web process to call at start, in a background thread."""
    get_tokenizer(model)


def warm_up_in_background() -> threading.Thread:
    """Start :func:`warm_up` in a daemon thread (the web process calls this as it starts). Best effort:
    if it cannot run yet (no migrations, no model), the first message does the work instead."""

    def run() -> None:
        try:
            warm_up()
        except Exception as exc:  # best effort, whatever stops it: the first message does the work instead
            logger.warning("Tokenizer warm-up skipped: %s", exc)
        finally:
            close_old_connections()

    thread = threading.Thread(target=run, name="djinn-warm-up", daemon=True)
    thread.start()
    return thread


def count_chat_tokens(
    messages: Sequence[Mapping[str, Any]], model: LLMModel | None = None, *, continue_final_message: bool = False
) -> int:
    """Prompt tokens of ``messages`` rendered with the model's chat template (generation prompt included;
    ``continue_final_message``: the last one is a reply to write on, see Tokenizer.encode_chat)."""
    return len(get_tokenizer(model).encode_chat(messages, continue_final_message=continue_final_message))


def engine_stats() -> dict[str, dict[str, Any]]:
    """Each loaded engine's stats, by model name."""
    return {name: engine.stats() for (name, _source), engine in list(_engines.items())}


def stopping() -> bool:
    """Whether this worker has been told to stop (stop_after): a reply it has not started is not its to take."""
    return _stopping.is_set()


def stop_after(drain_s: float) -> threading.Thread:
    """The worker was told to stop (SIGTERM, Celery's warm shutdown): it takes no new reply, and the replies in
    progress have ``drain_s`` seconds to finish. Then every engine stops, and the replies still being written
    end as interrupted (their text so far kept, the reason given), so none is left running when the
    orchestrator's grace period runs out. The Celery worker exits as soon as its last task returns."""
    _stopping.set()
    running = sum(stats.get("running", 0) + stats.get("waiting", 0) for stats in engine_stats().values())
    logger.info("Shutting down: %d replies in progress get %.0f s to finish", running, drain_s)

    def run() -> None:
        time.sleep(drain_s)  # the process has usually exited by then
        logger.warning("Shutting down: the replies still in progress after %.0f s are interrupted", drain_s)
        shutdown_engines()

    thread = threading.Thread(target=run, name="djinn-drain", daemon=True)
    thread.start()
    return thread


def shutdown_engines() -> None:
    """Stop every engine of this process (Celery's worker_shutdown); unfinished requests end "abort"."""
    with _lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.shutdown()


def _checkpoint_info(source: str) -> tuple[Tokenizer, int]:
    """(tokenizer, max_position_embeddings) of a checkpoint, read once per process."""
    info = _checkpoint_infos.get(source)
    if info is None:
        with _lock:
            info = _checkpoint_infos.get(source) or _read_checkpoint_info(resolve_model_path(source or None))
            _checkpoint_infos[source] = info
    return info


def _read_checkpoint_info(path: Path) -> tuple[Tokenizer, int]:
    """The engine's loaders read the same keys, with the same 2048 fallback. A GGUF file is parsed once
    for both (parsing is the slow part)."""
    try:
        if path.is_dir():
            config = json.loads((path / "config.json").read_text())
            return load_tokenizer(path), int(config.get("max_position_embeddings", 2048))
        reader = GGUFReader(path)
        arch = reader.fields["general.architecture"].contents()
        field = reader.fields.get(f"{arch}.context_length")
        return tokenizer_from_gguf(reader, origin=str(path)), int(field.contents()) if field is not None else 2048
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"Could not read the tokenizer and context length of {path}: {exc}") from exc
