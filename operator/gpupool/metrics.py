"""The operator's Prometheus series, and the few typed calls the controllers make to feed them.

Why one module: metric names and labels are a public contract (dashboards, alerts and
docs/metrics.md depend on them), so they are defined once, here, and nowhere else creates a
series. The controllers never touch prometheus-client objects; they call the helpers below with
plain values, which keeps label names and label sets consistent and lets a test read every
series back from one registry.

The series live in their own `REGISTRY` rather than the process-global default one, so that
importing this module twice (tests) or embedding the operator never collides with other
libraries' metrics; the process and platform collectors are added to it explicitly.

Conventions (https://prometheus.io/docs/practices/naming/): the `gpupool_` prefix, base units
(seconds), `_total` on counters. Money is the exception: prices are quoted per hour in US
dollars everywhere in the project (catalogs, specs, statuses), so the cost series are
`..._usd_per_hour` rather than a per-second rate nobody reads. Label values are bounded: names
of objects and providers, and small fixed vocabularies (phases, results, operations).
"""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

if TYPE_CHECKING:
    from threading import Thread
    from wsgiref.simple_server import WSGIServer

    from gpupool.providers.base import CloudProvider, Instance, LaunchRequest, ProviderOffer

# The claim phases of the API (api: GpuNodeClaim status.phase), in lifecycle order. Every phase
# is always exported (0 when empty) so a phase that empties shows 0 instead of a stale count.
CLAIM_PHASES = ("Pending", "Launching", "Launched", "Registered", "Ready", "Terminating", "Failed")

# The cloud calls of the provider protocol (providers/base.py: CloudProvider).
PROVIDER_OPERATIONS = ("list_offers", "create", "get", "list", "delete")

# Result label of a provider call: "success", or the kind of typed provider error it raised.
# Keyed by class name so this module needs no import of the provider layer at runtime.
_ERROR_RESULTS = {
    "CapacityError": "capacity",
    "QuotaError": "quota",
    "AuthError": "auth",
    "InvalidRequestError": "invalid_request",
    "NotFoundError": "not_found",
    "TransientError": "transient",
}

# Reconciles take milliseconds to a few seconds (a cloud call); launches take minutes.
_RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_PROVIDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAUNCH_BUCKETS = (5.0, 10.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0)


def _package_version() -> str:
    try:
        return metadata.version("gpupool")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Series:
    """Every series of the operator, registered in one registry."""

    registry: CollectorRegistry
    build_info: Info
    reconcile_total: Counter
    reconcile_duration: Histogram
    provider_requests_total: Counter
    provider_request_duration: Histogram
    kube_requests_total: Counter
    provider_offers: Gauge
    nodeclaims: Gauge
    launch_to_ready: Histogram
    pool_gpus: Gauge
    pool_cost: Gauge
    model_cost: Gauge
    model_replicas: Gauge
    model_ready_replicas: Gauge


def create_series(registry: CollectorRegistry | None = None, *, runtime: bool = True) -> Series:
    """Define every series in `registry` (a new one if None); `runtime` adds process/GC/platform."""
    reg = registry if registry is not None else CollectorRegistry(auto_describe=True)
    if runtime:
        # The default collectors are bound to the global registry; make fresh ones for ours.
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)
    build_info = Info("gpupool_build", "The running gpupool operator's version.", registry=reg)
    build_info.info({"version": _package_version()})
    return Series(
        registry=reg,
        build_info=build_info,
        reconcile_total=Counter(
            "gpupool_reconcile_total",
            "Reconciles run, by controller and result (success or error).",
            ["controller", "result"],
            registry=reg,
        ),
        reconcile_duration=Histogram(
            "gpupool_reconcile_duration_seconds",
            "Wall time of one reconcile, by controller.",
            ["controller"],
            buckets=_RECONCILE_BUCKETS,
            registry=reg,
        ),
        provider_requests_total=Counter(
            "gpupool_provider_requests_total",
            "Calls to a cloud provider's API, by provider, operation and result "
            "(success, capacity, quota, auth, invalid_request, not_found, transient, error).",
            ["provider", "operation", "result"],
            registry=reg,
        ),
        provider_request_duration=Histogram(
            "gpupool_provider_request_duration_seconds",
            "Latency of calls to a cloud provider's API (retries included), by provider and operation.",
            ["provider", "operation"],
            buckets=_PROVIDER_BUCKETS,
            registry=reg,
        ),
        kube_requests_total=Counter(
            "gpupool_kube_requests_total",
            "Requests the operator's own client sent to the Kubernetes API server (kopf's watches and "
            "finalizer patches are not counted here), by verb, resource and response code class.",
            ["verb", "resource", "code"],
            registry=reg,
        ),
        provider_offers=Gauge(
            "gpupool_provider_offers",
            "Offers (instance type x region x capacity type) the provider listed at its last refresh.",
            ["provider"],
            registry=reg,
        ),
        nodeclaims=Gauge(
            "gpupool_nodeclaims",
            "GpuNodeClaims by phase.",
            ["phase"],
            registry=reg,
        ),
        launch_to_ready=Histogram(
            "gpupool_nodeclaim_launch_to_ready_seconds",
            "Time from a claim's instance launch to its Node being Ready, by provider.",
            ["provider"],
            buckets=_LAUNCH_BUCKETS,
            registry=reg,
        ),
        pool_gpus=Gauge(
            "gpupool_pool_gpus",
            "GPUs on the pool's nodes, by state (allocated to pods, or idle); their sum is the total.",
            ["pool", "state"],
            registry=reg,
        ),
        pool_cost=Gauge(
            "gpupool_pool_cost_usd_per_hour",
            "What the pool's nodes cost per hour, in US dollars.",
            ["pool"],
            registry=reg,
        ),
        model_cost=Gauge(
            "gpupool_modeldeployment_cost_usd_per_hour",
            "What the GPUs held by a ModelDeployment's pods cost per hour, in US dollars.",
            ["namespace", "modeldeployment"],
            registry=reg,
        ),
        model_replicas=Gauge(
            "gpupool_modeldeployment_replicas",
            "Replicas a ModelDeployment asks for (spec.replicas).",
            ["namespace", "modeldeployment"],
            registry=reg,
        ),
        model_ready_replicas=Gauge(
            "gpupool_modeldeployment_ready_replicas",
            "Replicas of a ModelDeployment that are Ready.",
            ["namespace", "modeldeployment"],
            registry=reg,
        ),
    )


SERIES = create_series()
REGISTRY = SERIES.registry


# --- reconciles ----------------------------------------------------------------------------


def count_kube_request(verb: str, resource: str, code: str, series: Series = SERIES) -> None:
    """One request of the operator's Kubernetes client, counted when its answer came."""
    series.kube_requests_total.labels(verb=verb, resource=resource, code=code).inc()


@contextlib.contextmanager
def reconcile_timer(controller: str, series: Series = SERIES) -> Iterator[None]:
    """Count and time one reconcile of `controller` (provider, pool, nodeclaim, modeldeployment, gc).

    Works around async code too: the time is wall time from entry to exit. An exception is
    recorded as result="error" and re-raised; kopf's retries are then counted one by one.
    """
    start = time.perf_counter()
    result = "error"
    try:
        yield
        result = "success"
    finally:
        series.reconcile_duration.labels(controller).observe(time.perf_counter() - start)
        series.reconcile_total.labels(controller, result).inc()


# --- providers -----------------------------------------------------------------------------


def provider_call_result(error: BaseException | None) -> str:
    """The `result` label of a provider call that raised `error` (None: it succeeded)."""
    if error is None:
        return "success"
    for cls in type(error).__mro__:
        if cls.__name__ in _ERROR_RESULTS:
            return _ERROR_RESULTS[cls.__name__]
    return "error"


def observe_provider_call(
    provider: str, operation: str, result: str, seconds: float, series: Series = SERIES
) -> None:
    """Record one call to a provider's API."""
    series.provider_requests_total.labels(provider, operation, result).inc()
    series.provider_request_duration.labels(provider, operation).observe(max(seconds, 0.0))


@contextlib.contextmanager
def provider_call_timer(provider: str, operation: str, series: Series = SERIES) -> Iterator[None]:
    """Time one provider call and record its result from the exception it raised, if any."""
    start = time.perf_counter()
    error: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        error = exc
        raise
    finally:
        observe_provider_call(
            provider, operation, provider_call_result(error), time.perf_counter() - start, series
        )


class MeteredProvider:
    """A CloudProvider that records every call in the provider series, then delegates.

    Wrapped around the retrying client, so one observation is one logical call as the
    controllers see it (its latency includes backoff; its result is the final outcome).
    """

    def __init__(self, inner: CloudProvider, series: Series = SERIES) -> None:
        self.inner = inner
        self.name = inner.name
        self.type = inner.type
        self._series = series

    def __repr__(self) -> str:
        return f"MeteredProvider({self.inner!r})"

    async def list_offers(self) -> builtins.list[ProviderOffer]:
        with provider_call_timer(self.name, "list_offers", self._series):
            return await self.inner.list_offers()

    async def create(self, request: LaunchRequest) -> Instance:
        with provider_call_timer(self.name, "create", self._series):
            return await self.inner.create(request)

    async def get(self, instance_id: str) -> Instance:
        with provider_call_timer(self.name, "get", self._series):
            return await self.inner.get(instance_id)

    async def list(self) -> builtins.list[Instance]:
        with provider_call_timer(self.name, "list", self._series):
            return await self.inner.list()

    async def delete(self, instance_id: str) -> None:
        with provider_call_timer(self.name, "delete", self._series):
            await self.inner.delete(instance_id)

    async def aclose(self) -> None:
        await self.inner.aclose()


def set_offers(provider: str, n: int, series: Series = SERIES) -> None:
    """The number of offers `provider` listed at its last successful refresh."""
    series.provider_offers.labels(provider).set(n)


def forget_provider(provider: str, series: Series = SERIES) -> None:
    """Drop the per-provider gauge of a deleted GpuProvider (counters stay, as counters do)."""
    with contextlib.suppress(KeyError):
        series.provider_offers.remove(provider)


# --- claims --------------------------------------------------------------------------------


def claims_by_phase(claims: list[Mapping[str, Any]]) -> dict[str, int]:
    """Count GpuNodeClaim objects by status.phase; a claim with no phase yet is Pending."""
    counts = dict.fromkeys(CLAIM_PHASES, 0)
    for claim in claims:
        phase = str((claim.get("status") or {}).get("phase") or "Pending")
        counts[phase] = counts.get(phase, 0) + 1
    return counts


def set_claims_by_phase(counts: Mapping[str, int], series: Series = SERIES) -> None:
    """Set the claim count of every phase; phases missing from `counts` are set to 0."""
    for phase in {*CLAIM_PHASES, *counts}:
        series.nodeclaims.labels(phase).set(counts.get(phase, 0))


def observe_launch_to_ready(provider: str, seconds: float, series: Series = SERIES) -> None:
    """A claim's Node went Ready `seconds` after its instance was launched."""
    series.launch_to_ready.labels(provider).observe(max(seconds, 0.0))


# --- pools and deployments ----------------------------------------------------------------


def set_pool(
    pool: str, gpus_total: int, gpus_allocated: int, cost_per_hour: float, series: Series = SERIES
) -> None:
    """The pool's GPUs (allocated and idle) and hourly cost, as in its status."""
    allocated = min(max(gpus_allocated, 0), max(gpus_total, 0))
    series.pool_gpus.labels(pool, "allocated").set(allocated)
    series.pool_gpus.labels(pool, "idle").set(max(gpus_total, 0) - allocated)
    series.pool_cost.labels(pool).set(cost_per_hour)


def forget_pool(pool: str, series: Series = SERIES) -> None:
    """Drop a deleted GpuPool's series, so dashboards stop showing it."""
    for state in ("allocated", "idle"):
        with contextlib.suppress(KeyError):
            series.pool_gpus.remove(pool, state)
    with contextlib.suppress(KeyError):
        series.pool_cost.remove(pool)


def set_model_deployment(
    namespace: str,
    name: str,
    cost_per_hour: float,
    replicas: int,
    ready_replicas: int,
    series: Series = SERIES,
) -> None:
    """A ModelDeployment's hourly cost and replicas, as in its status."""
    series.model_cost.labels(namespace, name).set(cost_per_hour)
    series.model_replicas.labels(namespace, name).set(replicas)
    series.model_ready_replicas.labels(namespace, name).set(ready_replicas)


def forget_model_deployment(namespace: str, name: str, series: Series = SERIES) -> None:
    """Drop a deleted ModelDeployment's series."""
    for gauge in (series.model_cost, series.model_replicas, series.model_ready_replicas):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)


# --- the endpoint --------------------------------------------------------------------------


def start_metrics_server(
    port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY
) -> tuple[WSGIServer, Thread]:
    """Serve /metrics on `addr:port` from a daemon thread; returns the server and its thread.

    A thread, not the operator's event loop: a scrape must answer even while the loop is
    busy, and a slow scrape must never delay a reconcile. Port 0 picks a free port
    (`server.server_port` tells which).
    """
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return server, thread
