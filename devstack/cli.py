"""Command line of the local stack."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from common.settings import load_environment
from devstack.run import StackOptions, run_stack

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xray-dev", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start the whole system locally")
    run.add_argument("--s3", action="store_true", help="use a local S3 emulator (moto server)")
    run.add_argument(
        "--port", type=int, default=None, help="gateway port (default: API_PORT or 8080)"
    )
    run.add_argument("--rest-port", type=int, default=8501, help="model server REST port")
    run.add_argument("--grpc-port", type=int, default=8500, help="model server gRPC port")
    run.add_argument(
        "--epochs", type=int, default=15, help="epochs of the first training run (default 15)"
    )
    arguments = parser.parse_args(argv)
    api_port = arguments.port or int(load_environment().get("API_PORT") or 8080)
    options = StackOptions(
        root=Path.cwd(),
        s3=arguments.s3,
        api_port=api_port,
        rest_port=arguments.rest_port,
        grpc_port=arguments.grpc_port,
        train_epochs=arguments.epochs,
    )
    return run_stack(options)
