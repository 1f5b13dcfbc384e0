"""The simulated cloud's behaviour, apart from HTTP: launch, terminate, interrupt, boot.

The API handlers (app.py) only parse and render; every decision is here, over the SQLite store, so
it is tested without a server. Time comes from an injectable clock and all scheduled work (a boot
due, an interruption's termination due) is stored as an absolute time, so `tick()` can be driven
step by step in tests and a restarted process resumes where the last one stopped.

Instance life: launch -> `pending`; after the boot delay `tick` creates the Node and marks it
`running` (unless the launch was hit by a never-register fault: then it runs without a Node, which
is what a machine whose bootstrap fails looks like from outside); terminate -> `terminating`; the
next `tick` deletes the Node and marks it `terminated`. A spot interruption sets a notice time and
a termination time `grace` seconds later, when `tick` terminates it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpupool.catalog import Offer
from simcloud.nodes import NodeWriter, render_node
from simcloud.offers import offer_names
from simcloud.store import InstanceStore, SimInstance

log = logging.getLogger(__name__)

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


class SimError(Exception):
    """A refusal the API turns into `{"error": {"code", "message"}}` with `status`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    region: str
    instance_type: str
    zone: str = ""
    capacity_type: str = "on-demand"
    name: str = ""
    client_token: str | None = None
    user_data: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[tuple[str, str, str], ...] = ()
    max_price: float | None = None


class SimCloud:
    def __init__(
        self,
        store: InstanceStore,
        offers: Sequence[Offer],
        nodes: NodeWriter,
        *,
        boot_delay: float = 5.0,
        interrupt_grace: float = 30.0,
        capacity_per_offer: int = 0,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex[:12],
    ) -> None:
        self.store = store
        self.offers = list(offers)
        self.nodes = nodes
        self.boot_delay = boot_delay
        self.interrupt_grace = interrupt_grace
        self.capacity_per_offer = capacity_per_offer
        self.clock = clock
        self._new_id = new_id
        self._by_place: dict[tuple[str, str], list[Offer]] = {}
        for offer in self.offers:
            self._by_place.setdefault((offer.region, offer.instance_type), []).append(offer)

    # --- offers -------------------------------------------------------------------------------

    def move_prices(self, factor: float, gpu: str | None = None) -> int:
        """Multiply the prices of every offer (of one GPU model, if named); returns how many moved."""
        moved = 0
        for i, offer in enumerate(self.offers):
            if gpu is not None and offer.gpu != gpu:
                continue
            self.offers[i] = dataclasses.replace(
                offer,
                on_demand_price=None
                if offer.on_demand_price is None
                else round(offer.on_demand_price * factor, 4),
                spot_price=None if offer.spot_price is None else round(offer.spot_price * factor, 4),
            )
            moved += 1
        self._by_place = {}
        for offer in self.offers:
            self._by_place.setdefault((offer.region, offer.instance_type), []).append(offer)
        return moved

    def find_offer(self, region: str, instance_type: str, zone: str = "") -> Offer | None:
        candidates = self._by_place.get((region, instance_type), [])
        if zone:
            candidates = [o for o in candidates if o.zone == zone]
        return candidates[0] if candidates else None

    def live_count(self, offer_key: str) -> int:
        return sum(
            1
            for i in self.store.all(states=("pending", "running", "terminating"))
            if i.offer_key == offer_key
        )

    def sold_out(self, offer: Offer) -> bool:
        """Whether the offer's machines are all rented (only with a finite capacity per offer):
        terminating machines still count, as a real cloud frees them only once they are gone."""
        return self.capacity_per_offer > 0 and self.live_count(offer.key) >= self.capacity_per_offer

    # --- instances ----------------------------------------------------------------------------

    def validate(self, spec: LaunchSpec) -> Offer:
        """The offer a launch asks for; SimError(400) if it names none or asks the impossible."""
        if spec.capacity_type not in ("spot", "on-demand"):
            raise SimError(
                400, "invalid-request", f"capacityType must be spot or on-demand, not {spec.capacity_type!r}"
            )
        offer = self.find_offer(spec.region, spec.instance_type, spec.zone)
        if offer is None:
            where = f"{spec.region}/{spec.zone}" if spec.zone else spec.region
            raise SimError(400, "invalid-request", f"no instance type {spec.instance_type!r} in {where!r}")
        if offer.price(spec.capacity_type) is None:  # type: ignore[arg-type]
            raise SimError(
                400,
                "invalid-request",
                f"{spec.instance_type} is not sold as {spec.capacity_type} in {offer.region}",
            )
        for _, _, effect in spec.taints:
            if effect not in TAINT_EFFECTS:
                raise SimError(400, "invalid-request", f"taint effect must be one of {TAINT_EFFECTS}")
        return offer

    def launch(
        self, spec: LaunchSpec, offer: Offer, *, never_register: bool = False
    ) -> tuple[SimInstance, bool]:
        """Launch (or, for a known client token, return) an instance. True if newly launched."""
        if spec.client_token:
            existing = self.store.by_client_token(spec.client_token)
            if existing is not None:
                return existing, False
        if self.sold_out(offer):
            raise SimError(
                409,
                "insufficient-capacity",
                f"all {self.capacity_per_offer} {offer.instance_type} in {offer.region} are rented",
            )
        price = offer.price(spec.capacity_type)  # type: ignore[arg-type]
        assert price is not None  # validate() checked
        # maxPrice is a spot bid ceiling, as on real spot markets; on-demand has a fixed price and
        # ignores it (a caller may well send its discounted contract price).
        if spec.capacity_type == "spot" and spec.max_price is not None and spec.max_price < price:
            raise SimError(
                409,
                "insufficient-capacity",
                f"no spot capacity at or below {spec.max_price}/h (now {price}/h)",
            )
        now = self.clock()
        instance_id = self._new_id()
        instance = SimInstance(
            id=instance_id,
            name=spec.name or f"simcloud-{instance_id}",
            client_token=spec.client_token or None,
            offer_key=offer.key,
            region=offer.region,
            zone=offer.zone,
            instance_type=offer.instance_type,
            gpu=offer.gpu,
            gpu_count=offer.gpu_count,
            gpu_memory_gib=offer.gpu_memory_gib,
            vcpus=offer.vcpus or 8 * offer.gpu_count,
            memory_gib=offer.memory_gib or 64.0 * offer.gpu_count,
            cpu_arch=offer.cpu_arch,
            capacity_type=spec.capacity_type,
            price_per_hour=price,
            tags=dict(spec.tags),
            taints=spec.taints,
            user_data=spec.user_data,
            state="pending",
            launched_at=now,
            boot_at=now + self.boot_delay,
            never_register=never_register,
        )
        self.store.save(instance)
        log.info(
            "launched %s (%s %s, %s)",
            instance.id,
            instance.region,
            instance.instance_type,
            instance.capacity_type,
        )
        return instance, True

    def get(self, instance_id: str) -> SimInstance | None:
        return self.store.get(instance_id)

    def list_instances(
        self, *, tags: Mapping[str, str] | None = None, include_terminated: bool = False
    ) -> list[SimInstance]:
        states = (
            ("pending", "running", "terminating", "terminated")
            if include_terminated
            else (
                "pending",
                "running",
                "terminating",
            )
        )
        wanted = dict(tags or {})
        return [
            i for i in self.store.all(states=states) if all(i.tags.get(k) == v for k, v in wanted.items())
        ]

    def terminate(self, instance_id: str) -> SimInstance | None:
        """Begin terminating; a no-op for an instance already terminating or terminated."""
        instance = self.store.get(instance_id)
        if instance is None or instance.state in ("terminating", "terminated"):
            return instance
        instance = dataclasses.replace(instance, state="terminating", terminating_at=self.clock())
        self.store.save(instance)
        log.info("terminating %s", instance.id)
        return instance

    def interrupt(self, instance_id: str, grace: float | None = None) -> SimInstance | None:
        """Announce a spot interruption: notice now, termination `grace` seconds later."""
        instance = self.store.get(instance_id)
        if instance is None or instance.state in ("terminating", "terminated"):
            return instance
        if instance.notice_at is not None:
            return instance
        now = self.clock()
        grace = self.interrupt_grace if grace is None else grace
        instance = dataclasses.replace(instance, notice_at=now, interrupt_at=now + grace)
        self.store.save(instance)
        log.info("interruption notice for %s, terminating in %.0fs", instance.id, grace)
        return instance

    def interruptions(self) -> list[SimInstance]:
        # Every instance with a notice, whenever it came.
        return self.store.due("notice_at", float("inf"), states=("pending", "running", "terminating"))

    # --- the clock's work ---------------------------------------------------------------------

    async def tick(self) -> None:
        """Do what is due: boot pending instances, terminate interrupted ones, remove the Nodes of
        terminating ones. One instance whose Node cannot be written is logged and retried on the
        next tick without holding up the others."""
        now = self.clock()
        # Machines boot and go away side by side, as in a real cloud: a hundred launched together
        # join together, not one after another.
        await self._all(
            (self._boot(i, now), i, "boot") for i in self.store.due("boot_at", now, states=("pending",))
        )
        for instance in self.store.due("interrupt_at", now, states=("pending", "running")):
            self.terminate(instance.id)
        await self._all(
            (self._finish_termination(i, now), i, "termination")
            for i in self.store.all(states=("terminating",))
        )

    async def _all(self, steps: Iterable[tuple[Coroutine[Any, Any, None], SimInstance, str]]) -> None:
        gate = asyncio.Semaphore(32)

        async def one(step: Coroutine[Any, Any, None], instance: SimInstance, what: str) -> None:
            async with gate:
                await self._isolated(step, instance, what)

        await asyncio.gather(*(one(*step) for step in steps))

    async def _isolated(self, step: Coroutine[Any, Any, None], instance: SimInstance, what: str) -> None:
        try:
            await step
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s of %s failed; retrying on the next tick", what, instance.id)

    # The store is re-read after every await: the API may have changed the instance meanwhile, and
    # a terminate that arrives during a boot must win.

    async def _boot(self, instance: SimInstance, now: float) -> None:
        if not instance.never_register:
            await self.nodes.ensure_node(render_node(instance))
        current = self.store.get(instance.id)
        if current is not None and current.state == "pending":
            registered = not current.never_register
            self.store.save(
                dataclasses.replace(current, state="running", running_at=now, node_registered=registered)
            )

    async def _finish_termination(self, instance: SimInstance, now: float) -> None:
        await self.nodes.delete_node(instance.node_name)
        current = self.store.get(instance.id)
        if current is not None and current.state == "terminating":
            self.store.save(
                dataclasses.replace(current, state="terminated", terminated_at=now, node_registered=False)
            )

    async def resume(self) -> None:
        """After a restart: make the cluster match the store (Nodes of running instances exist;
        Nodes of terminated ones whose removal was interrupted are gone)."""
        for instance in self.store.all(states=("running",)):
            if instance.node_registered:
                await self.nodes.ensure_node(render_node(instance))
        for instance in self.store.all(states=("terminated",)):
            if instance.node_registered:
                await self.nodes.delete_node(instance.node_name)
                self.store.save(dataclasses.replace(instance, node_registered=False))

    async def run(self, interval: float = 0.5) -> None:
        """Tick forever (until cancelled); a failed tick is logged and retried on the next one."""
        resumed = False
        while True:
            try:
                if not resumed:
                    await self.resume()
                    resumed = True
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("tick failed; retrying in %.1fs", interval)
            await asyncio.sleep(interval)


__all__ = ["LaunchSpec", "SimCloud", "SimError", "offer_names"]
