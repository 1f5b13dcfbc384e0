"""The `gpupool` command: one entry point, one subcommand per job.

Each subcommand lives with the code it drives and is imported only when chosen, so
`gpupool plan` starts without loading kopf or the Kubernetes client.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _run(args: argparse.Namespace) -> int:
    import os

    from gpupool.controllers.runner import run_operator

    if args.leader_elect:
        os.environ["GPUPOOL_LEADER_ELECT"] = "true"
    return run_operator(
        namespace=args.namespace,
        verbose=args.verbose,
        liveness_port=args.liveness_port,
        metrics_port=args.metrics_port,
    )


def _crds(args: argparse.Namespace) -> int:
    from gpupool.api.crdgen import write_crds

    return write_crds(args.out, check=args.check)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpupool", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the operator against the current kubeconfig")
    run.add_argument(
        "--namespace",
        action="append",
        default=None,
        help="watch only this namespace for ModelDeployments (repeatable); default: all",
    )
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.add_argument("--liveness-port", type=int, default=8081, help="port of the /healthz probe; 0 disables")
    run.add_argument("--metrics-port", type=int, default=8080, help="port of Prometheus /metrics; 0 disables")
    run.add_argument(
        "--leader-elect",
        action="store_true",
        help="run as one of several replicas: act only while holding the Lease GPUPOOL_LEASE_NAMESPACE/"
        "GPUPOOL_LEASE_NAME (same as GPUPOOL_LEADER_ELECT=true); every other setting is a GPUPOOL_* "
        "variable, see gpupool/settings.py",
    )
    run.set_defaults(func=_run)

    crds = sub.add_parser("crds", help="write the CRDs generated from the API models")
    crds.add_argument("--out", default="crds", help="directory to write into (default: crds)")
    crds.add_argument("--check", action="store_true", help="fail if the files there are stale; write nothing")
    crds.set_defaults(func=_crds)

    from gpupool.plan_cli import add_offers_command, add_plan_command

    add_plan_command(sub)
    add_offers_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
