"""Command line, no Django needed.

    python -m inference.engine chat [--model PATH] [--temperature T] [--system TEXT] [--max-tokens N] [--device D]
    python -m inference.engine bench [--model PATH] [--device D] [--quick]

``chat`` keeps the conversation, so each turn reuses the previous ones from the prefix cache. On a terminal
it is interactive (Ctrl-C stops a reply, Ctrl-D quits, /reset forgets the conversation); with stdin from a
pipe or file it reads one user message per line and prints each reply on its own line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import TextIO

from .errors import EngineError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.engine", description="Djinn's LLM engine.")
    commands = parser.add_subparsers(dest="command", required=True)
    chat = commands.add_parser("chat", help="chat with the model in the terminal")
    chat.add_argument("--model", default=None, help="a .gguf file or HF folder (default: SmolLM2-135M-Instruct)")
    chat.add_argument("--device", default="auto", help="auto, cpu or cuda")
    chat.add_argument("--temperature", type=float, default=0.7)
    chat.add_argument("--max-tokens", type=int, default=512)
    chat.add_argument("--system", default=None, help="system prompt (default: the model's own)")
    bench = commands.add_parser("bench", help="measure load time, throughput, latency and prefix caching")
    bench.add_argument("--model", default=None)
    bench.add_argument("--device", default="auto")
    bench.add_argument("--quick", action="store_true", help="smaller workloads, for a fast look")
    args = parser.parse_args(argv)
    try:
        if args.command == "chat":
            return run_chat(args, sys.stdin, sys.stdout)
        from .bench import run_bench

        return run_bench(args.model, device=args.device, quick=args.quick, out=sys.stdout)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def run_chat(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    from .engine import Engine
    from .sampling import SamplingParams

    interactive = stdin.isatty()
    if interactive:
        print("Loading the model...", file=sys.stderr, flush=True)
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history = list(system)
    with Engine(args.model, device=args.device) as engine:
        if interactive:
            print(f"{engine.model_path.name} on {engine.device}. Ctrl-D quits, /reset starts over.", file=sys.stderr)
        for line in _user_lines(stdin, interactive):
            if line == "/reset":
                history = list(system)
                continue
            history.append({"role": "user", "content": line})
            try:
                request_id = engine.submit(history, params)
            except EngineError as exc:
                print(f"error: {exc}", file=sys.stderr)
                history.pop()
                continue
            reply = []
            try:
                for delta in engine.stream(request_id):
                    stdout.write(delta.text)
                    stdout.flush()
                    reply.append(delta.text)
                    if delta.error:
                        print(f"\nerror: {delta.error}", file=sys.stderr)
            except KeyboardInterrupt:
                pass  # leaving the stream aborts the request; keep what was said so far
            stdout.write("\n")
            stdout.flush()
            history.append({"role": "assistant", "content": "".join(reply)})
    return 0


def _user_lines(stdin: TextIO, interactive: bool) -> Iterator[str]:
    while True:
        try:
            line = input("> ") if interactive else stdin.readline()
        except (EOFError, KeyboardInterrupt):
            return
        if not interactive and not line:
            return
        line = line.strip()
        if line:
            yield line


if __name__ == "__main__":
    sys.exit(main())
