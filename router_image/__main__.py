"""`python -m router_image --config PATH`: serve the routes of a RouterConfig file.

One process, on purpose: the pools' in-flight counts, the queues and the autoscaler must be one
view (the local backend also owns its scorer processes). It scales out as pods instead, which
share their counts with the Lease holder (backends/kubernetes.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import http_server
from router_image import responses
from router_image.app import load
from router_image.config import ConfigError


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        line = {"time": stamp, "level": record.levelname,
                "logger": record.name, "message": record.getMessage()}
        request_id = getattr(record, "request_id", None)  # an answer the router gave itself
        if request_id is not None:
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router_image", description=__doc__)
    parser.add_argument("--config", required=True, help="RouterConfig JSON file (reloaded when it changes)")
    parser.add_argument("--host", help="override the config's host")
    parser.add_argument("--port", type=int, help="override the config's port")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLines())
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    try:
        router = load(args.config)
    except (ConfigError, OSError) as exc:
        parser.exit(2, f"{args.config}: {exc}\n")
    config = router.config
    tls = router.certificate.context if router.certificate else None
    # On SIGTERM the requests in flight may finish: the slowest may still queue and then score (under the
    # config in force then, which a reload may have changed).
    http_server.run(router, args.host or config.host, args.port if args.port is not None else config.port, tls,
                    fast=router, grace_s=lambda: router.config.drain_seconds, errors=responses.server_error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
