"""Every manifest in examples/ is accepted by the real API server and reads back unchanged.

"Unchanged" means: every field the example sets comes back with the same value, and
the fields the API server adds are exactly the defaults the models add, so parsing
the stored object gives the same model as parsing the example. To share the cluster
with other tests, cluster-scoped objects get a unique name suffix and namespaced
ones (and the credentials Secret) go into the test's own namespace.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from gpupool.api import GROUP, KINDS, VERSION, KindInfo

pytestmark = pytest.mark.cluster

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BY_KIND = {k.kind: k for k in KINDS}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(EXAMPLES.glob("*.yaml")) + sorted(EXAMPLES.glob("reference/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.relative_to(EXAMPLES)}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


DOCUMENTS = _documents()
OURS = [(label, doc) for label, doc in DOCUMENTS if doc["apiVersion"] == f"{GROUP}/{VERSION}"]


def is_subset(small: Any, big: Any) -> bool:
    """Whether every field of `small` is in `big` with the same value (lists compare whole)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and is_subset(v, big[k]) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(small) == len(big) and all(map(is_subset, small, big))
    return bool(small == big)


def test_examples_cover_every_kind() -> None:
    kinds = {doc["kind"] for _, doc in OURS}
    assert kinds == set(BY_KIND)
    deployments = [doc for _, doc in OURS if doc["kind"] == "ModelDeployment"]
    assert any(d["spec"].get("gpu", {}).get("count", 1) > 1 for d in deployments), "a multi-GPU deployment"
    providers = [doc for _, doc in OURS if doc["kind"] == "GpuProvider"]
    assert {p["spec"]["type"] for p in providers} >= {"sim", "lambda"}


def _localize(doc: dict[str, Any], namespace: str, suffix: str) -> dict[str, Any]:
    """The example as this test creates it: its own names, its own namespace."""
    out = yaml.safe_load(yaml.safe_dump(doc))
    info = BY_KIND[out["kind"]]
    if info.scope == "Cluster":
        out["metadata"]["name"] = f"{out['metadata']['name']}-{suffix}"
    else:
        out["metadata"]["namespace"] = namespace
    ref = out["spec"].get("credentialsSecretRef")
    if ref:
        ref["namespace"] = namespace
    return out


def _secrets_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    ref = doc["spec"].get("credentialsSecretRef")
    if not ref:
        return []
    return [
        d
        for _, d in DOCUMENTS
        if d["kind"] == "Secret"
        and d["metadata"]["name"] == ref["name"]
        and d["metadata"]["namespace"] == ref["namespace"]
    ]


@pytest.mark.parametrize("doc", [doc for _, doc in OURS], ids=[label for label, _ in OURS])
def test_example_is_accepted_and_reads_back_unchanged(
    kube: client.ApiClient, crds_installed: list[str], namespace: str, doc: dict[str, Any]
) -> None:
    info: KindInfo = BY_KIND[doc["kind"]]
    api = client.CustomObjectsApi(kube)
    core = client.CoreV1Api(kube)
    for secret in _secrets_of(doc):
        core.create_namespaced_secret(
            namespace, {**secret, "metadata": {**secret["metadata"], "namespace": namespace}}
        )
    body = _localize(doc, namespace, uuid.uuid4().hex[:6])
    name = body["metadata"]["name"]
    if info.scope == "Cluster":
        api.create_cluster_custom_object(GROUP, VERSION, info.plural, body, field_validation="Strict")
    else:
        api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, info.plural, body, field_validation="Strict"
        )
    try:
        if info.scope == "Cluster":
            stored = api.get_cluster_custom_object(GROUP, VERSION, info.plural, name)
        else:
            stored = api.get_namespaced_custom_object(GROUP, VERSION, namespace, info.plural, name)
        assert is_subset(body["spec"], stored["spec"]), (body["spec"], stored["spec"])
        assert is_subset(body["metadata"].get("labels", {}), stored["metadata"].get("labels", {}))
        assert info.spec_model.from_k8s(stored["spec"]) == info.spec_model.from_k8s(body["spec"])
    finally:
        if info.scope == "Cluster":
            api.delete_cluster_custom_object(GROUP, VERSION, info.plural, name)
