"""`streamrec` command line: one sub-command per module, imported only when used.

Each sub-command module exposes `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "kafka": ("stream.broker", "control the local Apache Kafka broker (up|down|status|restart|fetch)"),
    "worker": ("stream.worker", "run the Faust worker: consume events, learn, publish top-K"),
    "produce": ("stream.producer",
                "push a log (movielens|yoochoose|jsonl|csv|parquet) into the interactions topic"),
    "replay": ("bench.replay", "replay a log offline, prequentially, through the learners (no broker)"),
    "synth": ("learners.synthlog", "write a large seeded synthetic log (CSV) and optionally its catalog"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="streamrec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == wanted:  # import only the module that runs: torch/faust are slow to import
            importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
