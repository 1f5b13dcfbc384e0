"""The issue's definition of done, checked with the real kubectl against the real API server.

`kubectl apply -f examples/` validates (strict), `kubectl get gpupool` lists every
kind with its columns, and `kubectl explain modeldeployment.spec` describes every
field. kubectl comes from PATH or from the local cluster's bin directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from gpupool.api import GROUP, MODEL_DEPLOYMENT, VERSION
from gpupool.api.crdgen import structural_schema

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


def _kubectl_path() -> str | None:
    found = shutil.which("kubectl")
    if found:
        return found
    bin_dir = subprocess.run(
        [str(ROOT / "tests" / "cluster" / "env.sh"), "bin"], capture_output=True, text=True, check=False
    ).stdout.strip()
    candidate = Path(bin_dir) / "kubectl"
    return str(candidate) if candidate.is_file() else None


@pytest.fixture
def kubectl(kubeconfig: str, crds_installed: list[str]):  # type: ignore[no-untyped-def]
    path = _kubectl_path()
    if path is None:
        pytest.skip("kubectl not found")

    def run(*args: str) -> str:
        result = subprocess.run(
            [path, *args],
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": kubeconfig},
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    return run


def test_examples_pass_strict_client_validation(kubectl) -> None:  # type: ignore[no-untyped-def]
    out = kubectl("apply", "-f", str(ROOT / "examples"), "--dry-run=client", "--validate=strict")
    assert "modeldeployment.gpupool.dev/llama-3-1-70b created (dry run)" in out
    assert "gpupool.gpupool.dev/default created (dry run)" in out


def test_get_gpupool_lists_every_kind_with_columns(
    kubectl,  # type: ignore[no-untyped-def]
    kube: client.ApiClient,
    namespace: str,
) -> None:
    api = client.CustomObjectsApi(kube)
    pool = f"pool-{uuid.uuid4().hex[:6]}"
    api.create_cluster_custom_object(
        GROUP,
        VERSION,
        "gpupools",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuPool", "metadata": {"name": pool}},
    )
    api.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "modeldeployments",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "metadata": {"name": "llama"},
            "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct", "pool": pool},
        },
    )
    try:
        out = kubectl("get", "gpupool", "-n", namespace)
        assert f"gpupool.gpupool.dev/{pool}" in out
        assert "modeldeployment.gpupool.dev/llama" in out
        headers = [line.split() for line in out.splitlines() if line.startswith("NAME")]
        assert ["NAME", "NODES", "GPUS", "$/HR", "READY", "AGE"] in headers
        assert ["NAME", "READY", "MODEL", "GPU", "PROVIDER", "$/HR", "ENDPOINT", "AGE"] in headers
    finally:
        api.delete_cluster_custom_object(GROUP, VERSION, "gpupools", pool)


def test_explain_describes_every_spec_field(kubectl) -> None:  # type: ignore[no-untyped-def]
    out = kubectl("explain", "modeldeployment.spec")
    for name in structural_schema(MODEL_DEPLOYMENT.spec_model)["properties"]:
        assert f"  {name}\t" in out, f"kubectl explain does not list spec.{name}"
    assert "Hugging Face model id" in out
    engine = kubectl("explain", "modeldeployment.spec.engine.gpuMemoryUtilization")
    assert "0.5 to 0.99" in engine
