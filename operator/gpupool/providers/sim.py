"""The client for simcloud, the simulated neocloud that the demo and the tests provision from.

simcloud (operator/simcloud) speaks a small REST API shaped like a real neocloud's; this module is
its provider, written exactly like the real ones (lambda_cloud, runpod) so the claim controller's
behaviour under capacity errors, rate limits and interruptions is exercised through the same code
path it uses in production. It also uses the one idempotency feature real clouds rarely have: the
claim UID is sent as the launch's `clientToken`, on top of the tag lookup every provider does.
"""

from __future__ import annotations

import builtins
from typing import Any

import httpx
from aiolimiter import AsyncLimiter

from gpupool.catalog import CapacityType, Offer
from gpupool.providers._http import JsonApi
from gpupool.providers.base import (
    TAG_CLAIM_UID,
    TAG_CLUSTER,
    Instance,
    InstanceState,
    LaunchRequest,
    ProviderOffer,
    claim_instance_name,
    parse_timestamp,
)
from gpupool.providers.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    NotFoundError,
    ProviderError,
    QuotaError,
    TransientError,
)
from gpupool.providers.limits import SIM_LIMITS

DEFAULT_ENDPOINT = "http://127.0.0.1:8788"
SCHEME = "simcloud"

_ERRORS: dict[str, type[ProviderError]] = {
    "insufficient-capacity": CapacityError,
    "quota-exceeded": QuotaError,
    "unauthorized": AuthError,
    "invalid-request": InvalidRequestError,
    "not-found": NotFoundError,
    "rate-limited": TransientError,
    "internal": TransientError,
    "unavailable": TransientError,
}


def map_simcloud_error(status: int, body: Any) -> ProviderError | None:
    """simcloud's `{"error": {"code", "message"}}` as a typed error (None: fall back on status)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    code = str(error.get("code", ""))
    cls = _ERRORS.get(code)
    if cls is None:
        return None
    return cls(str(error.get("message", code)), code=code)


def instance_from_simcloud(data: dict[str, Any]) -> Instance:
    tags = {str(k): str(v) for k, v in (data.get("tags") or {}).items()}
    interruption = data.get("interruption") or {}
    capacity_type: CapacityType = "spot" if data.get("capacityType") == "spot" else "on-demand"
    return Instance(
        id=str(data["id"]),
        state=InstanceState(data["state"]),
        provider_id=str(data.get("providerID") or f"{SCHEME}://{data['id']}"),
        region=str(data.get("region", "")),
        zone=str(data.get("zone", "")),
        instance_type=str(data.get("instanceType", "")),
        capacity_type=capacity_type,
        name=str(data.get("name", "")),
        claim_uid=tags.get(TAG_CLAIM_UID),
        tags=tags,
        launched_at=parse_timestamp(data.get("launchedAt")),
        interruption_at=parse_timestamp(interruption.get("noticeTime")),
        price_per_hour=data.get("pricePerHour"),
    )


def offer_from_simcloud(provider_name: str, data: dict[str, Any]) -> ProviderOffer:
    offer = Offer(
        provider=provider_name,
        region=str(data["region"]),
        zone=str(data.get("zone") or ""),
        instance_type=str(data["instanceType"]),
        gpu=str(data["gpu"]),
        gpu_count=int(data["gpuCount"]),
        gpu_memory_gib=float(data["gpuMemoryGiB"]),
        vcpus=data.get("vcpus"),
        memory_gib=data.get("memoryGiB"),
        disk_gib=data.get("diskGiB"),
        on_demand_price=data.get("onDemandPrice"),
        spot_price=data.get("spotPrice"),
        source_gpu=str(data.get("gpu", "")),
        network=str(data.get("network") or ""),
    )
    return ProviderOffer(offer=offer, available=bool(data.get("available", True)))


class SimCloudProvider:
    """CloudProvider for a simcloud endpoint."""

    type = "sim"

    def __init__(
        self,
        *,
        name: str,
        cluster_name: str,
        endpoint: str = DEFAULT_ENDPOINT,
        api_key: str = "",
        client: httpx.AsyncClient | None = None,
        limiter: AsyncLimiter | None = None,
    ) -> None:
        self.name = name
        self.cluster_name = cluster_name
        self._api = JsonApi(
            provider=name,
            base_url=endpoint,
            api_key=api_key,
            map_error=map_simcloud_error,
            client=client,
            limiter=limiter if limiter is not None else SIM_LIMITS.request_limiter(),
        )

    def __repr__(self) -> str:
        return f"SimCloudProvider(name={self.name!r}, cluster={self.cluster_name!r}, api={self._api!r})"

    async def list_offers(self) -> builtins.list[ProviderOffer]:
        body = await self._api.request("GET", "/v1/instance-types")
        return [offer_from_simcloud(self.name, item) for item in body["data"]]

    async def create(self, request: LaunchRequest) -> Instance:
        # One call: simcloud keys the launch on clientToken (the claim's UID), as EC2 does, and
        # answers a repeat with the instance the first call made.
        payload: dict[str, Any] = {
            "clientToken": request.claim_uid,
            "name": claim_instance_name(request.cluster_name, request.claim_uid),
            "region": request.region,
            "zone": request.zone,
            "instanceType": request.instance_type,
            "capacityType": request.capacity_type,
            "userData": request.user_data,
            "tags": request.tags(),
            "taints": [{"key": k, "value": v, "effect": e} for k, v, e in request.taints],
        }
        if request.max_price is not None:
            payload["maxPrice"] = request.max_price
        body = await self._api.request("POST", "/v1/instances", json_body=payload)
        return instance_from_simcloud(body["data"])

    async def get(self, instance_id: str) -> Instance:
        body = await self._api.request("GET", f"/v1/instances/{instance_id}")
        return instance_from_simcloud(body["data"])

    async def list(self) -> builtins.list[Instance]:
        body = await self._api.request(
            "GET", "/v1/instances", params={"tag": f"{TAG_CLUSTER}={self.cluster_name}"}
        )
        instances = [instance_from_simcloud(item) for item in body["data"]]
        return [i for i in instances if i.state != InstanceState.TERMINATED]

    async def delete(self, instance_id: str) -> None:
        try:
            await self._api.request("DELETE", f"/v1/instances/{instance_id}")
        except NotFoundError:
            return

    async def aclose(self) -> None:
        await self._api.aclose()
