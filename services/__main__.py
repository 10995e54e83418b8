"""`leadwire` (or `python -m services`): the command line, with every service of `services/registry.py`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from services.registry import SERVICES
from shared import cli


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(SERVICES, argv, command=(sys.executable, "-m", "services"))


if __name__ == "__main__":
    sys.exit(main())
