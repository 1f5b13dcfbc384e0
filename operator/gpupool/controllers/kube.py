"""The operator's own reads and writes of Kubernetes objects, on one async client.

kopf watches the objects and keeps the indexes; every other call the controllers make
(claims, status writes, nodes, evictions, the vLLM objects) goes through here, on
lightkube's AsyncClient: typed, asynchronous (no thread per call), one pooled HTTP
connection, and server-side apply built in. lightkube was picked over kubernetes_asyncio
(an untyped mirror of the generated client that imports every model at start, which costs
tens of MiB) and kr8s (no typed models): see docs/control-loop.md.

One place for every call also means one field manager, so server-side apply knows what
the operator owns, and one request counter (`gpupool_kube_requests_total`), so the
benchmarks can tell what the operator costs the API server.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.codecs import resource_registry
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node, Pod, Secret
from lightkube.types import PatchType

from gpupool import metrics

GROUP = "gpupool.dev"
VERSION = "v1alpha1"
FIELD_MANAGER = "gpupool"
# kopf's finalizer on every object gpupool reacts to (settings.persistence.finalizer).
FINALIZER = "gpupool.dev/finalizer"

GpuProviderResource = create_global_resource(GROUP, VERSION, "GpuProvider", "gpuproviders")
GpuPoolResource = create_global_resource(GROUP, VERSION, "GpuPool", "gpupools")
GpuNodeClaimResource = create_global_resource(GROUP, VERSION, "GpuNodeClaim", "gpunodeclaims")
ModelDeploymentResource = create_namespaced_resource(GROUP, VERSION, "ModelDeployment", "modeldeployments")

CUSTOM: dict[str, Any] = {
    "gpuproviders": GpuProviderResource,
    "gpupools": GpuPoolResource,
    "gpunodeclaims": GpuNodeClaimResource,
    "modeldeployments": ModelDeploymentResource,
}


class NotFound(Exception):
    """The object does not exist (HTTP 404)."""


class Conflict(Exception):
    """The write lost a race (HTTP 409): read again and retry."""


def status_code(error: BaseException) -> int:
    """The HTTP status of a failed call, 0 when it never got an answer."""
    if isinstance(error, ApiError):
        return int(error.status.code or 0)
    if isinstance(error, httpx2.HTTPStatusError):
        return error.response.status_code
    return 0


def error_text(error: BaseException) -> str:
    """The API server's message of a failed call."""
    if isinstance(error, ApiError):
        return str(error.status.message or error)
    return str(error)


@contextlib.asynccontextmanager
async def _counted(verb: str, resource: str) -> AsyncIterator[None]:
    code = "error"
    try:
        yield
        code = "2xx"
    except ApiError as error:
        code = str(status_code(error))
        if code == "404":
            raise NotFound(error_text(error)) from error
        if code == "409":
            raise Conflict(error_text(error)) from error
        raise
    finally:
        metrics.count_kube_request(verb, resource, code)


class Kube:
    """Async facade over lightkube for the calls the controllers make."""

    def __init__(self, client: AsyncClient | None = None) -> None:
        self.client = client or AsyncClient(field_manager=FIELD_MANAGER, timeout=httpx2.Timeout(30.0))

    async def aclose(self) -> None:
        await self.client.aclose()

    # --- gpupool.dev custom objects -------------------------------------------------

    async def get_cluster_object(self, plural: str, name: str) -> dict[str, Any]:
        async with _counted("get", plural):
            obj = await self.client.get(CUSTOM[plural], name)
        return dict(obj)

    async def create_cluster_object(self, plural: str, body: Mapping[str, Any]) -> dict[str, Any]:
        async with _counted("create", plural):
            obj = await self.client.create(CUSTOM[plural](dict(body)))
        return dict(obj)

    async def delete_cluster_object(self, plural: str, name: str) -> None:
        with contextlib.suppress(NotFound):
            async with _counted("delete", plural):
                await self.client.delete(CUSTOM[plural], name)

    async def patch_status(
        self, plural: str, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """A JSON merge patch of the status subresource; returns the object as written."""
        resource = CUSTOM[plural].Status
        async with _counted("patch-status", plural):
            obj = await self.client.patch(
                resource, name, {"status": dict(patch)}, namespace=namespace, patch_type=PatchType.MERGE
            )
        return dict(obj)

    # --- core objects -----------------------------------------------------------------

    async def patch_node(self, name: str, patch: Mapping[str, Any]) -> None:
        async with _counted("patch", "nodes"):
            await self.client.patch(Node, name, dict(patch), patch_type=PatchType.MERGE)

    async def delete_node(self, name: str) -> None:
        with contextlib.suppress(NotFound):
            async with _counted("delete", "nodes"):
                await self.client.delete(Node, name)

    async def list_pods_on_node(self, node: str) -> list[Pod]:
        async with _counted("list", "pods"):
            return [pod async for pod in self.client.list(Pod, namespace="*", fields={"spec.nodeName": node})]

    async def evict_pod(self, namespace: str, name: str) -> bool:
        """Ask to evict a pod through the Eviction API, which honours PodDisruptionBudgets.

        Returns False when a budget refuses it for now (HTTP 429); the caller retries later.
        """
        eviction = Pod.Eviction(metadata=ObjectMeta(name=name, namespace=namespace))
        try:
            async with _counted("create", "pods/eviction"):
                await self.client.create(eviction, name=name, namespace=namespace)
        except NotFound:
            return True
        except ApiError as error:
            if status_code(error) == 429:
                return False
            raise
        return True

    async def read_secret_value(self, namespace: str, name: str, key: str) -> str:
        async with _counted("get", "secrets"):
            secret = await self.client.get(Secret, name, namespace=namespace)
        data = secret.data or {}
        if key not in data:
            raise KeyError(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(data[key]).decode()

    # --- server-side apply of any object ----------------------------------------------

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply with force: the operator owns these fields, so a person's edit is put back."""
        resource: Any = resource_registry.load(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        async with _counted("apply", obj["kind"].lower() + "s"):
            result = await self.client.patch(
                resource,
                meta["name"],
                dict(obj),
                namespace=meta.get("namespace"),
                patch_type=PatchType.APPLY,
                field_manager=FIELD_MANAGER,
                force=True,
            )
        applied: dict[str, Any] = result.to_dict()
        return applied
