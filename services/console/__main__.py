"""`python -m services.console run | add-user NAME`: the console's commands before `leadwire` lists the service."""

from __future__ import annotations

import argparse
import sys

from services.console.cli import register
from shared.logging import configure_logging


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m services.console")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["console", *sys.argv[1:]])
    configure_logging("INFO", "auto")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
