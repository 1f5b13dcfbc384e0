"""The operator's metrics: names, labels and values as a scrape shows them.

Each test builds its own registry with `create_series`, feeds it through the same helpers the
controllers call, and reads it back through prometheus-client's text exposition, so a renamed
series, a lost label or a wrong unit fails here before a dashboard goes blank.
"""

from __future__ import annotations

import re
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gpupool import metrics
from gpupool.metrics import MeteredProvider, Series, create_series
from gpupool.providers.errors import CapacityError, TransientError


@pytest.fixture
def series() -> Series:
    return create_series(CollectorRegistry(), runtime=False)


def samples(series: Series) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(series.registry).decode()
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(series: Series, name: str, **labels: str) -> float:
    return samples(series)[(name, frozenset(labels.items()))]


def test_names_follow_prometheus_conventions(series: Series) -> None:
    metrics.set_offers("sim", 3, series)
    text = generate_latest(series.registry).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert names, "no series"
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("gpupool_"), family.name
        assert re.fullmatch(r"[a-z_]+", family.name), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
    assert "gpupool_reconcile_duration_seconds" in text
    assert "gpupool_reconcile_total" in text


def test_reconcile_timer_counts_and_times_success_and_error(series: Series) -> None:
    with metrics.reconcile_timer("pool", series):
        pass
    with pytest.raises(RuntimeError), metrics.reconcile_timer("pool", series):
        raise RuntimeError("boom")
    assert value(series, "gpupool_reconcile_total", controller="pool", result="success") == 1
    assert value(series, "gpupool_reconcile_total", controller="pool", result="error") == 1
    assert value(series, "gpupool_reconcile_duration_seconds_count", controller="pool") == 2


async def test_reconcile_timer_spans_awaits(series: Series) -> None:
    import asyncio

    with metrics.reconcile_timer("modeldeployment", series):
        await asyncio.sleep(0.05)
    assert value(series, "gpupool_reconcile_duration_seconds_sum", controller="modeldeployment") >= 0.05


@pytest.mark.parametrize(
    ("error", "result"),
    [
        (None, "success"),
        (CapacityError("sold out"), "capacity"),
        (TransientError("503"), "transient"),
        (ValueError("x"), "error"),
    ],
)
def test_provider_call_result(error: BaseException | None, result: str) -> None:
    assert metrics.provider_call_result(error) == result


class FakeProvider:
    name = "sim-a"
    type = "sim"

    def __init__(self) -> None:
        self.closed = False

    async def list_offers(self) -> list[Any]:
        return [1, 2]

    async def create(self, request: Any) -> Any:
        raise CapacityError("no L4 left", code="insufficient-capacity")

    async def get(self, instance_id: str) -> Any:
        return instance_id

    async def list(self) -> list[Any]:
        return []

    async def delete(self, instance_id: str) -> None:
        raise TransientError("503")

    async def aclose(self) -> None:
        self.closed = True


async def test_metered_provider_records_each_call_and_passes_results_through(series: Series) -> None:
    inner = FakeProvider()
    provider = MeteredProvider(inner, series)  # type: ignore[arg-type]
    assert (provider.name, provider.type) == ("sim-a", "sim")
    assert await provider.list_offers() == [1, 2]
    assert await provider.get("i-1") == "i-1"
    with pytest.raises(CapacityError):
        await provider.create(object())  # type: ignore[arg-type]
    with pytest.raises(TransientError):
        await provider.delete("i-1")
    await provider.aclose()
    assert inner.closed
    got = samples(series)

    def calls(op: str, result: str) -> float:
        key = (
            "gpupool_provider_requests_total",
            frozenset({"provider": "sim-a", "operation": op, "result": result}.items()),
        )
        return got.get(key, 0.0)

    assert calls("list_offers", "success") == 1
    assert calls("get", "success") == 1
    assert calls("create", "capacity") == 1
    assert calls("delete", "transient") == 1
    assert calls("create", "success") == 0
    assert (
        value(series, "gpupool_provider_request_duration_seconds_count", provider="sim-a", operation="create")
        == 1
    )


def test_offers_and_forget_provider(series: Series) -> None:
    metrics.set_offers("sim", 120, series)
    assert value(series, "gpupool_provider_offers", provider="sim") == 120
    metrics.forget_provider("sim", series)
    metrics.forget_provider("never-seen", series)
    assert ("gpupool_provider_offers", frozenset({("provider", "sim")})) not in samples(series)


def test_claims_by_phase_exports_every_phase(series: Series) -> None:
    claims = [{"status": {"phase": "Ready"}}, {"status": {"phase": "Ready"}}, {"status": {}}, {}]
    counts = metrics.claims_by_phase(claims)
    assert counts["Ready"] == 2 and counts["Pending"] == 2 and counts["Failed"] == 0
    metrics.set_claims_by_phase(counts, series)
    assert value(series, "gpupool_nodeclaims", phase="Ready") == 2
    # A phase that empties goes to 0 rather than keeping its last count.
    metrics.set_claims_by_phase({"Launching": 1}, series)
    assert value(series, "gpupool_nodeclaims", phase="Ready") == 0
    assert value(series, "gpupool_nodeclaims", phase="Launching") == 1
    assert {
        phase for (name, labels) in samples(series) if name == "gpupool_nodeclaims" for _, phase in labels
    } == set(metrics.CLAIM_PHASES)


def test_launch_to_ready_histogram(series: Series) -> None:
    metrics.observe_launch_to_ready("sim", 42.0, series)
    metrics.observe_launch_to_ready("sim", -1.0, series)  # clock skew never makes a negative sum
    assert value(series, "gpupool_nodeclaim_launch_to_ready_seconds_count", provider="sim") == 2
    assert value(series, "gpupool_nodeclaim_launch_to_ready_seconds_sum", provider="sim") == 42.0
    assert value(series, "gpupool_nodeclaim_launch_to_ready_seconds_bucket", provider="sim", le="60.0") == 2


def test_pool_gpus_by_state_and_cost(series: Series) -> None:
    metrics.set_pool("default", gpus_total=8, gpus_allocated=3, cost_per_hour=12.5, series=series)
    assert value(series, "gpupool_pool_gpus", pool="default", state="allocated") == 3
    assert value(series, "gpupool_pool_gpus", pool="default", state="idle") == 5
    assert value(series, "gpupool_pool_cost_usd_per_hour", pool="default") == 12.5
    # Allocated beyond total (a status written mid-change) never makes idle negative.
    metrics.set_pool("default", gpus_total=2, gpus_allocated=3, cost_per_hour=1.0, series=series)
    assert value(series, "gpupool_pool_gpus", pool="default", state="idle") == 0
    metrics.forget_pool("default", series)
    assert not any(name.startswith("gpupool_pool_") for name, _ in samples(series))


def test_model_deployment_series(series: Series) -> None:
    metrics.set_model_deployment(
        "team-a", "llama", cost_per_hour=0.8, replicas=2, ready_replicas=1, series=series
    )
    assert (
        value(
            series, "gpupool_modeldeployment_cost_usd_per_hour", namespace="team-a", modeldeployment="llama"
        )
        == 0.8
    )
    assert value(series, "gpupool_modeldeployment_replicas", namespace="team-a", modeldeployment="llama") == 2
    assert (
        value(series, "gpupool_modeldeployment_ready_replicas", namespace="team-a", modeldeployment="llama")
        == 1
    )
    metrics.forget_model_deployment("team-a", "llama", series)
    assert not any(name.startswith("gpupool_modeldeployment_") for name, _ in samples(series))


def test_build_info_and_runtime_collectors() -> None:
    series = create_series(CollectorRegistry())
    text = generate_latest(series.registry).decode()
    assert 'gpupool_build_info{version="' in text
    assert "process_cpu_seconds_total" in text or "python_info" in text


def test_default_registry_is_served_over_http() -> None:
    metrics.set_pool("http-test", gpus_total=1, gpus_allocated=1, cost_per_hour=0.5)
    server, thread = metrics.start_metrics_server(0, addr="127.0.0.1")
    try:
        port = server.server_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        assert 'gpupool_pool_cost_usd_per_hour{pool="http-test"} 0.5' in body
        assert "gpupool_build_info" in body
    finally:
        metrics.forget_pool("http-test")
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
