"""The ``lol-dreamer`` command line: a thin dispatcher over :mod:`lol_dreamer.commands`."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# Top-level commands, then the ``train …`` and ``eval …`` groups. A command is offered only when
# its module exists in ``lol_dreamer/commands``.
COMMANDS = ("demo", "collect", "ingest", "tokenize", "dream", "play", "pipeline")
GROUPS = {
    "train": ("tokenizer", "dynamics", "agent", "imagine"),
    "eval": ("tokenizer", "world_model", "agent"),
}


def _load(name: str):
    modname = f"lol_dreamer.commands.{name}"
    if importlib.util.find_spec(modname) is None:
        return None
    return importlib.import_module(modname)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lol-dreamer",
        description="DreamerV4 world models of a LoL-style lane: collect, train, dream, play, evaluate.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = _load(name)
        if mod is not None:
            mod.register(sub)
    for group, names in GROUPS.items():
        mods = [(n, _load(f"{group}_{n}")) for n in names]
        mods = [(n, m) for n, m in mods if m is not None]
        if not mods:
            continue
        gp = sub.add_parser(
            group, help=f"{group} a component ({', '.join(n.replace('_', '-') for n, _ in mods)})"
        )
        gsub = gp.add_subparsers(dest=f"{group}_what", metavar="WHAT")
        for _, m in mods:
            m.register(gsub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        result = func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"lol-dreamer {args.command}: error: {e}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
