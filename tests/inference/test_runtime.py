from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry

from inference import metrics, runtime
from inference.engine import ModelLoadError
from inference.models import LLMModel
from tests.inference.engine.conftest import write_tiny_checkpoint

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("runtime-model"), "llama", tie_word_embeddings=True)


@pytest.fixture
def model(settings, tiny_path):
    settings.DJINN_MODEL = str(tiny_path)
    runtime.shutdown_engines()  # engines other tests left in this process
    yield LLMModel.objects.get(is_default=True)
    runtime.shutdown_engines()


CHAT = [{"role": "user", "content": "Hello there"}]


def test_the_tokenizer_and_context_come_without_loading_weights(model):
    tokens = runtime.count_chat_tokens(CHAT, model)

    assert tokens == len(runtime.get_tokenizer(model).encode_chat(CHAT)) > 0
    assert runtime.context_length(model) == 512  # the checkpoint's max_position_embeddings
    assert runtime.engine_stats() == {}


def test_the_registry_can_lower_the_context(model):
    model.context_length = 100

    assert runtime.context_length(model) == 100


def test_one_engine_per_process_and_model_even_when_threads_race(model):
    engines = []
    threads = [threading.Thread(target=lambda: engines.append(runtime.get_engine(model))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len({id(engine) for engine in engines}) == 1
    assert runtime.get_engine() is engines[0]  # None: the default model
    assert runtime.get_tokenizer(model) is engines[0].tokenizer
    assert list(runtime.engine_stats()) == [model.name]


def test_shutdown_stops_the_engines_and_a_later_call_starts_afresh(model):
    first = runtime.get_engine(model)

    runtime.shutdown_engines()

    assert runtime.engine_stats() == {}
    assert runtime.get_engine(model) is not first


def test_a_missing_source_is_a_model_load_error(model):
    other = LLMModel.objects.create(name="missing", display_name="Missing", source="/nowhere/model.gguf")

    with pytest.raises(ModelLoadError):
        runtime.get_engine(other)
    with pytest.raises(ModelLoadError):
        runtime.context_length(other)


def test_engine_gauges_report_loaded_engines(model):
    runtime.get_engine(model)
    registry = CollectorRegistry()
    registry.register(metrics.EngineCollector())

    assert registry.get_sample_value("djinn_engine_running_sequences", {"model": model.name}) == 0
    assert registry.get_sample_value("djinn_engine_kv_blocks_total", {"model": model.name}) > 0


def test_finished_generations_are_counted_with_their_tokens_and_timings():
    def sample(name, labels):
        return metrics.REGISTRY.get_sample_value(name, labels) or 0

    labels = {"model": "metrics-test"}
    completed = sample("djinn_generations_finished_total", labels | {"status": "completed"})
    completion_tokens = sample("djinn_generation_tokens_total", labels | {"kind": "completion"})
    ttfts = sample("djinn_generation_ttft_seconds_count", labels)

    metrics.generation_finished(
        "metrics-test", "completed", ttft_ms=120, duration_ms=900, prompt_tokens=10, completion_tokens=5
    )

    assert sample("djinn_generations_finished_total", labels | {"status": "completed"}) == completed + 1
    assert sample("djinn_generation_tokens_total", labels | {"kind": "completion"}) == completion_tokens + 5
    assert sample("djinn_generation_ttft_seconds_count", labels) == ttfts + 1


@pytest.mark.django_db(transaction=True)
def test_the_background_warm_up_reads_the_tokenizer_before_the_first_message(llm_model, monkeypatch):
    monkeypatch.setattr(runtime, "_engines", {})  # a web process: no engine loaded
    runtime._checkpoint_infos.clear()

    runtime.warm_up_in_background().join(timeout=60)

    assert runtime._checkpoint_infos


def test_the_worker_says_loading_until_preload_has_the_default_model_and_marks_the_load(model, settings, monkeypatch):
    import json
    import socket
    import urllib.error
    import urllib.request

    from inference import streams

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.DJINN_WORKER_METRICS_PORT = port
    monkeypatch.setattr(runtime, "_preload_state", {"model": None, "loaded": False, "error": None})
    marked_during_load = []
    real_engine = runtime.Engine

    def engine(*args, **kwargs):
        marked_during_load.append(streams.get_redis().exists(streams.model_loading_key(model.name)))
        return real_engine(*args, **kwargs)

    monkeypatch.setattr(runtime, "Engine", engine)

    def get(path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    metrics.start_worker_metrics_server()
    before = get("/readyz")
    runtime.preload()
    after = get("/readyz")

    assert before[0] == 503 and json.loads(before[1])["loaded"] is False
    assert after[0] == 200 and json.loads(after[1]) == {"status": "ok", "model": model.name, "loaded": True}
    assert get("/healthz")[0] == 200
    assert "djinn_generations_started_total" in get("/metrics")[1]
    assert marked_during_load == [1]
    assert not streams.get_redis().exists(streams.model_loading_key(model.name))  # unmarked once loaded
