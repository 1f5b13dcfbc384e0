"""The Lambda Cloud client against Lambda's documented request and response shapes (respx mock).

Payloads follow the Lambda Cloud API OpenAPI document (v1.10): instance types keyed by name with
`price_cents_per_hour` and `regions_with_capacity_available`, launch answering `instance_ids`,
Instance objects with `status` and `tags`, and errors as `{"error": {"code", "message",
"suggestion"}}`.
"""

from __future__ import annotations

import json
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
    RetryingProvider,
    RetryPolicy,
    TransientError,
    build_provider,
)
from gpupool.providers.lambda_cloud import LambdaCloudProvider

API = "https://cloud.lambda.ai/api/v1"
KEY = "secret_lambda_key_0123456789abcdef"
UID = "0f8fad5b-d9cb-469f-a165-70867728950e"

INSTANCE_TYPES = {
    "data": {
        "gpu_1x_h100_sxm5": {
            "instance_type": {
                "name": "gpu_1x_h100_sxm5",
                "description": "1x H100 (80 GB SXM5)",
                "gpu_description": "H100 (80 GB SXM5)",
                "price_cents_per_hour": 329,
                "specs": {"vcpus": 26, "memory_gib": 225, "storage_gib": 2816, "gpus": 1},
            },
            "regions_with_capacity_available": [
                {"name": "us-east-1", "description": "Virginia, USA"},
                {"name": "us-west-3", "description": "Utah, USA"},
            ],
        },
        "gpu_8x_a100_80gb_sxm4": {
            "instance_type": {
                "name": "gpu_8x_a100_80gb_sxm4",
                "description": "8x A100 (80 GB SXM4)",
                "gpu_description": "A100 (80 GB SXM4)",
                "price_cents_per_hour": 1432,
                "specs": {"vcpus": 240, "memory_gib": 1800, "storage_gib": 19500, "gpus": 8},
            },
            "regions_with_capacity_available": [],
        },
        "cpu_4x_general": {
            "instance_type": {
                "name": "cpu_4x_general",
                "description": "CPU only",
                "gpu_description": "",
                "price_cents_per_hour": 20,
                "specs": {"vcpus": 4, "memory_gib": 16, "storage_gib": 100, "gpus": 0},
            },
            "regions_with_capacity_available": [{"name": "us-east-1", "description": "Virginia, USA"}],
        },
    }
}


def lambda_instance(
    instance_id: str, status: str = "active", *, name: str = "", tags: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    return {
        "id": instance_id,
        "name": name,
        "ip": "198.51.100.2",
        "private_ip": "10.0.2.100",
        "status": status,
        "ssh_key_names": ["gpupool"],
        "file_system_names": [],
        "region": {"name": "us-east-1", "description": "Virginia, USA"},
        "instance_type": {
            "name": "gpu_1x_h100_sxm5",
            "description": "1x H100 (80 GB SXM5)",
            "gpu_description": "H100 (80 GB SXM5)",
            "price_cents_per_hour": 329,
            "specs": {"vcpus": 26, "memory_gib": 225, "storage_gib": 2816, "gpus": 1},
        },
        "hostname": "198-51-100-2",
        "is_reserved": False,
        "actions": {
            k: {"available": True} for k in ("migrate", "rebuild", "restart", "cold_reboot", "terminate")
        },
        "tags": tags or [],
    }


def owned_tags(uid: str = UID, cluster: str = "c1") -> list[dict[str, str]]:
    return [
        {"key": "gpupool-claim", "value": "default-x7k2p"},
        {"key": "gpupool-claim-uid", "value": uid},
        {"key": "gpupool-cluster", "value": cluster},
    ]


def lambda_error(code: str, message: str, suggestion: str | None = None) -> dict[str, Any]:
    error = {"code": code, "message": message}
    if suggestion:
        error["suggestion"] = suggestion
    return {"error": error}


def provider(**kw: Any) -> LambdaCloudProvider:
    return LambdaCloudProvider(name="lambda", cluster_name="c1", api_key=KEY, ssh_key_name="gpupool", **kw)


def launch_request(**kw: Any) -> LaunchRequest:
    fields: dict[str, Any] = {
        "claim_name": "default-x7k2p",
        "claim_uid": UID,
        "cluster_name": "c1",
        "region": "us-east-1",
        "instance_type": "gpu_1x_h100_sxm5",
        "user_data": "#cloud-config\nruncmd:\n  - kubeadm join --token abcdef.0123456789abcdef\n",
        "labels": {"gpupool.dev/pool": "default", "team.example.com/owner": "ml"},
    }
    fields.update(kw)
    return LaunchRequest(**fields)


@respx.mock
async def test_offers_come_from_instance_types_with_capacity() -> None:
    route = respx.get(f"{API}/instance-types").respond(200, json=INSTANCE_TYPES)
    offers = await provider().list_offers()
    assert route.calls.last.request.headers["authorization"] == f"Bearer {KEY}"
    keys = sorted(o.offer.key for o in offers)
    assert keys == ["lambda/us-east-1//gpu_1x_h100_sxm5/H100/1", "lambda/us-west-3//gpu_1x_h100_sxm5/H100/1"]
    h100 = offers[0].offer
    assert h100.on_demand_price == 3.29 and h100.spot_price is None
    assert h100.gpu_memory_gib == 80 and h100.vcpus == 26 and h100.memory_gib == 225
    assert all(o.available for o in offers)


@respx.mock
async def test_launch_sends_the_documented_body_and_returns_pending() -> None:
    respx.get(f"{API}/instances").respond(200, json={"data": []})
    launch = respx.post(f"{API}/instance-operations/launch").respond(
        200, json={"data": {"instance_ids": ["0920582c7ff041399e34823a0be62549"]}}
    )
    instance = await provider().create(launch_request())
    body = json.loads(launch.calls.last.request.content)
    assert body["region_name"] == "us-east-1"
    assert body["instance_type_name"] == "gpu_1x_h100_sxm5"
    assert body["ssh_key_names"] == ["gpupool"]
    assert body["name"] == f"gpupool-c1-{UID}"
    assert body["user_data"].startswith("#cloud-config")
    tags = {t["key"]: t["value"] for t in body["tags"]}
    assert tags == {
        "gpupool-claim": "default-x7k2p",
        "gpupool-claim-uid": UID,
        "gpupool-cluster": "c1",
        "gpupool-pool": "default",
    }
    assert instance.id == "0920582c7ff041399e34823a0be62549"
    assert instance.provider_id == "lambda://0920582c7ff041399e34823a0be62549"
    assert instance.state == InstanceState.PENDING and instance.claim_uid == UID


@respx.mock
async def test_launch_finds_the_instance_of_an_earlier_attempt() -> None:
    respx.get(f"{API}/instances").respond(
        200, json={"data": [lambda_instance("i-old", "booting", name=f"gpupool-c1-{UID}", tags=owned_tags())]}
    )
    launch = respx.post(f"{API}/instance-operations/launch")
    instance = await provider().create(launch_request())
    assert instance.id == "i-old" and instance.state == InstanceState.PENDING
    assert not launch.called


@respx.mock
async def test_launch_finds_an_untagged_instance_by_name() -> None:
    respx.get(f"{API}/instances").respond(
        200, json={"data": [lambda_instance("i-named", name=f"gpupool-c1-{UID}")]}
    )
    launch = respx.post(f"{API}/instance-operations/launch")
    assert (await provider().create(launch_request())).id == "i-named"
    assert not launch.called


@pytest.mark.parametrize(
    ("status", "payload", "error"),
    [
        (
            400,
            lambda_error(
                "instance-operations/launch/insufficient-capacity",
                "Not enough capacity to fulfill launch request.",
            ),
            CapacityError,
        ),
        (
            400,
            lambda_error(
                "global/quota-exceeded", "Quota exceeded.", "Contact Support to increase your quota."
            ),
            QuotaError,
        ),
        (400, lambda_error("global/invalid-parameters", "Invalid request data."), InvalidRequestError),
        (
            401,
            lambda_error(
                "global/invalid-api-key", "API key was invalid, expired, or deleted.", "Check your API key."
            ),
            AuthError,
        ),
        (
            403,
            lambda_error(
                "global/account-inactive",
                "Your account is inactive.",
                "Make sure you have verified your email.",
            ),
            AuthError,
        ),
        (
            404,
            lambda_error("global/object-does-not-exist", "Specified instance type does not exist."),
            NotFoundError,
        ),
        (429, lambda_error("global/too-many-requests", "Too many requests."), TransientError),
        (503, None, TransientError),
    ],
)
@respx.mock
async def test_launch_errors_are_typed(
    status: int, payload: dict[str, Any] | None, error: type[Exception]
) -> None:
    respx.get(f"{API}/instances").respond(200, json={"data": []})
    if payload is None:
        respx.post(f"{API}/instance-operations/launch").respond(
            status, text="<html>Service Unavailable</html>"
        )
    else:
        respx.post(f"{API}/instance-operations/launch").respond(status, json=payload)
    with pytest.raises(error) as raised:
        await provider().create(launch_request())
    if payload is not None and status != 429:
        assert raised.value.code == payload["error"]["code"]  # type: ignore[attr-defined]


@respx.mock
async def test_the_key_never_appears_in_errors_or_reprs() -> None:
    # A misbehaving endpoint echoing the Authorization header back in its error.
    respx.get(f"{API}/instances").respond(
        401, json=lambda_error("global/invalid-api-key", f"bad key Bearer {KEY}", f"key {KEY} is revoked")
    )
    p = provider()
    with pytest.raises(AuthError) as raised:
        await p.list()
    assert KEY not in str(raised.value) and KEY not in repr(raised.value)
    assert KEY not in repr(p)
    respx.get(f"{API}/instance-types").mock(side_effect=httpx.ConnectError(f"cannot connect with {KEY}"))
    with pytest.raises(TransientError) as transient:
        await p.list_offers()
    assert KEY not in str(transient.value)


@respx.mock
async def test_timeouts_are_transient_and_retried() -> None:
    route = respx.get(f"{API}/instance-types")
    route.side_effect = [httpx.ReadTimeout("slow"), httpx.Response(200, json=INSTANCE_TYPES)]

    async def no_sleep(_: float) -> None:
        return None

    retrying = RetryingProvider(provider(), RetryPolicy(attempts=3), sleep=no_sleep)
    assert len(await retrying.list_offers()) == 2
    assert route.call_count == 2


@respx.mock
async def test_rate_limit_retry_after_is_carried() -> None:
    respx.get(f"{API}/instances").respond(
        429, headers={"Retry-After": "12"}, json=lambda_error("x/rate", "slow down")
    )
    with pytest.raises(TransientError) as raised:
        await provider().list()
    assert raised.value.retry_after == 12.0


@respx.mock
async def test_get_maps_status_and_not_found() -> None:
    respx.get(f"{API}/instances/i-1").respond(
        200, json={"data": lambda_instance("i-1", "active", name=f"gpupool-c1-{UID}", tags=owned_tags())}
    )
    respx.get(f"{API}/instances/i-2").respond(
        404, json=lambda_error("global/object-does-not-exist", "Specified instance does not exist.")
    )
    got = await provider().get("i-1")
    assert got.state == InstanceState.RUNNING and got.region == "us-east-1" and got.price_per_hour == 3.29
    assert got.tags["gpupool.dev/cluster"] == "c1" and got.claim_uid == UID
    with pytest.raises(NotFoundError):
        await provider().get("i-2")


@respx.mock
async def test_list_returns_only_this_clusters_live_instances() -> None:
    other_uid = "1f8fad5b-d9cb-469f-a165-70867728950e"
    respx.get(f"{API}/instances").respond(
        200,
        json={
            "data": [
                lambda_instance("mine", "active", tags=owned_tags()),
                lambda_instance("mine-booting", "booting", tags=owned_tags(other_uid)),
                lambda_instance("mine-gone", "terminated", tags=owned_tags()),
                lambda_instance("theirs", "active", tags=owned_tags(cluster="c2")),
                lambda_instance("personal", "active", name="my notebook"),
                lambda_instance("by-name", "active", name=f"gpupool-c1-{other_uid}"),
            ]
        },
    )
    listed = {i.id: i.state for i in await provider().list()}
    assert listed == {
        "mine": InstanceState.RUNNING,
        "mine-booting": InstanceState.PENDING,
        "by-name": InstanceState.RUNNING,
    }


@respx.mock
async def test_delete_is_idempotent() -> None:
    terminate = respx.post(f"{API}/instance-operations/terminate")
    terminate.side_effect = [
        httpx.Response(200, json={"data": {"terminated_instances": [lambda_instance("i-1", "terminating")]}}),
        httpx.Response(
            404, json=lambda_error("global/object-does-not-exist", "Specified instance does not exist.")
        ),
        httpx.Response(
            400, json=lambda_error("global/invalid-parameters", "Instance is already terminated.")
        ),
    ]
    respx.get(f"{API}/instances/i-1").respond(200, json={"data": lambda_instance("i-1", "terminated")})
    p = provider()
    await p.delete("i-1")
    assert json.loads(terminate.calls.last.request.content) == {"instance_ids": ["i-1"]}
    await p.delete("i-1")
    await p.delete("i-1")
    assert terminate.call_count == 3


async def test_spot_and_missing_ssh_key_are_refused_before_any_call() -> None:
    with respx.mock(assert_all_called=False) as mock:
        calls = mock.route(host="cloud.lambda.ai")
        with pytest.raises(InvalidRequestError, match="spot"):
            await provider().create(launch_request(capacity_type="spot"))
        no_key = LambdaCloudProvider(name="lambda", cluster_name="c1", api_key=KEY)
        with pytest.raises(InvalidRequestError, match="sshKeyName"):
            await no_key.create(launch_request())
        assert not calls.called


@respx.mock
async def test_build_provider_makes_a_retrying_lambda_client() -> None:
    respx.get(f"{API}/instance-types").respond(200, json=INSTANCE_TYPES)
    built = build_provider("lambda", None, KEY, "c1", name="lambda-us", options={"sshKeyName": "gpupool"})
    offers = await built.list_offers()
    assert {o.offer.provider for o in offers} == {"lambda-us"}
    await built.aclose()
