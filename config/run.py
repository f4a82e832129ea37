"""``make run``: set everything up, then run the whole service until Ctrl-C.

Starts embedded PostgreSQL/Redis when no URL is set (via the settings), applies migrations, creates
the first admin, then runs the Procfile's processes with honcho. On Ctrl-C honcho stops its
processes and this stops the embedded servers it started, so nothing is left running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from config import embedded

    embedded_wanted = {"postgres": not os.environ.get("DATABASE_URL"), "redis": not os.environ.get("REDIS_URL")}
    before = embedded.running()

    import django
    from django.core.management import call_command

    django.setup()  # the settings start the embedded servers that are wanted and not yet running
    call_command("migrate", interactive=False, verbosity=1)
    call_command("collectstatic", interactive=False, verbosity=0)
    call_command("ensure_admin")

    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT", "8000")
    bin_dir = str(Path(sys.executable).parent)  # the Procfile's commands live in the venv
    env = dict(os.environ, HOST=host, DJINN_VAR_DIR=str(embedded.var_dir()), PYTHONUNBUFFERED="1")
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    shown = "localhost" if host in {"127.0.0.1", "0.0.0.0", "::"} else host
    print(f"\n  Djinn is starting on http://{shown}:{port}/  (Ctrl-C stops everything)\n", flush=True)

    honcho = [str(Path(bin_dir) / "honcho"), "start", "-f", "Procfile", "-d", str(BASE_DIR)]
    process = subprocess.Popen([*honcho, "--port", port], env=env, cwd=BASE_DIR)
    # Ctrl-C reaches honcho too (same process group); it stops its children, then we clean up.
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: process.send_signal(signal.SIGTERM))
    code = process.wait()

    stopped = []
    if embedded_wanted["postgres"] and not before["postgres"] and embedded.stop_database():
        stopped.append("PostgreSQL")
    if embedded_wanted["redis"] and not before["redis"] and embedded.stop_redis():
        stopped.append("Redis")
    if stopped:
        print(f"Stopped embedded {' and '.join(stopped)}; data kept in {embedded.var_dir()}.", flush=True)
    return 0 if code in (0, -signal.SIGINT, 130) else code


if __name__ == "__main__":
    sys.exit(main())
