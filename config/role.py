"""One image, several roles: ``python -m config.role ROLE [ARGS...]`` (the container's entry point, ``djinn``).

The roles are the Procfile's processes (``web``, ``inference-worker``, ``worker``, ``beat``), which ``make run``
starts together with honcho, plus ``migrate``. A role replaces this process with its command (``exec``), so
the command is the container's PID 1 and gets SIGTERM itself: uvicorn closes its connections, Celery makes a
warm shutdown (the inference worker bounded by ``DJINN_INFERENCE_DRAIN_S``, see config/celery.py), beat
stops. Extra arguments go to the end of the role's command (``migrate --check``). Anything that is not a role
runs as a command of its own (``djinn python manage.py createsuperuser``).
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
PROCFILE = BASE_DIR / "Procfile"
MIGRATE = "migrate"


def procfile_roles(path: Path = PROCFILE) -> dict[str, str]:
    """The Procfile's processes: name -> command line (shell syntax, with ``$PORT`` and ``${NAME:-default}``)."""
    roles = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, command = line.split(":", 1)
            roles[name.strip()] = command.strip()
    return roles


def roles() -> list[str]:
    return [*procfile_roles(), MIGRATE]


def role_command(role: str, args: list[str]) -> list[str]:
    """The argv that runs ``role`` (a Procfile one) in a shell that ``exec``s it, with ``args`` appended."""
    line = procfile_roles()[role]
    extra = "".join(f" {shlex.quote(arg)}" for arg in args)
    return ["/bin/sh", "-c", f"exec {line}{extra}"]


def migrate(args: list[str]) -> int:
    """``manage.py migrate --noinput ARGS``, in this process. SIGTERM (a Job deleted, a node drained) ends it
    like Ctrl-C: the migration in progress rolls back with its transaction, and the next run applies it."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    # The settings leave the statement timeout off for "manage.py migrate" (sys.argv): say it is that.
    sys.argv = ["manage.py", "migrate", "--noinput", *args]
    try:
        execute_from_command_line(sys.argv)
    except KeyboardInterrupt:
        print("migrate: stopped by a signal; the migration in progress was rolled back", file=sys.stderr)
        return 143
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(f"usage: djinn ROLE [ARGS...]   roles: {', '.join(roles())}\n       djinn COMMAND [ARGS...]")
        return 0 if argv else 2
    role, args = argv[0], argv[1:]
    if role == MIGRATE:
        return migrate(args)
    command = role_command(role, args) if role in procfile_roles() else argv
    os.chdir(BASE_DIR)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"djinn: cannot run {command[0]!r}: {exc.strerror}. Roles: {', '.join(roles())}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
