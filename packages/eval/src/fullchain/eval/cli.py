"""`fullchain eval compare <artifact> <artifact> ...`: one table across eval artifacts, refused
(exit 2, with the differing field) when results are not comparable."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fullchain.eval.report import NotComparable, compare


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fullchain eval")
    commands = parser.add_subparsers(dest="command", required=True)
    compare_parser = commands.add_parser("compare", help="one table across eval artifacts")
    compare_parser.add_argument("artifacts", nargs="+", type=Path)
    args = parser.parse_args(argv)
    try:
        print(compare(args.artifacts))
    except (NotComparable, FileNotFoundError) as exc:
        print(f"fullchain eval compare: {exc}", file=sys.stderr)
        return 2
    return 0
