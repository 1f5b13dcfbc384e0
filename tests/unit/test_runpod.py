"""The RunPod client against RunPod's documented GraphQL shapes (respx mock).

Shapes follow docs.runpod.io "Manage Pods" (GraphQL): `gpuTypes` with per-GPU prices and
`lowestPrice { stockStatus }`, the `podFindAndDeployOnDemand` / `podRentInterruptable` mutations,
`myself { pods }`, `pod(input: {podId})`, `podTerminate`; errors come as HTTP 200 with an
`errors` list (the capacity message is the one RunPod users report verbatim).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import httpx
import pytest
import respx

from gpupool.providers import (
    AuthError,
    CapacityError,
    InstanceState,
    InvalidRequestError,
    LaunchRequest,
    NotFoundError,
    QuotaError,
    TransientError,
)
from gpupool.providers.runpod import GqlEnum, RunPodProvider, gql_literal

API = "https://api.runpod.io/graphql"
KEY = "rpa_SECRETSECRETSECRET0123456789"
UID = "0f8fad5b-d9cb-469f-a165-70867728950e"
NO_CAPACITY = "There are no longer any instances available with the requested specifications. Please refresh and try again."

GPU_TYPES = {
    "data": {
        "gpuTypes": [
            {
                "id": "NVIDIA H100 80GB HBM3",
                "displayName": "H100 SXM",
                "memoryInGb": 80,
                "secureCloud": True,
                "communityCloud": True,
                "securePrice": 2.99,
                "communityPrice": 2.69,
                "secureSpotPrice": 1.75,
                "communitySpotPrice": None,
                "maxGpuCount": 8,
                "lowestPrice": {"minimumBidPrice": 1.75, "uninterruptablePrice": 2.69, "stockStatus": "High"},
            },
            {
                "id": "NVIDIA GeForce RTX 4090",
                "displayName": "RTX 4090",
                "memoryInGb": 24,
                "secureCloud": False,
                "communityCloud": True,
                "securePrice": 0.69,
                "communityPrice": 0.34,
                "secureSpotPrice": None,
                "communitySpotPrice": 0.2,
                "maxGpuCount": 2,
                "lowestPrice": {"minimumBidPrice": None, "uninterruptablePrice": None, "stockStatus": None},
            },
        ]
    }
}


def pod(
    pod_id: str, name: str, status: str = "RUNNING", *, runtime: bool = True, pod_type: str = "RESERVED"
) -> dict[str, Any]:
    return {
        "id": pod_id,
        "name": name,
        "desiredStatus": status,
        "costPerHr": 2.99,
        "gpuCount": 1,
        "podType": pod_type,
        "machineId": "m1",
        "machine": {"gpuDisplayName": "H100 SXM"},
        "runtime": {"uptimeInSeconds": 42} if runtime else None,
    }


def graphql_router(handlers: dict[str, Any]) -> Any:
    """A respx side effect that answers by the GraphQL field the query asks for."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        query = json.loads(request.content)["query"]
        seen.append(query)
        for field, response in handlers.items():
            if re.search(rf"\b{field}\b", query):
                return response(query) if callable(response) else response
        raise AssertionError(f"unexpected query: {query}")

    answer.seen = seen  # type: ignore[attr-defined]
    return answer


def ok(data: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"data": data})


def gql_error(message: str, code: str | None = None) -> httpx.Response:
    error: dict[str, Any] = {"message": message, "path": ["podFindAndDeployOnDemand"]}
    if code:
        error["extensions"] = {"code": code}
    return httpx.Response(200, json={"errors": [error], "data": {"podFindAndDeployOnDemand": None}})


def provider() -> RunPodProvider:
    return RunPodProvider(name="runpod", cluster_name="c1", api_key=KEY)


def launch_request(**kw: Any) -> LaunchRequest:
    fields: dict[str, Any] = {
        "claim_name": "default-x7k2p",
        "claim_uid": UID,
        "cluster_name": "c1",
        "region": "any",
        "instance_type": "1x_H100_SECURE",
        "user_data": "#!/bin/bash\nkubeadm join --token abcdef.0123456789abcdef\n",
    }
    fields.update(kw)
    return LaunchRequest(**fields)


@respx.mock
async def test_offers_from_gpu_types() -> None:
    route = respx.post(API).respond(200, json=GPU_TYPES)
    offers = await provider().list_offers()
    assert route.calls.last.request.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in str(route.calls.last.request.url)
    by_type = {o.offer.instance_type: o for o in offers}
    assert sorted(by_type) == [
        "1x_H100_COMMUNITY", "1x_H100_SECURE", "1x_RTX-4090_COMMUNITY",
        "2x_H100_COMMUNITY", "2x_H100_SECURE", "2x_RTX-4090_COMMUNITY",
        "4x_H100_COMMUNITY", "4x_H100_SECURE", "8x_H100_COMMUNITY", "8x_H100_SECURE",
    ]  # fmt: skip
    two_h100 = by_type["2x_H100_SECURE"].offer
    assert two_h100.on_demand_price == 5.98 and two_h100.spot_price == 3.5
    assert two_h100.gpu == "H100" and two_h100.gpu_memory_gib == 80 and two_h100.region == "any"
    assert by_type["1x_H100_COMMUNITY"].offer.spot_price is None
    assert by_type["1x_H100_SECURE"].available
    assert not by_type["1x_RTX-4090_COMMUNITY"].available  # no stock status: sold out


@respx.mock
async def test_on_demand_launch_mutation_and_bootstrap() -> None:
    def deploy(query: str) -> httpx.Response:
        return ok({"podFindAndDeployOnDemand": pod("pod-1", f"gpupool-c1-{UID}", runtime=False)})

    router = graphql_router(
        {
            "gpuTypes": httpx.Response(200, json=GPU_TYPES),
            "myself": ok({"myself": {"pods": []}}),
            "podFindAndDeployOnDemand": deploy,
        }
    )
    respx.post(API).mock(side_effect=router)
    instance = await provider().create(launch_request(region="CA"))
    mutation = router.seen[-1]
    assert "podFindAndDeployOnDemand(input: {" in mutation
    assert "cloudType: SECURE" in mutation  # an enum: bare, not quoted
    assert 'gpuTypeId: "NVIDIA H100 80GB HBM3"' in mutation
    assert "gpuCount: 1" in mutation
    assert f'name: "gpupool-c1-{UID}"' in mutation
    assert 'countryCode: "CA"' in mutation
    encoded = re.search(r'key: "GPUPOOL_BOOTSTRAP", value: "([^"]+)"', mutation)
    assert encoded is not None
    assert base64.b64decode(encoded.group(1)).decode().startswith("#!/bin/bash\nkubeadm join")
    assert instance.id == "pod-1" and instance.provider_id == "runpod://pod-1"
    assert instance.state == InstanceState.PENDING and instance.claim_uid == UID


@respx.mock
async def test_spot_launch_bids_per_gpu() -> None:
    router = graphql_router({
        "gpuTypes": httpx.Response(200, json=GPU_TYPES),
        "myself": ok({"myself": {"pods": []}}),
        "podRentInterruptable": ok({"podRentInterruptable": pod("pod-2", f"gpupool-c1-{UID}", pod_type="INTERRUPTABLE")}),
    })  # fmt: skip
    respx.post(API).mock(side_effect=router)
    instance = await provider().create(
        launch_request(instance_type="2x_H100_SECURE", capacity_type="spot", max_price=3.6, region="EU-RO-1")
    )
    mutation = router.seen[-1]
    assert "podRentInterruptable(input:" in mutation and "bidPerGpu: 1.8" in mutation
    assert 'dataCenterId: "EU-RO-1"' in mutation
    assert instance.capacity_type == "spot"
    # Without a ceiling the bid is the current spot price per GPU (1.75 for a secure H100).
    await provider().create(launch_request(capacity_type="spot"))
    assert "bidPerGpu: 1.75" in router.seen[-1]
    with pytest.raises(InvalidRequestError, match="no spot"):
        await provider().create(launch_request(instance_type="1x_H100_COMMUNITY", capacity_type="spot"))


@respx.mock
async def test_launch_finds_the_pod_of_an_earlier_attempt() -> None:
    router = graphql_router(
        {"myself": ok({"myself": {"pods": [pod("pod-old", f"gpupool-c1-{UID}", runtime=False)]}})}
    )
    respx.post(API).mock(side_effect=router)
    instance = await provider().create(launch_request())
    assert instance.id == "pod-old"
    assert len(router.seen) == 1  # no gpuTypes, no mutation


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (gql_error(NO_CAPACITY), CapacityError),
        (gql_error("Insufficient balance to deploy this pod."), QuotaError),
        (gql_error("Something is wrong with the input", "BAD_USER_INPUT"), InvalidRequestError),
        (gql_error("Unexpected server fault", "INTERNAL_SERVER_ERROR"), TransientError),
        (httpx.Response(401, json={"errors": [{"message": "Unauthorized"}]}), AuthError),
        (httpx.Response(403, text="forbidden"), AuthError),
        (httpx.Response(429, headers={"Retry-After": "3"}, text="slow down"), TransientError),
        (httpx.Response(502, text="<html>Bad Gateway</html>"), TransientError),
    ],
)
@respx.mock
async def test_launch_errors_are_typed(response: httpx.Response, error: type[Exception]) -> None:
    router = graphql_router({
        "gpuTypes": httpx.Response(200, json=GPU_TYPES),
        "myself": ok({"myself": {"pods": []}}),
        "podFindAndDeployOnDemand": response,
    })  # fmt: skip
    respx.post(API).mock(side_effect=router)
    with pytest.raises(error):
        await provider().create(launch_request())


@respx.mock
async def test_graphql_errors_never_carry_the_key() -> None:
    respx.post(API).respond(200, json={"errors": [{"message": f"api key {KEY} is not valid"}]})
    with pytest.raises(AuthError) as raised:
        await provider().list()
    assert KEY not in str(raised.value) and KEY not in repr(raised.value)
    assert KEY not in repr(provider())


@respx.mock
async def test_get_states_and_not_found() -> None:
    pods = {
        "booting": pod("booting", "x", runtime=False),
        "running": pod("running", "x"),
        "exited": pod("exited", "x", status="EXITED", runtime=False),
        "gone": pod("gone", "x", status="TERMINATED", runtime=False),
    }

    def answer(query: str) -> httpx.Response:
        pod_id = re.search(r'podId: "([^"]+)"', query).group(1)  # type: ignore[union-attr]
        return ok({"pod": pods.get(pod_id)})

    respx.post(API).mock(side_effect=graphql_router({"pod": answer}))
    p = provider()
    assert (await p.get("booting")).state == InstanceState.PENDING
    assert (await p.get("running")).state == InstanceState.RUNNING
    assert (await p.get("exited")).state == InstanceState.TERMINATING
    assert (await p.get("gone")).state == InstanceState.TERMINATED
    with pytest.raises(NotFoundError):
        await p.get("nope")


@respx.mock
async def test_list_keeps_only_this_clusters_pods() -> None:
    other = "1f8fad5b-d9cb-469f-a165-70867728950e"
    pods = [
        pod("mine", f"gpupool-c1-{UID}"),
        pod("mine-gone", f"gpupool-c1-{other}", status="TERMINATED"),
        pod("sibling-cluster", f"gpupool-c1-eu-{other}"),
        pod("personal", "jupyter"),
    ]
    respx.post(API).mock(side_effect=graphql_router({"myself": ok({"myself": {"pods": pods}})}))
    listed = await provider().list()
    assert [(i.id, i.claim_uid) for i in listed] == [("mine", UID)]


@respx.mock
async def test_delete_is_idempotent() -> None:
    answers = iter(
        [ok({"podTerminate": None}), httpx.Response(200, json={"errors": [{"message": "Pod not found"}]})]
    )
    router = graphql_router({"podTerminate": lambda q: next(answers)})
    respx.post(API).mock(side_effect=router)
    p = provider()
    await p.delete("pod-1")
    await p.delete("pod-1")
    assert 'podTerminate(input: {podId: "pod-1"})' in router.seen[0]


def test_gql_literal_escapes_strings() -> None:
    text = gql_literal({"a": 'say "hi"\n', "b": [1, 2.5, True], "c": GqlEnum("ALL")})
    assert text == '{a: "say \\"hi\\"\\n", b: [1, 2.5, true], c: ALL}'


async def test_unknown_instance_type_shape_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="look like"):
        await provider().create(launch_request(instance_type="gpu_1x_h100"))
