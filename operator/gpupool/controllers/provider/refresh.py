"""Refresh: keep one client per GpuProvider and its offers no older than `refreshInterval`.

The client is rebuilt only when what it depends on changes (type, endpoint, credentials
reference), so connection pools survive ordinary refreshes. The API key is read from the
Secret on each rebuild and lives only in the client: never in status, events or logs.
Offers are stored with the provider's negotiated discount already applied and restricted
to its allowed regions, so every consumer ranks by what the team actually pays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from gpupool import metrics
from gpupool.catalog import apply_discounts
from gpupool.controllers.conditions import now_stamp, put_condition
from gpupool.controllers.kube import NotFound, status_code
from gpupool.controllers.state import OperatorState, ProviderHandle
from gpupool.metrics import MeteredProvider
from gpupool.providers.errors import AuthError, ProviderError
from gpupool.providers.registry import build_provider

log = logging.getLogger(__name__)

# Where a GpuProvider's credentials Secret lives when its reference names no namespace.
DEFAULT_SECRET_NAMESPACE = "gpupool-system"


class ProviderSpecError(Exception):
    """The spec cannot be used as it is (a missing Secret or key): a person must fix it."""


def fingerprint(spec: Mapping[str, Any]) -> str:
    relevant = {k: spec.get(k) for k in ("type", "endpoint", "credentialsSecretRef", "options")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


async def _api_key(state: OperatorState, spec: Mapping[str, Any]) -> str:
    ref = spec.get("credentialsSecretRef")
    if not ref:
        return ""
    namespace = ref.get("namespace") or DEFAULT_SECRET_NAMESPACE
    key = ref.get("key") or "apiKey"
    try:
        return await state.kube.read_secret_value(namespace, ref["name"], key)
    except NotFound as error:
        raise ProviderSpecError(
            f"spec.credentialsSecretRef: Secret {namespace}/{ref['name']} not found; create it with key {key!r}"
        ) from error
    except KeyError as error:
        raise ProviderSpecError(
            f"spec.credentialsSecretRef.key: Secret {namespace}/{ref['name']} has no key {key!r}"
        ) from error
    except Exception as error:
        if status_code(error) != 403:
            raise
        allowed = state.settings.credentials_namespace
        raise ProviderSpecError(
            f"spec.credentialsSecretRef.namespace: the operator may read Secrets only in namespace "
            f"{allowed!r} (the chart's credentials.namespace); move Secret {ref['name']} there"
        ) from error


async def ensure_client(name: str, spec: Mapping[str, Any], state: OperatorState) -> ProviderHandle:
    wanted = fingerprint(spec)
    handle = state.providers.get(name)
    template = str((spec.get("bootstrap") or {}).get("userDataTemplate") or "")
    if handle is not None and handle.spec_fingerprint == wanted:
        handle.user_data_template = template
        return handle
    if handle is not None:
        await handle.client.aclose()
    # build_provider wraps the client in the one retry loop (providers/retry.py).
    provider = build_provider(
        str(spec["type"]),
        spec.get("endpoint"),
        await _api_key(state, spec),
        state.cluster_name,
        name=name,
        options=dict(spec.get("options") or {}),
    )
    handle = ProviderHandle(
        name=name,
        type=str(spec["type"]),
        client=MeteredProvider(provider),
        spec_fingerprint=wanted,
        user_data_template=template,
    )
    state.providers[name] = handle
    return handle


async def refresh_provider(
    body: Mapping[str, Any], state: OperatorState, *, current: Mapping[str, Any]
) -> dict[str, Any]:
    """List the provider's offers now (the caller decides when it is due); returns the new status."""
    name = body["metadata"]["name"]
    spec = body.get("spec") or {}
    status: dict[str, Any] = dict(current)
    generation = body["metadata"].get("generation", 1)
    now = time.time()
    try:
        handle = await ensure_client(name, spec, state)
        listed = await handle.client.list_offers()
    except ProviderSpecError as error:
        return _unready(status, generation, "InvalidCredentialsRef", str(error), state, name)
    except AuthError as error:
        return _unready(status, generation, "AuthFailed", str(error), state, name)
    except ProviderError as error:
        return _unready(status, generation, "Unreachable", str(error), state, name)

    regions = set(spec.get("regions") or [])
    offers = [p.offer for p in listed if not regions or p.offer.region in regions]
    discount = float(spec.get("discountPercent") or 0)
    handle.offers = apply_discounts(offers, {name: discount}) if discount else offers
    handle.sold_out = frozenset(p.offer.key for p in listed if not p.available)
    handle.refreshed_at = now
    handle.healthy = True
    metrics.set_offers(name, len(handle.offers))
    available = len(handle.offers) - len(handle.sold_out & {o.key for o in handle.offers})
    status.update(
        offers=len(handle.offers),
        lastRefreshTime=now_stamp(),
        observedGeneration=generation,
    )
    put_condition(
        status,
        "Ready",
        True,
        "OffersListed",
        f"{len(handle.offers)} offers listed, {available} with capacity now",
        generation,
    )
    return status


def _unready(
    status: dict[str, Any], generation: int, reason: str, message: str, state: OperatorState, name: str
) -> dict[str, Any]:
    handle = state.providers.get(name)
    if handle is not None:
        handle.healthy = False
    status["observedGeneration"] = generation
    put_condition(status, "Ready", False, reason, message, generation)
    log.warning("GpuProvider %s is not ready: %s", name, message)
    return status


async def client_for(name: str, state: OperatorState) -> ProviderHandle | None:
    """The provider's client, built from its GpuProvider if the operator has none yet.

    A claim can be deleted before its provider's first refresh since a restart (or while its
    provider is itself being deleted, when no refresh runs): termination must not wait on that.
    """
    handle = state.providers.get(name)
    if handle is not None:
        return handle
    try:
        body = await state.kube.get_cluster_object("gpuproviders", name)
        return await ensure_client(name, body.get("spec") or {}, state)
    except (NotFound, ProviderSpecError, ProviderError):
        return None
