"""RunPod behind the provider protocol, over its GraphQL API.

API: `POST https://api.runpod.io/graphql` with the API key as a bearer token (the docs' curl
examples put it in `?api_key=`; the header keeps it out of URLs, which end up in logs). Documented
at https://docs.runpod.io/sdks/graphql/manage-pods and the GraphQL spec it links. Used here:

- `gpuTypes { id displayName memoryInGb secureCloud communityCloud securePrice communityPrice
  secureSpotPrice communitySpotPrice maxGpuCount lowestPrice(input: {gpuCount: 1}) {
  minimumBidPrice uninterruptablePrice stockStatus } }`: prices are per GPU per hour.
- `podFindAndDeployOnDemand(input: {...})` (on-demand) and `podRentInterruptable(input: {...,
  bidPerGpu})` (spot), both returning the Pod; `pod(input: {podId})`; `myself { pods { ... } }`;
  `podTerminate(input: {podId})`.
- Errors come as HTTP 200 with `{"errors": [{"message", "extensions"?: {"code"}}]}`, e.g. "There
  are no longer any instances available with the requested specifications. Please refresh and try
  again." for a capacity miss; a refused key is an HTTP 401/403.

How gpupool maps onto pods: RunPod pods have no tags, so the pod is named
`gpupool-<cluster>-<claim uid>`, and that name is both the ownership mark and the idempotency key.
The instance type is `<count>x_<gpu>_<SECURE|COMMUNITY>`, the shape of the shipped catalog's RunPod
rows. A region that is a two-letter country code (the catalog's RunPod regions) is sent as
`countryCode`, any other non-empty region as `dataCenterId`, and `any` leaves placement to RunPod.
A pod is a container, not a VM, so the bootstrap script travels base64-encoded in the env var
GPUPOOL_BOOTSTRAP and the container's command decodes and runs it. Pod `env` is never queried back:
it holds the bootstrap script and its join token.
"""

from __future__ import annotations

import base64
import builtins
import json
import re
from collections.abc import Mapping
from typing import Any

import httpx
from aiolimiter import AsyncLimiter

from gpupool.catalog import Offer, normalize_gpu_name
from gpupool.providers._http import JsonApi
from gpupool.providers.base import (
    TAG_CLAIM_UID,
    TAG_CLUSTER,
    Instance,
    InstanceState,
    LaunchRequest,
    ProviderOffer,
    claim_instance_name,
    claim_uid_from_name,
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
from gpupool.providers.limits import RUNPOD_LIMITS

DEFAULT_ENDPOINT = "https://api.runpod.io/graphql"
DEFAULT_IMAGE = "nvidia/cuda:12.4.1-runtime-ubuntu22.04"
ANY_REGION = "any"
SCHEME = "runpod"
GPU_COUNTS = (1, 2, 4, 8)
CLOUDS = ("SECURE", "COMMUNITY")
BOOTSTRAP_COMMAND = (
    'bash -c \'echo "$GPUPOOL_BOOTSTRAP" | base64 -d > /tmp/gpupool-bootstrap'
    " && exec bash /tmp/gpupool-bootstrap'"
)

_POD_FIELDS = "id name desiredStatus costPerHr gpuCount podType machineId machine { gpuDisplayName } runtime { uptimeInSeconds }"

GPU_TYPES_QUERY = """query GpuTypes { gpuTypes { id displayName memoryInGb secureCloud communityCloud
  securePrice communityPrice secureSpotPrice communitySpotPrice maxGpuCount
  lowestPrice(input: {gpuCount: 1}) { minimumBidPrice uninterruptablePrice stockStatus } } }"""

PODS_QUERY = f"query Pods {{ myself {{ pods {{ {_POD_FIELDS} }} }} }}"

# Lower-cased message fragments, checked in this order (balance before the generic "not enough").
_MESSAGE_RULES: tuple[tuple[tuple[str, ...], type[ProviderError]], ...] = (
    (("balance", "insufficient funds", "quota", "spend limit", "limit exceeded"), QuotaError),
    (
        (
            "no longer any instances available",
            "no instances available",
            "not enough",
            "out of stock",
            "insufficient capacity",
            "no available",
        ),
        CapacityError,
    ),
    (("unauthorized", "unauthenticated", "api key", "forbidden", "permission"), AuthError),
    (("not found", "does not exist", "no pod"), NotFoundError),
    (("rate limit", "too many requests", "timeout", "timed out", "temporarily unavailable"), TransientError),
)
_CODE_RULES: dict[str, type[ProviderError]] = {
    "UNAUTHENTICATED": AuthError,
    "FORBIDDEN": AuthError,
    "BAD_USER_INPUT": InvalidRequestError,
    "GRAPHQL_VALIDATION_FAILED": InvalidRequestError,
    "GRAPHQL_PARSE_FAILED": InvalidRequestError,
    "INTERNAL_SERVER_ERROR": TransientError,
}


class GqlEnum(str):
    """A GraphQL enum value: written bare, not quoted."""


def gql_literal(value: Any) -> str:
    """A Python value as a GraphQL input literal (strings JSON-escaped, which GraphQL accepts)."""
    if isinstance(value, GqlEnum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {gql_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(gql_literal(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as GraphQL")


def classify_graphql_error(error: Mapping[str, Any]) -> ProviderError:
    message = str(error.get("message", "")) or "GraphQL error"
    code = str((error.get("extensions") or {}).get("code", ""))
    lowered = message.lower()
    for fragments, cls in _MESSAGE_RULES:
        if any(f in lowered for f in fragments):
            return cls(message, code=code)
    return _CODE_RULES.get(code, InvalidRequestError)(message, code=code)


def map_runpod_http_error(status: int, body: Any) -> ProviderError | None:
    errors = body.get("errors") if isinstance(body, dict) else None
    if status in (401, 403):
        message = str(errors[0].get("message")) if errors else "API key refused"
        return AuthError(message, code=str(status))
    if status == 429 or status >= 500:
        return None  # the status fallback makes it transient and keeps Retry-After
    if errors:
        return classify_graphql_error(errors[0])
    return None


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


def offers_from_gpu_types(provider_name: str, gpu_types: list[Mapping[str, Any]]) -> list[ProviderOffer]:
    offers = []
    for gpu_type in gpu_types:
        memory = float(gpu_type.get("memoryInGb") or 0)
        display = str(gpu_type.get("displayName") or gpu_type["id"])
        gpu = normalize_gpu_name(
            display, memory or None, provider="runpod", instance_type=str(gpu_type["id"])
        )
        in_stock = bool((gpu_type.get("lowestPrice") or {}).get("stockStatus"))
        max_count = int(gpu_type.get("maxGpuCount") or 1)
        for cloud in CLOUDS:
            prefix = "secure" if cloud == "SECURE" else "community"
            if not gpu_type.get(f"{prefix}Cloud"):
                continue
            price = gpu_type.get(f"{prefix}Price") or None
            spot = gpu_type.get(f"{prefix}SpotPrice") or None
            if price is None and spot is None:
                continue
            for count in (c for c in GPU_COUNTS if c <= max_count):
                offer = Offer(
                    provider=provider_name,
                    region=ANY_REGION,
                    zone="",
                    instance_type=f"{count}x_{slug(gpu)}_{cloud}",
                    gpu=gpu,
                    gpu_count=count,
                    gpu_memory_gib=memory,
                    vcpus=None,
                    memory_gib=None,
                    on_demand_price=None if price is None else round(float(price) * count, 4),
                    spot_price=None if spot is None else round(float(spot) * count, 4),
                    source_gpu=str(gpu_type["id"]),
                )
                offers.append(ProviderOffer(offer=offer, available=in_stock))
    return offers


def parse_instance_type(instance_type: str) -> tuple[int, str, str]:
    """(count, gpu, cloud) from "2x_A100-80GB_SECURE"; InvalidRequestError if it is not that shape."""
    match = re.fullmatch(r"(\d+)x_(.+)_(SECURE|COMMUNITY)", instance_type)
    if match is None:
        raise InvalidRequestError(
            f"RunPod instance types look like <count>x_<gpu>_<SECURE|COMMUNITY>, not {instance_type!r}",
            code="bad-instance-type",
        )
    return int(match.group(1)), match.group(2), match.group(3)


class RunPodProvider:
    """CloudProvider for one RunPod account."""

    type = "runpod"

    def __init__(
        self,
        *,
        name: str,
        cluster_name: str,
        api_key: str,
        endpoint: str = DEFAULT_ENDPOINT,
        image: str = DEFAULT_IMAGE,
        container_disk_gb: int = 50,
        client: httpx.AsyncClient | None = None,
        limiter: AsyncLimiter | None = None,
    ) -> None:
        self.name = name
        self.cluster_name = cluster_name
        self.image = image
        self.container_disk_gb = container_disk_gb
        self._api = JsonApi(
            provider=name,
            base_url=endpoint,
            api_key=api_key,
            map_error=map_runpod_http_error,
            client=client,
            limiter=limiter if limiter is not None else RUNPOD_LIMITS.request_limiter(),
        )
        self._gpu_ids: dict[str, str] = {}
        self._spot_per_gpu: dict[tuple[str, str], float] = {}

    def __repr__(self) -> str:
        return f"RunPodProvider(name={self.name!r}, cluster={self.cluster_name!r}, api={self._api!r})"

    async def _graphql(self, query: str) -> Any:
        body = await self._api.request("POST", "", json_body={"query": query})
        if not isinstance(body, dict):
            raise TransientError("GraphQL answer is not an object", code="bad-response", provider=self.name)
        errors = body.get("errors")
        if errors:
            raise self._api.scrub(classify_graphql_error(errors[0]))
        return body.get("data") or {}

    def _instance(self, pod: Mapping[str, Any]) -> Instance:
        name = str(pod.get("name") or "")
        claim_uid = claim_uid_from_name(self.cluster_name, name)
        status = str(pod.get("desiredStatus") or "")
        if status == "RUNNING":
            state = InstanceState.RUNNING if pod.get("runtime") else InstanceState.PENDING
        elif status in ("CREATED", ""):
            state = InstanceState.PENDING
        elif status == "TERMINATED":
            state = InstanceState.TERMINATED
        else:  # EXITED: stopped; for a node that is as good as gone
            state = InstanceState.TERMINATING
        tags = {TAG_CLUSTER: self.cluster_name, TAG_CLAIM_UID: claim_uid} if claim_uid else {}
        display = str((pod.get("machine") or {}).get("gpuDisplayName") or "")
        gpu = normalize_gpu_name(display, provider="runpod") if display else ""
        count = int(pod.get("gpuCount") or 0)
        cost = pod.get("costPerHr")
        return Instance(
            id=str(pod["id"]),
            state=state,
            provider_id=f"{SCHEME}://{pod['id']}",
            region=ANY_REGION,
            instance_type=f"{count}x_{slug(gpu)}" if gpu else "",
            capacity_type="spot" if str(pod.get("podType") or "").upper() == "INTERRUPTABLE" else "on-demand",
            name=name,
            claim_uid=claim_uid,
            tags=tags,
            price_per_hour=None if cost is None else float(cost),
        )

    async def list_offers(self) -> builtins.list[ProviderOffer]:
        data = await self._graphql(GPU_TYPES_QUERY)
        gpu_types = data.get("gpuTypes") or []
        offers = offers_from_gpu_types(self.name, gpu_types)
        for provider_offer in offers:
            offer = provider_offer.offer
            self._gpu_ids[slug(offer.gpu)] = offer.source_gpu
            count, gpu_slug, cloud = parse_instance_type(offer.instance_type)
            if offer.spot_price is not None:
                self._spot_per_gpu[(gpu_slug, cloud)] = offer.spot_price / count
        for gpu_type in gpu_types:
            self._gpu_ids[slug(str(gpu_type["id"]))] = str(gpu_type["id"])
        return offers

    async def _gpu_type_id(self, gpu_slug: str) -> str:
        if gpu_slug not in self._gpu_ids:
            await self.list_offers()
        try:
            return self._gpu_ids[gpu_slug]
        except KeyError:
            raise InvalidRequestError(
                f"RunPod has no GPU type {gpu_slug!r}", code="unknown-gpu", provider=self.name
            ) from None

    async def _pods(self) -> builtins.list[Instance]:
        data = await self._graphql(PODS_QUERY)
        pods = (data.get("myself") or {}).get("pods") or []
        return [self._instance(pod) for pod in pods]

    async def create(self, request: LaunchRequest) -> Instance:
        count, gpu_slug, cloud = parse_instance_type(request.instance_type)
        name = claim_instance_name(request.cluster_name, request.claim_uid)
        for instance in await self._pods():
            if instance.name == name and instance.state in (InstanceState.PENDING, InstanceState.RUNNING):
                return instance
        pod_input: dict[str, Any] = {
            "cloudType": GqlEnum(cloud),
            "gpuCount": count,
            "gpuTypeId": await self._gpu_type_id(gpu_slug),
            "name": name,
            "imageName": self.image,
            "containerDiskInGb": self.container_disk_gb,
            "volumeInGb": 0,
            "dockerArgs": BOOTSTRAP_COMMAND,
            "env": [
                {"key": "GPUPOOL_BOOTSTRAP", "value": base64.b64encode(request.user_data.encode()).decode()},
                {"key": "GPUPOOL_CLAIM_UID", "value": request.claim_uid},
                {"key": "GPUPOOL_CLUSTER", "value": request.cluster_name},
            ],
        }
        region = request.region
        if region and region != ANY_REGION:
            pod_input["countryCode" if re.fullmatch(r"[A-Z]{2}", region) else "dataCenterId"] = region
        if request.capacity_type == "spot":
            if request.max_price is not None:
                bid = request.max_price / count
            elif (gpu_slug, cloud) in self._spot_per_gpu:
                bid = self._spot_per_gpu[(gpu_slug, cloud)]  # the current spot price, from the last listing
            else:
                raise InvalidRequestError(
                    f"RunPod sells no spot {gpu_slug} in {cloud} cloud",
                    code="no-spot-price",
                    provider=self.name,
                )
            pod_input["bidPerGpu"] = round(bid, 4)
            mutation = "podRentInterruptable"
        else:
            mutation = "podFindAndDeployOnDemand"
        data = await self._graphql(
            f"mutation Launch {{ {mutation}(input: {gql_literal(pod_input)}) {{ {_POD_FIELDS} }} }}"
        )
        pod = data.get(mutation)
        if not pod:
            raise CapacityError(f"{mutation} returned no pod", code="no-pod", provider=self.name)
        instance = self._instance(pod)
        return Instance(
            id=instance.id,
            state=InstanceState.PENDING if instance.state == InstanceState.RUNNING else instance.state,
            provider_id=instance.provider_id,
            region=region or ANY_REGION,
            instance_type=request.instance_type,
            capacity_type=request.capacity_type,
            name=name,
            claim_uid=request.claim_uid,
            tags=request.tags(),
            price_per_hour=instance.price_per_hour,
        )

    async def get(self, instance_id: str) -> Instance:
        data = await self._graphql(
            f"query Pod {{ pod(input: {gql_literal({'podId': instance_id})}) {{ {_POD_FIELDS} }} }}"
        )
        pod = data.get("pod")
        if not pod:
            raise NotFoundError(f"pod {instance_id} not found", code="not-found", provider=self.name)
        return self._instance(pod)

    async def list(self) -> builtins.list[Instance]:
        return [i for i in await self._pods() if i.claim_uid and i.state != InstanceState.TERMINATED]

    async def delete(self, instance_id: str) -> None:
        try:
            await self._graphql(
                f"mutation Terminate {{ podTerminate(input: {gql_literal({'podId': instance_id})}) }}"
            )
        except NotFoundError:
            return

    async def aclose(self) -> None:
        await self._api.aclose()
