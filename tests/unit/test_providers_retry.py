"""The single retry loop: which errors it retries, how long it waits, when it gives up."""

from __future__ import annotations

import builtins

import pytest

from gpupool.catalog import Offer
from gpupool.providers import (
    AuthError,
    CapacityError,
    Instance,
    InstanceState,
    InvalidRequestError,
    LaunchRequest,
    ProviderOffer,
    RetryingProvider,
    RetryPolicy,
    TransientError,
    build_provider,
    call_with_retry,
    claim_instance_name,
)
from gpupool.providers.base import claim_uid_from_name
from gpupool.providers.errors import redact


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def failing(errors: builtins.list[Exception], result: str = "ok"):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    async def call() -> str:
        calls["n"] += 1
        if errors:
            raise errors.pop(0)
        return result

    return call, calls


async def test_transient_errors_are_retried_with_exponential_backoff() -> None:
    sleeps = Sleeps()
    call, calls = failing([TransientError("503"), TransientError("503"), TransientError("timeout")])
    policy = RetryPolicy(attempts=5, base_seconds=1.0, cap_seconds=100)
    assert await call_with_retry(call, policy=policy, sleep=sleeps, rand=lambda: 1.0) == "ok"
    assert calls["n"] == 4
    assert sleeps.calls == [1.0, 2.0, 4.0]


async def test_full_jitter_scales_the_delay_and_the_cap_bounds_it() -> None:
    policy = RetryPolicy(base_seconds=1.0, cap_seconds=5.0)
    assert policy.delay(0, 0.5) == 0.5
    assert policy.delay(10, 0.999) == pytest.approx(4.995)
    assert policy.delay(10, 0.0) == 0.0


async def test_retry_after_is_honoured_up_to_a_bound() -> None:
    sleeps = Sleeps()
    call, _ = failing([TransientError("429", retry_after=7.0), TransientError("429", retry_after=600.0)])
    await call_with_retry(
        call, policy=RetryPolicy(max_retry_after_seconds=60), sleep=sleeps, rand=lambda: 0.1
    )
    assert sleeps.calls == [7.0, 60.0]


async def test_gives_up_after_the_attempts_with_the_last_error() -> None:
    sleeps = Sleeps()
    call, calls = failing([TransientError(f"e{n}") for n in range(10)])
    with pytest.raises(TransientError, match="e2"):
        await call_with_retry(call, policy=RetryPolicy(attempts=3), sleep=sleeps, rand=lambda: 0.0)
    assert calls["n"] == 3 and len(sleeps.calls) == 2


@pytest.mark.parametrize("error", [CapacityError("full"), AuthError("no"), InvalidRequestError("bad")])
async def test_other_errors_are_not_retried(error: Exception) -> None:
    sleeps = Sleeps()
    call, calls = failing([error])
    with pytest.raises(type(error)):
        await call_with_retry(call, sleep=sleeps)
    assert calls["n"] == 1 and sleeps.calls == []


class Flaky:
    """A provider whose every method fails transiently once, then works."""

    name = "flaky"
    type = "sim"

    def __init__(self) -> None:
        self.calls: builtins.list[str] = []

    def _once(self, what: str) -> None:
        self.calls.append(what)
        if self.calls.count(what) == 1:
            raise TransientError(f"{what} blip")

    async def list_offers(self) -> builtins.list[ProviderOffer]:
        self._once("list_offers")
        offer = Offer("flaky", "r", "", "t", "L4", 1, 24, 4, 16, 1.0, None)
        return [ProviderOffer(offer)]

    async def create(self, request: LaunchRequest) -> Instance:
        self._once("create")
        return Instance("i-1", InstanceState.PENDING, "sim://i-1", request.region, request.instance_type)

    async def get(self, instance_id: str) -> Instance:
        self._once("get")
        return Instance(instance_id, InstanceState.RUNNING, f"sim://{instance_id}", "r", "t")

    async def list(self) -> builtins.list[Instance]:
        self._once("list")
        return []

    async def delete(self, instance_id: str) -> None:
        self._once("delete")

    async def aclose(self) -> None:
        pass


async def test_retrying_provider_retries_every_method() -> None:
    inner = Flaky()
    sleeps = Sleeps()
    provider = RetryingProvider(inner, RetryPolicy(attempts=2), sleep=sleeps, rand=lambda: 0.0)
    request = LaunchRequest("c", "u", "k", "r", "t")
    assert len(await provider.list_offers()) == 1
    assert (await provider.create(request)).id == "i-1"
    assert (await provider.get("i-9")).state == InstanceState.RUNNING
    assert await provider.list() == []
    await provider.delete("i-1")
    assert sorted(set(inner.calls)) == ["create", "delete", "get", "list", "list_offers"]
    assert len(inner.calls) == 10 and len(sleeps.calls) == 5
    assert provider.name == "flaky"


def test_claim_names_round_trip_and_do_not_cross_clusters() -> None:
    uid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    name = claim_instance_name("prod", uid)
    assert name == f"gpupool-prod-{uid}" and len(name) <= 64
    assert claim_uid_from_name("prod", name) == uid
    assert claim_uid_from_name("pro", name) is None
    assert claim_uid_from_name("prod-eu", claim_instance_name("prod", uid)) is None
    long_name = claim_instance_name("a-very-long-cluster-name-that-does-not-fit", uid)
    assert len(long_name) == 64 and long_name.endswith(uid)
    assert claim_uid_from_name("a-very-long-cluster-name-that-does-not-fit", long_name) == uid


def test_launch_request_repr_hides_user_data() -> None:
    request = LaunchRequest("c", "u", "k", "r", "t", user_data="kubeadm join --token abcdef.0123456789abcdef")
    assert "abcdef" not in repr(request)
    assert request.tags()["gpupool.dev/claim-uid"] == "u"


def test_redact() -> None:
    assert redact("key=sk-123 and sk-123", "sk-123") == "key=*** and ***"
    assert redact("nothing", "") == "nothing"


def test_build_provider_validates_and_wraps() -> None:
    sim = build_provider("sim", None, "", "c1")
    assert isinstance(sim, RetryingProvider) and sim.type == "sim" and sim.name == "sim"
    lam = build_provider(
        "lambda", None, "secret-key-1", "c1", name="lambda-prod", options={"sshKeyName": "k"}
    )
    assert lam.name == "lambda-prod" and "secret-key-1" not in repr(lam)
    with pytest.raises(InvalidRequestError, match="needs an API key"):
        build_provider("runpod", None, "", "c1")
    with pytest.raises(InvalidRequestError, match="unknown provider type"):
        build_provider("aws", None, "k", "c1")


def test_bootstrap_renders_claim_variables_and_leaves_shell_alone() -> None:
    from gpupool.providers.bootstrap import DEFAULT_USER_DATA_TEMPLATE, render_user_data

    request = LaunchRequest(
        "default-x7k2p",
        "uid-1",
        "prod",
        "us-east-1",
        "gpu_1x_h100_sxm5",
        labels={"gpupool.dev/pool": "default"},
        taints=(("team", "ml", "NoExecute"),),
    )
    script = render_user_data(
        "#!/bin/sh\necho $HOME ${GPUPOOL_CLAIM_NAME} ${GPUPOOL_NODE_TAINTS} ${GPUPOOL_UNKNOWN}\n", request
    )
    assert (
        "echo $HOME default-x7k2p nvidia.com/gpu=present:NoSchedule,team=ml:NoExecute ${GPUPOOL_UNKNOWN}"
        in script
    )
    full = render_user_data(
        DEFAULT_USER_DATA_TEMPLATE,
        request,
        extra={"GPUPOOL_API_SERVER": "10.0.0.1:6443", "GPUPOOL_JOIN_TOKEN": "abcdef.0123456789abcdef"},
    )
    assert 'apiServerEndpoint: "10.0.0.1:6443"' in full
    assert "gpupool.dev/claim-uid=uid-1" in full and "gpupool.dev/pool=default" in full
