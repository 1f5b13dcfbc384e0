"""simcloud's HTTP API: a neocloud-shaped REST surface plus an admin surface for fault injection.

Public API (bearer key required when simcloud runs with `--api-key`):

    GET    /v1/instance-types                 offers with prices and availability
    POST   /v1/instances                      launch {region, zone?, instanceType, capacityType,
                                              name?, clientToken?, userData?, tags?, taints?, maxPrice?}
    GET    /v1/instances?tag=k=v&includeTerminated=true
    GET    /v1/instances/{id}
    DELETE /v1/instances/{id}                 terminate (idempotent; 404 only for unknown ids)
    GET    /v1/interruptions                  spot interruption notices

Admin (no auth; it is a simulator):

    POST   /admin/faults                      add a fault rule (see faults.py); {"seed": n} reseeds
    GET    /admin/faults
    DELETE /admin/faults                      remove every rule
    POST   /admin/instances/{id}/interrupt    {"graceSeconds": n}
    POST   /admin/tick                        run the boot/terminate step now
    POST   /admin/prices                      {"factor": f, "gpu"?: name}: move prices, as markets do
    GET    /healthz

Errors are `{"error": {"code", "message"}}` with codes insufficient-capacity (409), quota-exceeded
(403), unauthorized (401), invalid-request (400), not-found (404), rate-limited (429, with
Retry-After), internal (500) and unavailable (502/503). Handlers only parse and render; the
behaviour is in service.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gpupool.catalog import Offer
from simcloud.faults import FaultBook, fault_from_json
from simcloud.nodes import DISK_GIB
from simcloud.offers import offer_names
from simcloud.service import LaunchSpec, SimCloud, SimError
from simcloud.store import SimInstance

log = logging.getLogger(__name__)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def offer_json(offer: Offer, available: bool) -> dict[str, Any]:
    return {
        "key": offer.key,
        "region": offer.region,
        "zone": offer.zone,
        "instanceType": offer.instance_type,
        "gpu": offer.gpu,
        "gpuCount": offer.gpu_count,
        "gpuMemoryGiB": offer.gpu_memory_gib,
        "vcpus": offer.vcpus,
        "memoryGiB": offer.memory_gib,
        "diskGiB": DISK_GIB,
        "cpuArch": offer.cpu_arch,
        "network": offer.network,
        "onDemandPrice": offer.on_demand_price,
        "spotPrice": offer.spot_price,
        "available": available,
    }


def instance_json(instance: SimInstance) -> dict[str, Any]:
    interruption = None
    if instance.notice_at is not None:
        interruption = {"noticeTime": iso(instance.notice_at), "terminateTime": iso(instance.interrupt_at)}
    return {
        "id": instance.id,
        "name": instance.name,
        "state": instance.state,
        "providerID": instance.provider_id,
        "nodeName": instance.node_name,
        "region": instance.region,
        "zone": instance.zone,
        "instanceType": instance.instance_type,
        "offerKey": instance.offer_key,
        "gpu": instance.gpu,
        "gpuCount": instance.gpu_count,
        "capacityType": instance.capacity_type,
        "pricePerHour": instance.price_per_hour,
        "tags": dict(instance.tags),
        "launchedAt": iso(instance.launched_at),
        "runningAt": iso(instance.running_at),
        "terminatedAt": iso(instance.terminated_at),
        "interruption": interruption,
    }


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"Retry-After": "1"} if status == 429 else None
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _parse_tag_filters(values: list[str]) -> dict[str, str]:
    filters: dict[str, str] = {}
    for value in values:
        key, sep, wanted = value.partition("=")
        if not sep:
            raise SimError(400, "invalid-request", f"tag filter must be key=value, not {value!r}")
        filters[key] = wanted
    return filters


def _launch_spec(body: Any) -> LaunchSpec:
    if not isinstance(body, dict):
        raise SimError(400, "invalid-request", "body must be a JSON object")
    for required in ("region", "instanceType"):
        if not isinstance(body.get(required), str) or not body[required]:
            raise SimError(400, "invalid-request", f"{required} is required")
    tags = body.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise SimError(400, "invalid-request", "tags must be an object of strings")
    taints_raw = body.get("taints") or []
    try:
        taints = tuple((str(t["key"]), str(t.get("value", "")), str(t["effect"])) for t in taints_raw)
    except (KeyError, TypeError):
        raise SimError(400, "invalid-request", "taints must be a list of {key, value, effect}") from None
    max_price = body.get("maxPrice")
    if max_price is not None and not isinstance(max_price, int | float):
        raise SimError(400, "invalid-request", "maxPrice must be a number")
    return LaunchSpec(
        region=body["region"],
        zone=str(body.get("zone") or ""),
        instance_type=body["instanceType"],
        capacity_type=str(body.get("capacityType") or "on-demand"),
        name=str(body.get("name") or ""),
        client_token=str(body["clientToken"]) if body.get("clientToken") else None,
        user_data=str(body.get("userData") or ""),
        tags={str(k): v for k, v in tags.items()},
        taints=taints,
        max_price=float(max_price) if max_price is not None else None,
    )


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise SimError(400, "invalid-request", "body is not valid JSON") from None


def create_app(
    cloud: SimCloud,
    faults: FaultBook | None = None,
    *,
    api_key: str = "",
    tick_interval: float | None = 0.5,
) -> Starlette:
    """The ASGI app. With `tick_interval` set, the app's lifespan runs the boot/terminate loop;
    tests pass None and call `cloud.tick()` (or POST /admin/tick) themselves."""
    book = faults if faults is not None else FaultBook()

    def authorize(request: Request) -> None:
        if api_key:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                raise SimError(401, "unauthorized", "missing or invalid API key")

    async def gate(request: Request, names: frozenset[str] | None = None) -> None:
        """Auth, then the faults every API call is subject to (latency, random errors)."""
        authorize(request)
        verdict = book.judge(names or frozenset({"*"}))
        if verdict.latency_ms:
            await asyncio.sleep(verdict.latency_ms / 1000)
        if verdict.error_status is not None:
            raise SimError(
                verdict.error_status, verdict.error_code, f"injected fault: HTTP {verdict.error_status}"
            )

    async def list_offers(request: Request) -> Response:
        await gate(request)
        region = request.query_params.get("region")
        data = [
            offer_json(o, not book.unavailable(offer_names(o)) and not cloud.sold_out(o))
            for o in cloud.offers
            if region is None or o.region == region
        ]
        return JSONResponse({"data": data})

    async def launch(request: Request) -> Response:
        authorize(request)  # before parsing: an unauthenticated caller learns nothing about its body
        body = await _json_body(request)
        spec = _launch_spec(body)
        offer = cloud.find_offer(spec.region, spec.instance_type, spec.zone)
        names = offer_names(offer) if offer is not None else frozenset({spec.instance_type, spec.region})
        await gate(request, names)
        offer = cloud.validate(spec)
        if spec.client_token:
            existing = cloud.store.by_client_token(spec.client_token)
            if existing is not None:
                return JSONResponse({"data": instance_json(existing)}, status_code=200)
        refusal = book.refusal(names)
        if refusal is not None:
            status, code = refusal
            message = (
                "quota exceeded for this account"
                if code == "quota-exceeded"
                else f"not enough capacity for {offer.instance_type} in {offer.region}"
            )
            raise SimError(status, code, message)
        instance, created = cloud.launch(spec, offer, never_register=book.never_register(names))
        return JSONResponse({"data": instance_json(instance)}, status_code=201 if created else 200)

    async def list_instances(request: Request) -> Response:
        await gate(request)
        tags = _parse_tag_filters(request.query_params.getlist("tag"))
        include = request.query_params.get("includeTerminated", "").lower() in ("1", "true", "yes")
        instances = cloud.list_instances(tags=tags, include_terminated=include)
        return JSONResponse({"data": [instance_json(i) for i in instances]})

    async def get_instance(request: Request) -> Response:
        await gate(request)
        instance = cloud.get(request.path_params["id"])
        if instance is None:
            raise SimError(404, "not-found", f"instance {request.path_params['id']} not found")
        return JSONResponse({"data": instance_json(instance)})

    async def terminate(request: Request) -> Response:
        await gate(request)
        instance = cloud.terminate(request.path_params["id"])
        if instance is None:
            raise SimError(404, "not-found", f"instance {request.path_params['id']} not found")
        return JSONResponse({"data": instance_json(instance)})

    async def interruptions(request: Request) -> Response:
        await gate(request)
        data = [
            {"instanceId": i.id, "noticeTime": iso(i.notice_at), "terminateTime": iso(i.interrupt_at)}
            for i in cloud.interruptions()
        ]
        return JSONResponse({"data": data})

    async def add_fault(request: Request) -> Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise SimError(400, "invalid-request", "body must be a JSON object")
        if "seed" in body:
            book.reseed(int(body["seed"]))
        if set(body) - {"seed"}:
            try:
                book.add(fault_from_json(body))
            except (ValueError, TypeError) as error:
                raise SimError(400, "invalid-request", str(error)) from None
        return JSONResponse({"data": [f.to_json() for f in book.faults]}, status_code=201)

    async def move_prices(request: Request) -> Response:
        body = await _json_body(request)
        factor = body.get("factor") if isinstance(body, dict) else None
        if not isinstance(factor, int | float) or not 0 < factor <= 100:
            raise SimError(400, "invalid-request", "factor must be a number in (0, 100]")
        gpu = body.get("gpu")
        moved = cloud.move_prices(float(factor), gpu=str(gpu) if gpu else None)
        return JSONResponse({"data": {"moved": moved}})

    async def get_faults(request: Request) -> Response:
        return JSONResponse({"data": [f.to_json() for f in book.faults]})

    async def clear_faults(request: Request) -> Response:
        book.clear()
        return JSONResponse({"data": []})

    async def interrupt(request: Request) -> Response:
        body = await _json_body(request)
        grace = body.get("graceSeconds") if isinstance(body, dict) else None
        instance = cloud.interrupt(request.path_params["id"], None if grace is None else float(grace))
        if instance is None:
            raise SimError(404, "not-found", f"instance {request.path_params['id']} not found")
        return JSONResponse({"data": instance_json(instance)})

    async def tick(request: Request) -> Response:
        await cloud.tick()
        return JSONResponse({"data": "ok"})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "offers": len(cloud.offers)})

    async def on_sim_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SimError)
        return error_response(exc.status, exc.code, exc.message)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[Mapping[str, Any]]:
        task = asyncio.create_task(cloud.run(tick_interval)) if tick_interval else None
        try:
            yield {}
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    routes = [
        Route("/v1/instance-types", list_offers, methods=["GET"]),
        Route("/v1/instances", launch, methods=["POST"]),
        Route("/v1/instances", list_instances, methods=["GET"]),
        Route("/v1/instances/{id}", get_instance, methods=["GET"]),
        Route("/v1/instances/{id}", terminate, methods=["DELETE"]),
        Route("/v1/interruptions", interruptions, methods=["GET"]),
        Route("/admin/faults", add_fault, methods=["POST"]),
        Route("/admin/faults", get_faults, methods=["GET"]),
        Route("/admin/faults", clear_faults, methods=["DELETE"]),
        Route("/admin/instances/{id}/interrupt", interrupt, methods=["POST"]),
        Route("/admin/tick", tick, methods=["POST"]),
        Route("/admin/prices", move_prices, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={SimError: on_sim_error}, lifespan=lifespan)
