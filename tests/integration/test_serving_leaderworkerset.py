"""The rendered LeaderWorkerSet against a real API server and scheduler, with no LWS controller.

What only a cluster can tell: that the API server, given the LeaderWorkerSet CRD written from
LWS's v1 API (tests/fixtures/crds/, installed here only if the cluster has none), accepts the
rendered object through server-side apply, fills LWS's defaults, serves its scale
subresource, and rejects what the schema forbids. No LWS controller runs, so no pods come of
it; instead the test creates the pods LWS would (the rendered templates plus the labels LWS
adds) to check what the real API server and kube-scheduler make of their pod affinity: the
API server narrows it to the pod's own group, and the scheduler keeps a group in one
provider and region without keeping other groups out.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from gpupool.serving import ServingInput, render_all, render_leader_worker_set
from gpupool.serving.leaderworkerset import (
    LWS_GROUP_KEY_LABEL,
    LWS_WORKER_INDEX_LABEL,
    leader_selector_labels,
)
from tests.conftest import ROOT, apply_crds, wait_for
from tests.integration.test_serving_apply import FIELD_MANAGER, _owned_by_configmap
from tests.unit.test_serving_leaderworkerset import make_group_input

pytestmark = pytest.mark.cluster

CRD_NAME = "leaderworkersets.leaderworkerset.x-k8s.io"
GROUP, VERSION, PLURAL = "leaderworkerset.x-k8s.io", "v1", "leaderworkersets"
STRICT = [("fieldValidation", "Strict")]


@pytest.fixture(scope="module")
def lws_crd(kube: client.ApiClient) -> Iterator[None]:
    """The LeaderWorkerSet CRD: the cluster's own if it has one (a real LWS install is left
    as it is), else the stand-in, which is deleted again after this module's tests."""
    ext = client.ApiextensionsV1Api(kube)
    try:
        ext.read_custom_resource_definition(CRD_NAME)
        installed = False
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        apply_crds(kube, ROOT / "tests" / "fixtures" / "crds")
        installed = True
    yield
    if installed:
        ext.delete_custom_resource_definition(CRD_NAME)

        def gone() -> bool:
            try:
                ext.read_custom_resource_definition(CRD_NAME)
            except client.ApiException as exc:
                return exc.status == 404
            return False

        wait_for(gone, timeout=60, what=f"CRD {CRD_NAME} deleted")


def _group_input(namespace: str, **overrides: Any) -> ServingInput:
    base = make_group_input(name="llama", namespace=namespace, replicas=1, pool_name=namespace)
    return dataclasses.replace(base, **overrides)


def _apply(dyn: DynamicClient, obj: dict[str, Any], *, dry_run: bool = False) -> Any:
    resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    extra = {"dry_run": "All"} if dry_run else {}
    return dyn.server_side_apply(
        resource,
        body=obj,
        name=obj["metadata"]["name"],
        namespace=obj["metadata"]["namespace"],
        field_manager=FIELD_MANAGER,
        force_conflicts=True,
        # As kubectl does: an unknown field is an error, not a warning and a silent drop.
        query_params=list(STRICT),
        **extra,
    )


def _contains(big: Any, small: Any) -> bool:
    """Whether `big` holds everything `small` does (the server adds defaults, never removes)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _contains(big[k], v) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(big) == len(small) and all(map(_contains, big, small))
    return bool(big == small)


def test_the_api_server_accepts_the_rendered_objects_and_keeps_every_field(
    kube: client.ApiClient, namespace: str, lws_crd: None
) -> None:
    core = client.CoreV1Api(kube)
    dyn = DynamicClient(kube)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    objs = _owned_by_configmap(render_all(_group_input(namespace)), owner)
    assert [o["kind"] for o in objs] == ["LeaderWorkerSet", "Service", "PodDisruptionBudget"]
    generations = [_apply(dyn, obj).metadata.generation for obj in objs]

    custom = client.CustomObjectsApi(kube)
    lws = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "llama")
    assert _contains(lws["spec"], objs[0]["spec"]), "the API server dropped or changed a field"
    # The CRD's defaults, as LWS's would fill them.
    assert lws["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"]["partition"] == 0
    assert lws["metadata"]["ownerReferences"] == objs[0]["metadata"]["ownerReferences"]

    # The same render again changes nothing.
    assert [_apply(dyn, obj).metadata.generation for obj in objs] == generations

    # The scale subresource reads replicas from the spec and the leaders' selector from status.
    selector = ",".join(
        f"{k}={v}" for k, v in sorted(leader_selector_labels(_group_input(namespace)).items())
    )
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "llama", {"status": {"replicas": 1, "hpaPodSelector": selector}}
    )
    scale = custom.get_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "llama")
    assert scale["spec"]["replicas"] == 1
    assert scale["status"] == {"replicas": 1, "selector": selector}


# Each is rejected by the schema, as by the real CRD: 422 Invalid from validation, and 400
# from strict decoding for a field the schema does not declare.
BREAKAGES: list[tuple[str, Callable[[dict[str, Any]], Any], int, str]] = [
    (
        "wrong type",
        lambda s: s["leaderWorkerTemplate"].update(size="two"),
        422,
        "spec.leaderWorkerTemplate.size",
    ),
    ("unknown field", lambda s: s["leaderWorkerTemplate"].update(groupSize=2), 400, "unknown field"),
    ("below minimum", lambda s: s.update(replicas=-1), 422, "spec.replicas"),
    ("not in enum", lambda s: s["leaderWorkerTemplate"].update(restartPolicy="Always"), 422, "restartPolicy"),
    ("required", lambda s: s["leaderWorkerTemplate"].pop("workerTemplate"), 422, "workerTemplate"),
    (
        "template without containers",
        lambda s: s["leaderWorkerTemplate"]["leaderTemplate"]["spec"].pop("containers"),
        422,
        "leaderTemplate.spec.containers",
    ),
]


@pytest.mark.parametrize(("case", "mutate", "status", "message"), BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_the_schema_rejects_a_wrong_object(
    kube: client.ApiClient,
    namespace: str,
    lws_crd: None,
    case: str,
    mutate: Callable[..., Any],
    status: int,
    message: str,
) -> None:
    lws = copy.deepcopy(render_leader_worker_set(_group_input(namespace)))
    mutate(lws["spec"])
    # A create, not an apply: server-side apply turns a wrong type away before the schema
    # sees it (a 500 from building its typed patch), which would say nothing of the CRD.
    with pytest.raises(client.ApiException) as caught:
        client.CustomObjectsApi(kube).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, lws, dry_run="All", field_validation="Strict"
        )
    assert caught.value.status == status, caught.value.body
    assert message in str(caught.value.body), caught.value.body
    # The unbroken object passes the same call.
    client.CustomObjectsApi(kube).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, render_leader_worker_set(_group_input(namespace)),
        dry_run="All", field_validation="Strict",
    )  # fmt: skip


# --- what the scheduler makes of a group's pod affinity ---------------------------------------


def _pod(lws: dict[str, Any], group: int, worker: int) -> dict[str, Any]:
    """The pod LWS would create for `worker` of `group`: the template plus LWS's own labels."""
    lwt = lws["spec"]["leaderWorkerTemplate"]
    template = copy.deepcopy(lwt["leaderTemplate"] if worker == 0 else lwt["workerTemplate"])
    name = lws["metadata"]["name"]
    labels = {
        **template["metadata"]["labels"],
        "leaderworkerset.sigs.k8s.io/name": name,
        "leaderworkerset.sigs.k8s.io/group-index": str(group),
        LWS_WORKER_INDEX_LABEL: str(worker),
        LWS_GROUP_KEY_LABEL: f"group-{group}",
    }
    pod_name = f"{name}-{group}" if worker == 0 else f"{name}-{group}-{worker}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name, "labels": labels, "annotations": template["metadata"]["annotations"]},
        "spec": template["spec"],
    }


def _node_of(core: client.CoreV1Api, namespace: str, pod: str) -> str:
    found = wait_for(
        lambda: core.read_namespaced_pod(pod, namespace).spec.node_name,
        timeout=60,
        what=f"pod {pod} scheduled",
    )
    return str(found)


def _stays_pending(core: client.CoreV1Api, namespace: str, pod: str) -> bool:
    with contextlib.suppress(AssertionError):
        wait_for(lambda: core.read_namespaced_pod(pod, namespace).spec.node_name, timeout=5, what=pod)
    return core.read_namespaced_pod(pod, namespace).spec.node_name is None


def test_a_group_lands_in_one_provider_and_region_and_groups_share_regions(
    kube: client.ApiClient, namespace: str, gpu_nodes: Callable[..., str]
) -> None:
    core = client.CoreV1Api(kube)

    def node(provider: str, region: str) -> str:
        return gpu_nodes(
            gpus=8,
            gpu="H100",
            region=region,
            zone=f"{region}a",
            labels={"gpupool.dev/pool": namespace, "gpupool.dev/provider": provider},
        )

    # Three nodes in one provider's region, and free nodes outside it: the same region name
    # at another provider, the same provider in another region. Each node holds one pod.
    home = {node("aws", "us-east-1") for _ in range(3)}
    elsewhere = {node("lambda", "us-east-1"), node("aws", "us-west-2")}
    lws = render_leader_worker_set(_group_input(namespace))  # groups of 2 pods, 8 GPUs each

    def create(group: int, worker: int, on: str | None = None) -> str:
        pod = _pod(lws, group, worker)
        if on is not None:  # where the scheduler happened to put the group's first pod
            pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": on}
        core.create_namespaced_pod(namespace, pod)
        return str(pod["metadata"]["name"])

    first = sorted(home)[0]
    assert _node_of(core, namespace, create(0, 0, on=first)) == first
    # The API server narrowed the affinity to the pod's own group when it created the pod.
    created = core.read_namespaced_pod("llama-0", namespace)
    for term in created.spec.affinity.pod_affinity.required_during_scheduling_ignored_during_execution:
        requirements = [(e.key, e.operator, e.values) for e in term.label_selector.match_expressions or []]
        assert (LWS_GROUP_KEY_LABEL, "In", ["group-0"]) in requirements

    # The worker follows its leader into the provider's region, never to the free nodes elsewhere.
    second = _node_of(core, namespace, create(0, 1))
    assert second in home - {first}

    # A second group is not kept out of that region by the first (no exclusive placement)...
    (third,) = home - {first, second}
    assert _node_of(core, namespace, create(1, 0, on=third)) == third
    # ...and once the region is full its worker waits, though two nodes elsewhere are free.
    assert _stays_pending(core, namespace, create(1, 1))
    assert not [p for p in core.list_namespaced_pod(namespace).items if p.spec.node_name in elsewhere]
