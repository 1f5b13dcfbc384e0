"""Starts the operator: kopf, against the current kubeconfig, with gpupool's settings.

Importing `handlers` registers every handler with kopf's default registry; nothing
else is registered anywhere, so this module and the switchboard are the whole wiring.
"""

from __future__ import annotations

import logging
import os
import random


def _drop_routine_success(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not (message.startswith("Timer ") and message.endswith(" succeeded."))


def run_operator(
    *,
    namespace: list[str] | None,
    verbose: bool,
    liveness_port: int,
    metrics_port: int = 0,
    peering: str | None = None,
) -> int:
    import kopf

    from gpupool.controllers import handlers  # noqa: F401  (registers the handlers)

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # One line per HTTP call and per timer run drowns what matters; --verbose brings them back.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("kopf.objects").addFilter(_drop_routine_success)
    liveness = f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None
    if metrics_port:
        from gpupool.metrics import start_metrics_server

        start_metrics_server(metrics_port)
    kopf.run(
        # Standalone unless peering is asked for: then the replica with the highest priority
        # works and the others wait, so two never reconcile the same object at once.
        standalone=peering is None,
        peering_name=peering,
        # Equal priorities would leave replicas in a stand-off; a random one breaks the tie.
        priority=int(os.environ.get("GPUPOOL_PEERING_PRIORITY") or random.randint(1, 1_000_000)),
        clusterwide=not namespace,
        namespaces=namespace or (),
        liveness_endpoint=liveness,
    )
    return 0
