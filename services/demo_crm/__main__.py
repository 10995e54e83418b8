"""`python -m services.demo_crm --port 8091 --secret S`: the demo CRM `make up` sends leads to."""

from __future__ import annotations

import argparse
import os

from aiohttp import web

from .app import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A stand-in CRM for the demo: receives leadwire's lead webhook")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--secret", default=os.environ.get("CRM_WEBHOOK_SECRET", ""), help="env CRM_WEBHOOK_SECRET")
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("a shared secret is required (--secret or CRM_WEBHOOK_SECRET)")
    web.run_app(create_app(args.secret), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
