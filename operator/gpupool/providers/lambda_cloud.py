"""Lambda Cloud (Lambda's on-demand GPU cloud) behind the provider protocol.

API: REST over HTTPS with a bearer API key, documented at https://docs-api.lambda.ai/api/cloud
(OpenAPI "Lambda Cloud API" v1.10). The calls used here, with the shapes this module relies on:

- `GET /instance-types` -> `{"data": {<name>: {"instance_type": {"name", "description",
  "gpu_description", "price_cents_per_hour", "specs": {"vcpus", "memory_gib", "storage_gib",
  "gpus"}}, "regions_with_capacity_available": [{"name", "description"}]}}}`
- `POST /instance-operations/launch` `{"region_name", "instance_type_name", "ssh_key_names": [one],
  "name", "user_data", "tags": [{"key", "value"}]}` -> `{"data": {"instance_ids": [...]}}`
- `GET /instances`, `GET /instances/{id}` -> Instance objects with `id`, `name`, `status` (booting,
  active, unhealthy, terminating, terminated, preempted), `region`, `instance_type`, `tags`.
- `POST /instance-operations/terminate` `{"instance_ids": [...]}`.
- Errors: `{"error": {"code", "message", "suggestion"?}}`; the docs say to branch on `code` only
  (global/invalid-api-key, global/account-inactive, global/invalid-address, global/forbidden,
  global/quota-exceeded, global/invalid-parameters, global/object-does-not-exist,
  global/not-found, instance-operations/launch/insufficient-capacity, ...).
  Rate limits: about 1 request/s, and 1 launch per 12 s; a 429 is retried by `retry.py`.

Lambda sells no spot capacity. Tag keys must match `^[a-z][a-z0-9-:]+$`, so gpupool's
`gpupool.dev/<name>` tags travel as `gpupool-<name>`. The instance is also named
`gpupool-<cluster>-<claim uid>`, so it is found by name if tags were ever dropped. The bootstrap
script goes in `user_data` (cloud-init; plain text up to 1 MB). Lambda requires exactly one SSH
key name on launch; it comes from the provider's options (`sshKeyName`).
"""

from __future__ import annotations

import builtins
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
from gpupool.providers.limits import LAMBDA_LIMITS

DEFAULT_ENDPOINT = "https://cloud.lambda.ai/api/v1"
SCHEME = "lambda"

_ERRORS: dict[str, type[ProviderError]] = {
    "global/invalid-api-key": AuthError,
    "global/account-inactive": AuthError,
    "global/invalid-address": AuthError,
    "global/forbidden": AuthError,
    "global/quota-exceeded": QuotaError,
    "instance-operations/launch/insufficient-capacity": CapacityError,
    "global/invalid-parameters": InvalidRequestError,
    "instance-operations/launch/file-system-in-wrong-region": InvalidRequestError,
    "global/conflict": InvalidRequestError,
    "global/object-does-not-exist": NotFoundError,
    "global/not-found": NotFoundError,
}

_STATES = {
    "booting": InstanceState.PENDING,
    "active": InstanceState.RUNNING,
    "unhealthy": InstanceState.RUNNING,
    "terminating": InstanceState.TERMINATING,
    "terminated": InstanceState.TERMINATED,
    "preempted": InstanceState.TERMINATED,
}

_TAG_PREFIX = "gpupool.dev/"
_LAMBDA_TAG_PREFIX = "gpupool-"
_TAG_KEY = re.compile(r"^[a-z][a-z0-9-:]+$")


def map_lambda_error(status: int, body: Any) -> ProviderError | None:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    code = str(error.get("code", ""))
    message = str(error.get("message", "")) or code
    suggestion = error.get("suggestion")
    if suggestion:
        message = f"{message} ({suggestion})"
    cls = _ERRORS.get(code)
    if cls is None:
        if status == 429 or status >= 500:
            return TransientError(message, code=code or str(status))
        return None if not code else _fallback(status)(message, code=code)
    return cls(message, code=code)


def _fallback(status: int) -> type[ProviderError]:
    if status in (401, 403):
        return AuthError
    if status == 404:
        return NotFoundError
    return InvalidRequestError


def to_lambda_tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """gpupool's tags in Lambda's syntax; tags of other prefixes are not sent (they are node labels,
    which reach the node through the bootstrap script)."""
    out = []
    for key, value in sorted(tags.items()):
        if not key.startswith(_TAG_PREFIX):
            continue
        lambda_key = _LAMBDA_TAG_PREFIX + key[len(_TAG_PREFIX) :]
        if _TAG_KEY.match(lambda_key) and len(lambda_key) <= 55:
            out.append({"key": lambda_key, "value": value[:128]})
    return out


def from_lambda_tags(tags: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in tags or []:
        key, value = str(entry.get("key", "")), str(entry.get("value", ""))
        if key.startswith(_LAMBDA_TAG_PREFIX):
            key = _TAG_PREFIX + key[len(_LAMBDA_TAG_PREFIX) :]
        out[key] = value
    return out


def parse_gpu_description(description: str) -> tuple[str, float | None]:
    """("H100", 80.0) from "H100 (80 GB SXM5)"; the memory is None if the text gives none."""
    name = description.split("(", 1)[0].strip()
    match = re.search(r"(\d+(?:\.\d+)?)\s*GB", description)
    return name, float(match.group(1)) if match else None


def offers_from_instance_types(provider_name: str, data: Mapping[str, Any]) -> list[ProviderOffer]:
    offers = []
    for item in data.values():
        itype = item["instance_type"]
        specs = itype.get("specs") or {}
        gpus = int(specs.get("gpus") or 0)
        if gpus <= 0:
            continue
        source_gpu, memory = parse_gpu_description(
            str(itype.get("gpu_description") or itype.get("description", ""))
        )
        gpu = normalize_gpu_name(source_gpu, memory, provider="lambda", instance_type=itype["name"])
        price = int(itype["price_cents_per_hour"]) / 100
        for region in item.get("regions_with_capacity_available") or []:
            offer = Offer(
                provider=provider_name,
                region=str(region["name"]),
                zone="",
                instance_type=str(itype["name"]),
                gpu=gpu,
                gpu_count=gpus,
                gpu_memory_gib=memory or 0.0,
                vcpus=specs.get("vcpus"),
                memory_gib=specs.get("memory_gib"),
                disk_gib=specs.get("storage_gib"),
                on_demand_price=price,
                spot_price=None,
                source_gpu=source_gpu,
            )
            offers.append(ProviderOffer(offer=offer, available=True))
    return offers


def instance_from_lambda(data: Mapping[str, Any], cluster_name: str = "") -> Instance:
    tags = from_lambda_tags(data.get("tags"))
    name = str(data.get("name") or "")
    claim_uid = tags.get(TAG_CLAIM_UID)
    if claim_uid is None and cluster_name:
        claim_uid = claim_uid_from_name(cluster_name, name)
    itype = data.get("instance_type") or {}
    price = itype.get("price_cents_per_hour")
    return Instance(
        id=str(data["id"]),
        state=_STATES.get(str(data.get("status")), InstanceState.PENDING),
        provider_id=f"{SCHEME}://{data['id']}",
        region=str((data.get("region") or {}).get("name", "")),
        instance_type=str(itype.get("name", "")),
        name=name,
        claim_uid=claim_uid,
        tags=tags,
        price_per_hour=None if price is None else int(price) / 100,
    )


class LambdaCloudProvider:
    """CloudProvider for one Lambda Cloud account."""

    type = "lambda"

    def __init__(
        self,
        *,
        name: str,
        cluster_name: str,
        api_key: str,
        ssh_key_name: str = "",
        endpoint: str = DEFAULT_ENDPOINT,
        client: httpx.AsyncClient | None = None,
        limiter: AsyncLimiter | None = None,
    ) -> None:
        self.name = name
        self.cluster_name = cluster_name
        self.ssh_key_name = ssh_key_name
        self._api = JsonApi(
            provider=name,
            base_url=endpoint,
            api_key=api_key,
            map_error=map_lambda_error,
            client=client,
            limiter=limiter if limiter is not None else LAMBDA_LIMITS.request_limiter(),
        )

    def __repr__(self) -> str:
        return f"LambdaCloudProvider(name={self.name!r}, cluster={self.cluster_name!r}, api={self._api!r})"

    def _owned(self, instance: Instance) -> bool:
        if instance.tags.get(TAG_CLUSTER) == self.cluster_name:
            return True
        return (
            TAG_CLUSTER not in instance.tags
            and claim_uid_from_name(self.cluster_name, instance.name) is not None
        )

    async def list_offers(self) -> builtins.list[ProviderOffer]:
        body = await self._api.request("GET", "/instance-types")
        return offers_from_instance_types(self.name, body["data"])

    async def _all_instances(self) -> builtins.list[Instance]:
        body = await self._api.request("GET", "/instances")
        return [instance_from_lambda(item, self.cluster_name) for item in body["data"]]

    async def create(self, request: LaunchRequest) -> Instance:
        if request.capacity_type != "on-demand":
            raise InvalidRequestError(
                "Lambda Cloud sells no spot capacity", code="spot-unsupported", provider=self.name
            )
        if not self.ssh_key_name:
            raise InvalidRequestError(
                "Lambda Cloud requires an SSH key name on launch; set the provider option sshKeyName",
                code="ssh-key-required",
                provider=self.name,
            )
        name = claim_instance_name(request.cluster_name, request.claim_uid)
        for instance in await self._all_instances():
            live = instance.state in (InstanceState.PENDING, InstanceState.RUNNING)
            if live and (instance.claim_uid == request.claim_uid or instance.name == name):
                return instance
        payload: dict[str, Any] = {
            "region_name": request.region,
            "instance_type_name": request.instance_type,
            "ssh_key_names": [self.ssh_key_name],
            "name": name,
            "tags": to_lambda_tags(request.tags()),
        }
        if request.user_data:
            payload["user_data"] = request.user_data
        body = await self._api.request("POST", "/instance-operations/launch", json_body=payload)
        ids = body["data"]["instance_ids"]
        if not ids:
            raise TransientError("launch returned no instance id", code="no-instance-id", provider=self.name)
        # The launch answers with ids only; the instance is described from the request rather than
        # read back at once, since a read right after a launch may not see it yet.
        return Instance(
            id=str(ids[0]),
            state=InstanceState.PENDING,
            provider_id=f"{SCHEME}://{ids[0]}",
            region=request.region,
            instance_type=request.instance_type,
            name=name,
            claim_uid=request.claim_uid,
            tags=request.tags(),
        )

    async def get(self, instance_id: str) -> Instance:
        body = await self._api.request("GET", f"/instances/{instance_id}")
        return instance_from_lambda(body["data"], self.cluster_name)

    async def list(self) -> builtins.list[Instance]:
        return [
            i for i in await self._all_instances() if self._owned(i) and i.state != InstanceState.TERMINATED
        ]

    async def delete(self, instance_id: str) -> None:
        try:
            await self._api.request(
                "POST", "/instance-operations/terminate", json_body={"instance_ids": [instance_id]}
            )
        except NotFoundError:
            return
        except InvalidRequestError:
            # Terminating an instance that is already on its way out may be refused as invalid;
            # that is success if the instance is indeed going or gone.
            try:
                current = await self.get(instance_id)
            except NotFoundError:
                return
            if current.state not in (InstanceState.TERMINATING, InstanceState.TERMINATED):
                raise

    async def aclose(self) -> None:
        await self._api.aclose()
