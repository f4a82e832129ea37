"""``make run``: set everything up, then run the whole service until Ctrl-C.

Starts embedded PostgreSQL/Redis when no URL is set (via the settings), applies migrations, creates
the first admin, then runs the Procfile's processes with honcho. On Ctrl-C honcho stops its
processes and this stops the embedded servers it started, so nothing is left running.

``make run`` hosts Djinn, so it runs the production settings (no debug pages, the styled error pages),
with what production needs made up for one machine where the environment does not say: a secret key
generated into ``var/``, allowed hosts from ``HOST``, plain HTTP (``DJINN_HTTPS=0``). ``make dev``
(``--dev``) is the development mode: Django's debug pages and static files served from the source.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}
_LOCAL_HOSTS = ["localhost", "127.0.0.1", "[::1]"]


def allowed_hosts(host: str) -> list[str]:
    """The host names a request may carry when the web process listens on ``host``: the loopback names, plus
    the address itself, or for a wildcard bind the machine's own names and addresses."""
    names = list(_LOCAL_HOSTS)
    if host in _WILDCARD_HOSTS:
        candidates = {socket.gethostname(), socket.getfqdn()}
        with contextlib.suppress(OSError):
            candidates.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
        candidates.update(_routed_addresses())
    else:
        candidates = {host}
    for name in sorted(candidates):
        shown = f"[{name}]" if ":" in name and not name.startswith("[") else name
        if shown and shown not in names:
            names.append(shown)
    return names


def _routed_addresses() -> set[str]:
    """This machine's address on its default route, IPv4 and IPv6 (the one a LAN reaches it by, which the host
    name often does not resolve to). A UDP socket's connect only picks the route: nothing is sent."""
    found = set()
    for family, probe in ((socket.AF_INET, ("192.0.2.1", 9)), (socket.AF_INET6, ("2001:db8::1", 9))):
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(probe)
            found.add(sock.getsockname()[0])
    return found


def served_defaults(host: str, *, dev: bool) -> dict[str, str]:
    """What the environment gets where it does not say (a value the user set always wins)."""
    from config import embedded

    # honcho kills what is still running 5 s after Ctrl-C: the inference worker ends its replies before that.
    drain = {"DJINN_INFERENCE_DRAIN_S": "3"}
    if dev:
        return {"DJANGO_DEBUG": "1", **drain}
    return {
        **drain,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": embedded.secret_key(),
        "DJANGO_ALLOWED_HOSTS": ",".join(allowed_hosts(host)),
        "DJINN_HTTPS": "0",  # uvicorn itself serves plain HTTP; behind a TLS proxy set DJINN_HTTPS=1
    }


def main(argv: list[str] | None = None) -> int:
    dev = "--dev" in (sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    host = os.environ.get("HOST", "127.0.0.1")
    for name, value in served_defaults(host, dev=dev).items():
        if not os.environ.get(name):
            os.environ[name] = value
    from config import embedded

    embedded_wanted = {"postgres": not os.environ.get("DATABASE_URL"), "redis": not os.environ.get("REDIS_URL")}
    before = embedded.running()

    import django
    from django.core.management import call_command

    django.setup()  # the settings start the embedded servers that are wanted and not yet running
    call_command("migrate", interactive=False, verbosity=1)
    call_command("collectstatic", interactive=False, verbosity=0)
    call_command("ensure_admin")

    port = os.environ.get("PORT", "8000")
    bin_dir = str(Path(sys.executable).parent)  # the Procfile's commands live in the venv
    env = dict(os.environ, HOST=host, DJINN_VAR_DIR=str(embedded.var_dir()), PYTHONUNBUFFERED="1")
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    shown = "localhost" if host in {"127.0.0.1", "0.0.0.0", "::"} else host
    if host in _WILDCARD_HOSTS and not dev:
        print(f"  Accepting requests for {os.environ['DJANGO_ALLOWED_HOSTS']}; set DJANGO_ALLOWED_HOSTS to add others.")
    mode = "development mode, debug pages on" if dev else "production settings, plain HTTP"
    print(f"\n  Djinn is starting on http://{shown}:{port}/  ({mode}; Ctrl-C stops everything)\n", flush=True)

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
