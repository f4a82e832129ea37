"""The fault suite: ``python -m chaos [--short] [--only 1,4,...] [--keep-logs]`` (``make chaos``).

It starts Djinn's real processes on loopback (chaos.stack: uvicorn, two inference workers, the default worker,
beat, a scratch PostgreSQL database and a Redis of its own, with TCP proxies in front of both), runs every
scenario (chaos.scenarios), prints one line per scenario with its figures, and exits 1 if any scenario found a
violation (2 if the stack itself could not be set up). ``--short`` is the form the test suite runs: every
scenario, with fewer clients and shorter waits. Logs go to a temporary folder, kept when something failed.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parents[1]
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from benchmarks.serving_stack import StackError  # noqa: E402
from chaos.stack import ChaosStack  # noqa: E402

SCENARIOS = [
    "cross_talk",
    "worker_kill",
    "redis_restart",
    "postgres_outage",
    "web_restart",
    "slow_readers",
    "hostile_input",
    "fuzzing",
    "hardening",
]
RUN_TIMEOUT_S = 1800


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="fewer clients and shorter waits (the test suite's form)")
    parser.add_argument("--only", default="", help="comma-separated scenario numbers (1-9), default all")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs even when all is well")
    args = parser.parse_args()
    chosen = [SCENARIOS[int(n) - 1] for n in args.only.split(",") if n.strip()] or SCENARIOS

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGALRM, _deadline)
    signal.alarm(RUN_TIMEOUT_S)
    logs = Path(tempfile.mkdtemp(prefix="djinn-chaos-"))
    stack = ChaosStack(logs)
    results = []
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(stack.stop)
            model_path = _chat_model(logs)
            _log(f"starting the stack (logs in {logs})")
            stack.start(model_path)
            suite = _suite(stack, short=args.short)
            _log(f"stack up in {time.monotonic() - started:.0f} s; running {len(chosen)} scenarios")
            from chaos import scenarios

            # Hardening last: it checks what every other scenario left in the database and the logs.
            for name in chosen:
                results.append(_run(getattr(scenarios, name), suite, model_path))
                print(results[-1].line(), flush=True)
    except StackError as exc:
        print(f"chaos: the stack did not come up: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"chaos: {exc or 'interrupted'}; logs in {logs}", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
    failed = [result for result in results if result.violations]
    print(
        f"chaos: {len(results) - len(failed)} of {len(results)} scenarios kept every promise "
        f"in {time.monotonic() - started:.0f} s" + (f"; logs in {logs}" if failed or args.keep_logs else "")
    )
    if not failed and not args.keep_logs:
        shutil.rmtree(logs, ignore_errors=True)
    return 1 if failed else 0


def _run(scenario: Any, suite: Any, model_path: Path) -> Any:
    from chaos.scenarios import Result

    started = time.monotonic()
    try:
        result = scenario(suite, model_path) if scenario.__name__ == "hostile_input" else scenario(suite)
    except Exception as exc:  # a scenario that crashed is a failed scenario, with its traceback to read
        result = Result(scenario.__name__)
        result.violations.append(f"the scenario crashed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    finally:
        from django.db import connections

        connections.close_all()
    result.seconds = time.monotonic() - started
    return result


def _chat_model(logs: Path) -> Path:
    from tests.inference.engine.conftest import write_chat_model

    # A long context, so that an API completion can run for longer than its reader's lease takes to lapse.
    return write_chat_model(logs / "model", max_position_embeddings=16384)


def _suite(stack: ChaosStack, *, short: bool) -> Any:
    """The users (Django is set up by the stack, on its scratch database and Redis)."""
    from django.test import Client

    from accounts import services as account_services
    from accounts.billing import services as billing
    from accounts.models import User
    from chaos.scenarios import Account, Suite

    accounts = []
    passwords = []
    unlimited = billing.plan_without_limits(slug="chaos", name="Chaos (no limits)")
    for index in range(30 if not short else 8):
        password = f"chaos-{secrets.token_urlsafe(12)}"
        user = User.objects.create_user(
            email=f"chaos{index}@example.com", password=password, display_name=f"User {index}"
        )
        browser = Client()
        browser.force_login(user)
        # The fault suite is about faults, not plans: its users are on a plan without limits.
        billing.subscription_comp(user=user, plan=unlimited)
        _key_row, key = account_services.api_key_create(user=user, name="chaos")
        accounts.append(
            Account(index, user.pk, user.email, password, f"sessionid={browser.cookies['sessionid'].value}", key)
        )
        passwords.append(password)
    suite = Suite(stack=stack, accounts=accounts, short=short)
    suite.secrets_in_clear = [account.key for account in accounts] + passwords
    return suite


def _deadline(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"the run took longer than {RUN_TIMEOUT_S} s")


def _log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
