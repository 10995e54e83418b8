"""`python -m services.graph_sandbox --port 8090`: run the Graph sandbox (default port: SANDBOX_PORT, else 8090)."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys

from aiohttp import web

from shared.logging import configure_logging

from .app import SafeAccessLogger, create_app
from .config import SandboxConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local stand-in for Meta's Graph / Marketing API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SANDBOX_PORT") or 8090))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--ads", type=int, default=20)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--app-id", default=SandboxConfig.app_id)
    parser.add_argument(
        "--app-secret", default=SandboxConfig.app_secret, help="verifies appsecret_proof and signs webhooks"
    )
    parser.add_argument("--latest-version", default=SandboxConfig.latest_version, help="current Marketing API version")
    parser.add_argument(
        "--oldest-version", default=SandboxConfig.oldest_version, help="oldest Marketing API version still served"
    )
    parser.add_argument("--public-url", default=None, help="base URL for paging links (default: request host)")
    parser.add_argument(
        "--now",
        default=os.environ.get("SANDBOX_NOW") or None,
        help="the sandbox clock: HH:MM today in the account's time zone, or an ISO 8601 instant (env SANDBOX_NOW)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request (tokens redacted)")
    args = parser.parse_args(argv)
    configure_logging("INFO")
    if not args.access_log:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    config = SandboxConfig(
        app_id=args.app_id,
        app_secret=args.app_secret,
        seed=args.seed,
        ads=args.ads,
        days=args.days,
        public_url=args.public_url,
        now=args.now,
        latest_version=args.latest_version,
        oldest_version=args.oldest_version,
    )
    try:
        web.run_app(
            create_app(config), host=args.host, port=args.port, access_log_class=SafeAccessLogger, print=None
        )
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        sys.stderr.write(
            f"graph_sandbox: port {args.port} on {args.host} is already in use: free it or set SANDBOX_PORT (--port)\n"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
