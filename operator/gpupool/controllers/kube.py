"""The operator's own reads and writes of Kubernetes objects, off the event loop.

kopf watches and patches the objects its handlers are bound to; everything else the
controllers touch (nodes, pods, claims, the vLLM objects) goes through here. The
official client is synchronous, so each call runs in a worker thread; one place to
do that keeps handlers free of threading details and makes every write use the
same field manager, so server-side apply knows what the operator owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client, config
from kubernetes.dynamic import DynamicClient

GROUP = "gpupool.dev"
VERSION = "v1alpha1"
FIELD_MANAGER = "gpupool"


def load_api_client() -> client.ApiClient:
    """In a pod, the ServiceAccount; elsewhere, the current kubeconfig context."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


class NotFound(Exception):
    """The object does not exist (HTTP 404)."""


class Kube:
    """Async facade over the official client for the calls the controllers make."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self._dynamic: DynamicClient | None = None

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))
        except client.ApiException as exc:
            if exc.status == 404:
                raise NotFound(str(exc.reason)) from exc
            raise

    # --- gpupool.dev custom objects -------------------------------------------------

    async def get_cluster_object(self, plural: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = await self._call(
            self.custom.get_cluster_custom_object, GROUP, VERSION, plural, name
        )
        return obj

    async def list_cluster_objects(self, plural: str, label_selector: str = "") -> list[dict[str, Any]]:
        result = await self._call(
            self.custom.list_cluster_custom_object, GROUP, VERSION, plural, label_selector=label_selector
        )
        return list(result.get("items", []))

    async def create_cluster_object(self, plural: str, body: Mapping[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = await self._call(
            self.custom.create_cluster_custom_object, GROUP, VERSION, plural, dict(body)
        )
        return obj

    async def delete_cluster_object(self, plural: str, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self._call(self.custom.delete_cluster_custom_object, GROUP, VERSION, plural, name)

    # --- core objects -----------------------------------------------------------------

    async def patch_node(self, name: str, patch: Mapping[str, Any]) -> None:
        await self._call(self.core.patch_node, name, dict(patch))

    async def delete_node(self, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self._call(self.core.delete_node, name)

    async def list_pods(self, *, label_selector: str = "", field_selector: str = "") -> list[client.V1Pod]:
        result = await self._call(
            self.core.list_pod_for_all_namespaces,
            label_selector=label_selector,
            field_selector=field_selector,
        )
        return list(result.items)

    async def evict_pod(self, namespace: str, name: str) -> bool:
        """Ask to evict a pod through the Eviction API, which honours PodDisruptionBudgets.

        Returns False when a budget refuses it for now (HTTP 429); the caller retries later.
        """
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=namespace))
        try:
            await self._call(self.core.create_namespaced_pod_eviction, name, namespace, body)
        except NotFound:
            return True
        except client.ApiException as exc:
            if exc.status == 429:
                return False
            raise
        return True

    async def read_secret_value(self, namespace: str, name: str, key: str) -> str:
        import base64

        secret = await self._call(self.core.read_namespaced_secret, name, namespace)
        data = secret.data or {}
        if key not in data:
            raise KeyError(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(data[key]).decode()

    # --- server-side apply of any object ----------------------------------------------

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply with force: the operator owns these fields, so a person's edit is put back."""
        if self._dynamic is None:
            self._dynamic = await asyncio.to_thread(DynamicClient, self.api)
        dynamic = self._dynamic
        resource = await asyncio.to_thread(
            dynamic.resources.get, api_version=obj["apiVersion"], kind=obj["kind"]
        )
        meta = obj["metadata"]
        result = await self._call(
            dynamic.server_side_apply,
            resource,
            body=dict(obj),
            name=meta["name"],
            namespace=meta.get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        applied: dict[str, Any] = result.to_dict()
        return applied
