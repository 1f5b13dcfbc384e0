"""Starts the operator: kopf, against the current kubeconfig, with gpupool's settings.

Importing `handlers` registers every handler with kopf's default registry; nothing
else is registered anywhere, so this module and the switchboard are the whole wiring.
With leader election on (`GPUPOOL_LEADER_ELECT=true`, the chart's default with several
replicas), kopf starts only once this replica holds the Lease, and the process exits the
moment it cannot keep it, so two replicas never act at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

log = logging.getLogger(__name__)


def identity() -> str:
    """This replica's name in the Lease: the pod's name in a cluster, else host and a nonce."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


async def _standby_health(port: int) -> contextlib.AsyncExitStack:
    """Answer /healthz while waiting for the lease, so the kubelet does not restart a standby."""
    from aiohttp import web

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="standby")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    stack = contextlib.AsyncExitStack()
    stack.push_async_callback(runner.cleanup)
    return stack


async def _operate(*, namespace: list[str] | None, liveness_port: int) -> int:
    import kopf

    from gpupool.controllers import handlers  # noqa: F401  (registers the handlers)
    from gpupool.controllers.leader import LeaderElector
    from gpupool.controllers.state import OperatorState
    from gpupool.settings import OperatorSettings

    settings = OperatorSettings()
    state = OperatorState.create(settings)
    memo = kopf.Memo(state=state)
    liveness = f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None
    elector = LeaderElector(state.kube.client, settings, identity()) if settings.leader_elect else None
    if elector is not None:
        standby = await _standby_health(liveness_port) if liveness_port else contextlib.AsyncExitStack()
        async with standby:
            await elector.acquire()
    operator = asyncio.ensure_future(
        kopf.operator(
            standalone=True,
            clusterwide=not namespace,
            namespaces=namespace or (),
            liveness_endpoint=liveness,
            memo=memo,
        )
    )
    if elector is None:
        await operator
        return 0
    keeper = asyncio.ensure_future(elector.keep())
    try:
        done, _ = await asyncio.wait({operator, keeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not keeper.done():
            keeper.cancel()
    if keeper in done:
        # Lost the lease: stop acting now, before a standby may start; the pod restarts.
        log.error("leadership lost; exiting")
        os._exit(1)
    await elector.release()
    return 0


def run_operator(
    *, namespace: list[str] | None, verbose: bool, liveness_port: int, metrics_port: int = 0
) -> int:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # One line per HTTP call and per timer run drowns what matters; --verbose brings them back.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpx2").setLevel(logging.WARNING)
        # kopf logs every handled watch event ("Handler 'pod_changed' succeeded.") at INFO.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if metrics_port:
        from gpupool.metrics import start_metrics_server

        start_metrics_server(metrics_port)
    return asyncio.run(_operate(namespace=namespace, liveness_port=liveness_port))
