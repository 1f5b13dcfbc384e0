"""`python -m simcloud` (or the `simcloud` console script): run the simulated cloud as a process.

    simcloud --port 8788 --db /var/lib/simcloud/state.sqlite --kubeconfig ~/.kube/config --boot-delay 5

Without --kubeconfig it uses the in-cluster config (the Helm chart runs it as a Deployment), then
~/.kube/config; `--no-kube` keeps Nodes in memory (an API-only simulator, for development).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from simcloud.offers import DEFAULT_SOURCES


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="simcloud", description="A simulated GPU cloud whose instances are KWOK Nodes."
    )
    parser.add_argument("--host", default=env("SIMCLOUD_HOST", "127.0.0.1"), help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=int(env("SIMCLOUD_PORT", "8788")), help="port (default 8788)"
    )
    parser.add_argument(
        "--db", default=env("SIMCLOUD_DB", "simcloud.sqlite"), help="SQLite file holding the instances"
    )
    parser.add_argument(
        "--kubeconfig",
        default=env("SIMCLOUD_KUBECONFIG") or env("KUBECONFIG"),
        help="kubeconfig of the cluster the Nodes go to (default: in-cluster, then ~/.kube/config)",
    )
    parser.add_argument("--no-kube", action="store_true", help="keep Nodes in memory instead of a cluster")
    parser.add_argument(
        "--boot-delay",
        type=float,
        default=float(env("SIMCLOUD_BOOT_DELAY", "5")),
        help="seconds from launch until the Node registers (default 5)",
    )
    parser.add_argument(
        "--interrupt-grace",
        type=float,
        default=float(env("SIMCLOUD_INTERRUPT_GRACE", "30")),
        help="seconds from a spot interruption notice to termination (default 30)",
    )
    parser.add_argument(
        "--capacity-per-offer",
        type=int,
        default=int(env("SIMCLOUD_CAPACITY_PER_OFFER", "0")),
        help="machines of each offer that can be rented at once; more fail with insufficient-capacity (0: no limit)",
    )
    parser.add_argument("--tick", type=float, default=0.5, help="seconds between boot/terminate passes")
    parser.add_argument(
        "--sources",
        default=env("SIMCLOUD_SOURCES", ",".join(DEFAULT_SOURCES)),
        help="catalog providers whose offers simcloud sells (comma separated)",
    )
    parser.add_argument(
        "--regions",
        default=env("SIMCLOUD_REGIONS", ""),
        help="only these simcloud regions, e.g. lambda-us-east-1,runpod-CA (default: all)",
    )
    parser.add_argument(
        "--offers-csv",
        default=env("SIMCLOUD_OFFERS_CSV", ""),
        help="sell the offers of this CSV (the catalog's columns) instead of the shipped snapshot",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the fault generator (reproducible faults)"
    )
    parser.add_argument(
        "--api-key-env",
        default="SIMCLOUD_API_KEY",
        help="environment variable holding the API key clients must send (unset: no auth)",
    )
    parser.add_argument("--log-level", default=env("SIMCLOUD_LOG_LEVEL", "INFO"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    import uvicorn

    from gpupool.catalog import load_offers_csv
    from simcloud.app import create_app
    from simcloud.faults import FaultBook
    from simcloud.nodes import KubeNodeWriter, MemoryNodeWriter, NodeWriter
    from simcloud.offers import shipped_simcloud_offers, simcloud_offers
    from simcloud.service import SimCloud
    from simcloud.store import InstanceStore

    if args.offers_csv:
        offers = simcloud_offers(
            load_offers_csv(args.offers_csv), sources=_csv(args.sources), regions=_csv(args.regions)
        )
    else:
        offers = shipped_simcloud_offers(sources=_csv(args.sources), regions=_csv(args.regions))
    if not offers:
        print(f"simcloud: no offers for sources={args.sources!r} regions={args.regions!r}", file=sys.stderr)
        return 2
    nodes: NodeWriter = MemoryNodeWriter() if args.no_kube else KubeNodeWriter(args.kubeconfig)
    store = InstanceStore(args.db)
    cloud = SimCloud(
        store,
        offers,
        nodes,
        boot_delay=args.boot_delay,
        interrupt_grace=args.interrupt_grace,
        capacity_per_offer=args.capacity_per_offer,
    )
    app = create_app(
        cloud, FaultBook(args.seed), api_key=os.environ.get(args.api_key_env, ""), tick_interval=args.tick
    )
    logging.getLogger(__name__).info(
        "simcloud: %d offers, db %s, boot delay %.1fs, listening on %s:%d",
        len(offers),
        args.db,
        args.boot_delay,
        args.host,
        args.port,
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower(), access_log=False)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
