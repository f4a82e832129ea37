"""Documents in chat: what an upload costs (read, split, store with its search vectors) and what choosing a
reply's passages costs (PostgreSQL full-text ranking plus counting tokens), for a large text file and a PDF.

    python benchmarks/documents_bench.py [--rounds 5] [--megabytes 0.9]

Makes a database of its own beside the configured one (``<name>_docbench``, dropped at the end).
The model is the bundled default (SmolLM2, 8192 tokens of context: half of it for passages), its tokenizer
only (no weights are loaded). Prints the median over rounds of each step, in milliseconds, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[1]

QUESTION = "How long does the warranty of the Zephyr kettle last?"
FACT = "The warranty of the Zephyr kettle lasts thirty-six months from the day of purchase."


def setup_django() -> None:
    sys.path.insert(0, str(BASE_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["DATABASE_POOL"] = "0"  # the database is renamed before connecting (as in api_bench.py)
    import django

    django.setup()


def manual(megabytes: float) -> str:
    paragraph = (
        "Section {n}. Descale the kettle with citric acid every month and rinse it twice with clean water before "
        "boiling again. Keep the base dry, and never immerse the heating plate in water or any other liquid."
    )
    count = int(megabytes * 1024 * 1024 / (len(paragraph) + 2))
    paragraphs = [paragraph.format(n=n) for n in range(count)]
    paragraphs.insert(count // 2, FACT)
    return "\n\n".join(paragraphs)


def pdf(pages: int) -> bytes:
    from tests.conversations.pdfs import make_pdf

    page = "\n".join(f"Line {n} of the annual report: revenue, costs and the outlook for next year." for n in range(40))
    return make_pdf([page] * pages)


def one_round(user, model, files: dict[str, bytes]) -> dict[str, float]:
    from django.db import transaction

    from conversations import documents
    from conversations.models import Conversation

    timings: dict[str, float] = {}
    with transaction.atomic():
        conversation = Conversation.objects.create(owner=user, title="bench", model=model.name)
        for name, data in files.items():
            started = time.perf_counter()
            document = documents.document_upload(user=user, name=name, data=data, language="en")
            timings[f"upload {name}"] = (time.perf_counter() - started) * 1000
            document.conversation = conversation
            document.save(update_fields=["conversation"])
        started = time.perf_counter()
        sources = documents.select_sources(
            conversation=conversation, attaching=[], question=QUESTION, model=model, prompt_tokens=60, max_tokens=None
        )
        timings["select passages"] = (time.perf_counter() - started) * 1000
        assert any(FACT in source["text"] for source in sources), "the passage with the answer was not chosen"
        timings["passages chosen"] = len(sources)
        transaction.set_rollback(True)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--megabytes", type=float, default=0.9)
    args = parser.parse_args()
    setup_django()
    from django.conf import settings
    from django.db import connection as db
    from django.db import transaction

    from accounts.models import User
    from inference.engine.paths import resolve_model_path
    from inference.models import LLMModel

    model = LLMModel(name="documents-bench", source=str(resolve_model_path(None)))
    files = {"manual.txt": manual(args.megabytes).encode(), "report.pdf": pdf(50)}
    db_settings = settings.DATABASES["default"]
    db_settings.setdefault("TEST", {})["NAME"] = f"{db_settings['NAME']}_docbench"
    original_name = db.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        with transaction.atomic():
            user = User.objects.create_user(email="documents-bench@example.invalid", password=None)
            one_round(user, model, files)  # warm-up: the tokenizer is read once per process
            rounds = [one_round(user, model, files) for _ in range(args.rounds)]
    finally:
        db.creation.destroy_test_db(original_name, verbosity=0)

    sizes = {name: f"{len(data) / 1024:.0f} KiB" for name, data in files.items()}
    print(f"documents in chat, {args.rounds} rounds (median, ms); files: {sizes}")
    medians = {step: statistics.median(r[step] for r in rounds) for step in rounds[0]}
    for step, value in medians.items():
        print(f"  {step:<22} {value:9.1f}" if step != "passages chosen" else f"  {step:<22} {value:9.0f}")
    print(json.dumps({"benchmark": "documents", "files": sizes, "medians_ms": medians, "rounds": rounds}))


if __name__ == "__main__":
    main()
