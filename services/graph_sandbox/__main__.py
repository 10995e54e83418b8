"""`python -m services.graph_sandbox --port 8090`: run the Graph sandbox."""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from shared.logging import configure_logging

from .app import SafeAccessLogger, create_app
from .config import SandboxConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local stand-in for Meta's Graph / Marketing API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
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
        latest_version=args.latest_version,
        oldest_version=args.oldest_version,
    )
    web.run_app(
        create_app(config), host=args.host, port=args.port, access_log_class=SafeAccessLogger, print=None
    )


if __name__ == "__main__":
    main()
