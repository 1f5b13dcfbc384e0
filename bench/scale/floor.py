"""The floor under bench/scale: the same Kubernetes objects, with no provisioner at all.

On 2 cores the control plane alone spends more CPU on a 1,000-object burst than the targets
leave wall time, so gpupool's wall time means little until we know what the same objects cost
without it. On a fresh cluster with no operator and no simcloud this creates what a gpupool run
ends up with: its nodes (simcloud's own `render_node`, with the labels and GPU taint the
operator's launch gives them; the instance types of gpupool's claims when it ran first, else
gpupool's packer over the same offers in one batch), and its workload (the same `gpu_pods`
Deployment; or the ModelDeployments with the Deployment, Service and PodDisruptionBudget that
gpupool's planner and renderer make of each). Two orders, each on a cluster of its own:

- (a) nodes first, all Ready and untainted before the clock starts: scheduler, controllers, KWOK;
- (b) workload first, then every node at once: an ideal provisioner that knew the answer.

Where the scheduler spreads pods that gpupool's packer packed, `TopUp` buys for the leftovers as
gpupool's next batch would, and says so. The floor's client is a ServiceAccount of its own (the
audit log counts its requests) and creates with POST, where the operator applies server-side.

    .venv/bin/python bench/scale/run.py pods --count 1000 --peer floor --idle 0 [--skip-gpupool]
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.scale.cluster import admin_service_account_kubeconfig, fresh_cluster, gpu_pods
from bench.scale.offers import REGION, write_offers_csv
from bench.scale.run import BENCH_NS, GROUP, MODELS, VERSION, Result, measure, running_pods
from kubernetes import client, config

from gpupool.api import GpuPoolSpec, ModelDeploymentSpec
from gpupool.catalog import Offer, load_offers_csv
from gpupool.controllers.modeldeployment.plan import kept_from_plan
from gpupool.controllers.nodeclaim.launch import CLAIM_LABEL
from gpupool.controllers.pool.pending import pod_demand
from gpupool.planner import PendingPod, pack_pods, plan_deployment, pool_constraints_from_spec
from gpupool.planner.scheduling import gpupool_labels
from gpupool.planner.spec import request_from_spec
from gpupool.providers.base import TAG_CLAIM, TAG_CLAIM_UID, TAG_CLUSTER
from gpupool.providers.sim import offer_from_simcloud
from gpupool.serving import render_all, serving_input_from_spec
from simcloud.app import offer_json
from simcloud.nodes import render_node
from simcloud.offers import shipped_simcloud_offers, simcloud_offers
from simcloud.store import SimInstance

POOL, NAMESPACE = "bench", "work"
USER = f"system:serviceaccount:{BENCH_NS}:floor"
# Requests in flight while creating: about what one Python client gets through on 2 cores.
CREATES_AT_ONCE = 8
Unit = list[dict[str, Any]]  # objects created in order: a ModelDeployment owns the ones after it


def sold_offers(scenario: str) -> list[Offer]:
    """What simcloud sells in run.py's scenario (simcloud's side: vCPUs, memory, arch)."""
    if scenario == "pods":
        csv = write_offers_csv(Path(tempfile.mkdtemp(prefix="floor-")) / "offers.csv")
        return simcloud_offers(load_offers_csv(csv), sources=["aws"])
    return shipped_simcloud_offers()


def pool_spec(scenario: str) -> GpuPoolSpec:
    """The GpuPool spec run.py's Gpupool.setup writes for the scenario."""
    regions = {"regions": [f"aws-{REGION}"]} if scenario == "pods" else {}
    return GpuPoolSpec.from_k8s({"providers": ["sim"], "capacityTypes": ["on-demand"], **regions})


def pending(pod: dict[str, Any], replicas: int, name: str) -> list[PendingPod]:
    """The pool controller's view of `replicas` pending pods like `pod` (a pod or pod template)."""
    demand = pod_demand({"metadata": {"name": name, "namespace": NAMESPACE}, "spec": pod["spec"]})
    assert demand is not None, f"{name}: its pods ask no GPU of a pool"
    return [
        PendingPod(name=f"{name}-{i}", gpus=demand.gpus, gpu_types=demand.gpu_types, pool=POOL,
                   capacity_types=tuple(c for c in demand.capacity_types if c in ("spot", "on-demand")),  # type: ignore[misc]
                   requests=demand.requests, constraints=demand.constraints)
        for i in range(replicas)
    ]  # fmt: skip


def node_offers(
    scenario: str, pods: Sequence[PendingPod], claimed: Sequence[dict[str, Any]]
) -> tuple[list[Offer], str]:
    """The simcloud offer of every node to create, and where the list came from."""
    sold = sold_offers(scenario)
    by_place = {(o.region, o.zone, o.instance_type): o for o in sold}
    if claimed:
        chosen = [by_place[(c["region"], c.get("zone", ""), c["instanceType"])] for c in claimed]
        return chosen, "the instance types of gpupool's claims in this run"
    seen = [offer_from_simcloud("sim", offer_json(o, True)).offer for o in sold]
    result = pack_pods(pods, [], seen, pool_constraints_from_spec(pool_spec(scenario), name=POOL))
    assert not result.unplaced, f"gpupool's packer places no node for {len(result.unplaced)} pods"
    chosen = [by_place[(n.offer.region, n.offer.zone, n.offer.instance_type)] for n in result.new_instances]
    return chosen, "gpupool's packer over the same offers, all pods in one batch"


def node_manifest(offer: Offer, cluster: str) -> dict[str, Any]:
    """The Node simcloud registers for a claim launched on `offer`, after the operator's patch
    (its labels are already on it: the launch passes them as tags)."""
    instance_id, claim = uuid.uuid4().hex[:12], f"{POOL}-{uuid.uuid4().hex[:8]}"
    labels = {CLAIM_LABEL: claim, **gpupool_labels(POOL, offer.gpu, offer.gpu_count, "on-demand", "sim")}
    now = time.time()
    instance = SimInstance(
        id=instance_id, name=f"simcloud-{instance_id}", offer_key=offer.key, region=offer.region,
        zone=offer.zone, instance_type=offer.instance_type, gpu=offer.gpu, gpu_count=offer.gpu_count,
        gpu_memory_gib=offer.gpu_memory_gib, vcpus=offer.vcpus or 8 * offer.gpu_count,
        memory_gib=offer.memory_gib or 64.0 * offer.gpu_count, cpu_arch=offer.cpu_arch,
        capacity_type="on-demand", price_per_hour=offer.on_demand_price or 0.0, state="running",
        launched_at=now, boot_at=now,
        tags={**labels, TAG_CLUSTER: cluster, TAG_CLAIM_UID: str(uuid.uuid4()), TAG_CLAIM: claim},
    )  # fmt: skip
    return render_node(instance)


def model_units(count: int) -> list[Unit]:
    """run.py's N ModelDeployments, each with the objects gpupool renders for it (owner uid later)."""
    offers = [offer_from_simcloud("sim", offer_json(o, True)).offer for o in shipped_simcloud_offers()]
    constraints = pool_constraints_from_spec(pool_spec("models"), name=POOL)
    plans: dict[str, Any] = {}
    units = []
    for i in range(count):
        name, model = f"m{i:04d}", MODELS[i % len(MODELS)]
        wire = {"model": model, "pool": POOL, "engine": {"maxModelLen": 4096}}
        spec = ModelDeploymentSpec.from_k8s(wire)
        plan = plans.get(model) or plan_deployment(request_from_spec(spec), offers, constraints)
        kept = kept_from_plan(plans.setdefault(model, plan), "", ())
        inputs = serving_input_from_spec(
            name, NAMESPACE, "", 1, spec, gpu_types=[kept.gpu], gpus_per_replica=kept.gpus_per_replica,
            tensor_parallel_size=kept.tensor_parallel_size, max_model_len=kept.max_model_len,
            model_size_gib=kept.weights_gib, pool_name=POOL, pool_taints=[],
        )  # fmt: skip
        md = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": name},
              "spec": wire}  # fmt: skip
        units.append([md, *render_all(inputs)])
    return units


class Creator:
    """Creates manifests with the floor's ServiceAccount; responses are not deserialized."""

    def __init__(self, api: client.ApiClient) -> None:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        policy, custom = client.PolicyV1Api(api), client.CustomObjectsApi(api)
        self.by_kind: dict[str, Callable[..., Any]] = {
            "Node": core.create_node,
            "Deployment": lambda body, **kw: apps.create_namespaced_deployment(NAMESPACE, body, **kw),
            "Service": lambda body, **kw: core.create_namespaced_service(NAMESPACE, body, **kw),
            "PodDisruptionBudget": lambda body, **kw: policy.create_namespaced_pod_disruption_budget(NAMESPACE, body, **kw),
            "ModelDeployment": lambda body, **kw: custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modeldeployments", body, **kw),
        }  # fmt: skip

    def unit(self, objects: Unit) -> None:
        owner = ""
        for body in objects:
            for ref in body["metadata"].get("ownerReferences") or []:
                ref["uid"] = owner
            response = self.by_kind[body["kind"]](body, _preload_content=False)
            if body["kind"] == "ModelDeployment":
                owner = json.loads(response.data)["metadata"]["uid"]

    def all(self, units: Sequence[Unit]) -> None:
        with ThreadPoolExecutor(CREATES_AT_ONCE) as pool:
            list(pool.map(self.unit, units))


def _items(list_call: Callable[..., Any], *args: str) -> list[dict[str, Any]]:
    """A list call's items as plain JSON (the client's models cost seconds of CPU at 1,000 items)."""
    return list(json.loads(list_call(*args, _preload_content=False).data)["items"])


def schedulable_nodes(api: client.ApiClient) -> int:
    """Nodes Ready whose node.kubernetes.io/not-ready taint the node controller has removed (it
    lags Ready by 1-3 s; a pod tried before gets the scheduler's backoff, up to 10 s)."""
    return sum(
        1
        for n in _items(client.CoreV1Api(api).list_node)
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions") or [])
        and not any(t["key"].startswith("node.kubernetes.io/") for t in n["spec"].get("taints") or [])
    )


class TopUp:
    """gpupool's next batch, for pods the scheduler leaves without GPUs on the planned nodes.

    gpupool's packer packs pods tightly; the scheduler spreads them (LeastAllocated), so a 2-GPU
    pod can find only single free GPUs on several nodes. gpupool then buys for the pods still
    Pending; so does this, with its packer, once every node has been schedulable for
    QUIET_SECONDS (longer than the scheduler's 10 s backoff) and some pod is still Unschedulable.
    """

    QUIET_SECONDS = 12

    def __init__(self, admin: client.ApiClient, creator: Creator, scenario: str, cluster: str) -> None:
        self.admin, self.creator, self.scenario, self.cluster = admin, creator, scenario, cluster
        self.expected, self.added, self.offers, self.next_look = 0, 0, list[Offer](), 0.0
        self.quiet_since: float | None = None

    def nodes(self, offers: list[Offer]) -> None:
        self.offers += offers
        self.expected += len(offers)
        self.creator.all([[node_manifest(o, self.cluster)] for o in offers])

    def check(self) -> None:
        """At most every 5 s: each look lists every node, which costs the API server too."""
        if time.monotonic() < self.next_look:
            return
        self.next_look = time.monotonic() + 5
        if schedulable_nodes(self.admin) < self.expected:
            self.quiet_since = None
            return
        self.quiet_since = self.quiet_since or time.monotonic()
        if time.monotonic() - self.quiet_since < self.QUIET_SECONDS:
            return
        stuck = [p for p in _items(client.CoreV1Api(self.admin).list_namespaced_pod, NAMESPACE)
                 if not p["spec"].get("nodeName") and any(c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
                                                          for c in p["status"].get("conditions") or [])]  # fmt: skip
        if stuck:
            offers, _ = node_offers(self.scenario, [q for p in stuck for q in pending(p, 1, p["metadata"]["name"])], [])  # fmt: skip
            print(f"floor: {len(stuck)} pods Unschedulable on the planned nodes; {len(offers)} more nodes")
            self.added += len(offers)
            self.nodes(offers)
            self.quiet_since = None


def run_variant(
    scenario: str, count: int, nodes_first: bool, timeout: float, claimed: Sequence[Any]
) -> Result:
    """One floor run on a fresh cluster of its own: (a) nodes first, or (b) workload first."""
    variant = "a" if nodes_first else "b"
    cluster = fresh_cluster(f"floor-{scenario}-{variant}")
    try:
        admin = config.new_client_from_config(config_file=cluster.kubeconfig)  # type: ignore[no-untyped-call]
        namespace = client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE))
        client.CoreV1Api(admin).create_namespace(namespace)
        if scenario == "models":
            from tests.conftest import apply_crds

            apply_crds(admin)
            workload = model_units(count)
            pods = [p for u in workload for p in pending(u[1]["spec"]["template"], u[1]["spec"]["replicas"], u[1]["metadata"]["name"])]  # fmt: skip
            finished: Callable[[], int] = lambda: sum(  # noqa: E731
                1 for d in _items(client.AppsV1Api(admin).list_namespaced_deployment, NAMESPACE)
                if (d.get("status") or {}).get("readyReplicas", 0) == d["spec"]["replicas"])  # fmt: skip
        else:
            deployment = gpu_pods("burst", count, {"gpupool.dev/pool": POOL})
            workload, pods = [[deployment]], pending(deployment["spec"]["template"], count, "burst")
            finished = lambda: running_pods(client.CoreV1Api(admin), NAMESPACE)  # noqa: E731
        offers, source = node_offers(scenario, pods, claimed)
        kinds = ", ".join(f"{n} {k}" for k, n in Counter(o.instance_type for o in offers).most_common())
        print(f"floor ({variant}): {len(offers)} nodes from {source}: {kinds}")
        tmp = Path(tempfile.mkdtemp(prefix="floor-scale-"))
        kc = admin_service_account_kubeconfig(cluster.kubeconfig, BENCH_NS, "floor", tmp / "floor.kubeconfig")
        creator = Creator(config.new_client_from_config(config_file=str(kc)))  # type: ignore[no-untyped-call]
        top_up = TopUp(admin, creator, scenario, cluster.name)
        if nodes_first:
            began, cp = time.monotonic(), cluster.control_plane_cpu()
            top_up.nodes(offers)
            created = time.monotonic() - began
            while schedulable_nodes(admin) < len(offers) and time.monotonic() - began < timeout:
                time.sleep(1)
            print(f"floor (a): {len(offers)} nodes created in {created:.1f} s, Ready and untainted after "
                  f"{time.monotonic() - began:.1f} s, control-plane CPU {cluster.control_plane_cpu() - cp:.1f} s "
                  "(before the clock)")  # fmt: skip

        def start() -> None:
            top_up.creator.all(workload)
            if not nodes_first:  # the ideal provisioner: every node at once, the moment the pods exist
                top_up.nodes(offers)

        def done() -> int:
            if (ready := finished()) < count:
                top_up.check()
            return ready

        label, since = f"floor ({variant}) {'nodes' if nodes_first else 'workload'} first", datetime.now(UTC)
        result = measure(label, cluster, os.getpid(), USER, count, start, done, timeout)
        print(f"{label}: requests, first .. last second after the clock started:\n{cluster.activity(since)}")
        if top_up.added:
            print(f"{label}: {top_up.added} nodes more than planned (the scheduler spread the pods)")
        result.nodes, result.cost_per_hour = len(top_up.offers), sum(o.on_demand_price or 0 for o in top_up.offers)  # fmt: skip
        return result
    finally:
        cluster.down()


def report(gpupool: Result | None, floors: list[Result], what: str) -> None:
    """One table: gpupool (if it ran), each floor, and each floor's share of gpupool."""
    columns = ([gpupool] if gpupool else []) + floors
    components = sorted({name for r in columns for name in r.components})

    def share(a: float, b: float) -> str:
        return f"{a / b:.0%}" if b else "-"

    rows: list[tuple[str, Callable[[Result], str], Callable[[Result], float]]] = [
        ("all done", lambda r: f"{'yes' if r.done >= r.count else f'NO ({r.done})'} in {r.seconds:.1f} s", lambda r: r.seconds),
        ("API requests (audit: the provisioner, or the floor's client)", lambda r: f"{r.requests:,}", lambda r: r.requests),
        ("  reads / writes", lambda r: f"{r.reads:,} / {r.writes:,}", lambda r: r.writes),
        ("provisioner CPU (floor: the bench process)", lambda r: f"{r.cpu_seconds:.1f} s", lambda r: r.cpu_seconds),
        ("control-plane CPU", lambda r: f"{r.control_plane_cpu:.1f} s", lambda r: r.control_plane_cpu),
        *((f"  {name}", lambda r, n=name: f"{r.components.get(n, 0.0):.1f} s", lambda r, n=name: r.components.get(n, 0.0))
          for name in components),
        ("nodes / cost", lambda r: f"{r.nodes} / ${r.cost_per_hour:.2f}/h", lambda r: r.nodes),
    ]  # fmt: skip
    print(f"\n{what}, {columns[0].count}: the floor (no provisioner) beside gpupool")
    shares = [f"{f.name.split(')')[0]}) / gpupool" for f in floors] if gpupool else []
    print("| | " + " | ".join([r.name for r in columns] + shares) + " |")
    print("|---|" + "---:|" * (len(columns) + len(shares)))
    for label, show, value in rows:
        cells = [show(r) for r in columns] + [share(value(f), value(gpupool)) for f in floors if gpupool]
        print(f"| {label} | " + " | ".join(cells) + " |")


def run_floor_peer(scenario: str, count: int, timeout: float, gpupool: Result | None) -> int:
    """Both floor variants after gpupool's run (if any), then the table; 0 if all finished."""
    claimed = gpupool.claim_offers if gpupool else []
    floors = [run_variant(scenario, count, nodes_first, timeout, claimed) for nodes_first in (True, False)]
    report(gpupool, floors, f"{count} pending 1-GPU pods" if scenario == "pods" else f"{count} ModelDeployments")  # fmt: skip
    return 0 if all(r.done >= r.count for r in [*floors, *([gpupool] if gpupool else [])]) else 1
