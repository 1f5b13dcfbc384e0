"""A pytest plugin: run the end-to-end suites with the operator as the chart's ServiceAccount.

    python -m pytest -p tests.integration.test_rbac_e2e \
        tests/integration/test_provisioning.py tests/integration/test_serving_e2e.py

(`python -m`, so the repository root is on sys.path when pytest imports the plugin.)

The end-to-end tests start their shared operator as the cluster admin (tests/integration/conftest.py,
`OperatorProcess`). Loaded with `-p`, this module installs the chart first (operator Deployment at 0
replicas, credentials namespace = the release's), builds a kubeconfig holding only a token of the
chart's ServiceAccount, and makes `OperatorProcess` use it. Every scenario of those suites then runs
with exactly the chart's RBAC; at the end, every RBAC refusal in the operator's logs is printed and
fails the run, even if the tests themselves passed (a refused call the operator retried around is
still a missing permission).

Without `-p` this module does nothing: it holds no tests and pytest ignores hooks in test modules.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any

import pytest

_state: dict[str, Any] = {}


def pytest_configure(config: pytest.Config) -> None:
    from kubernetes import client
    from kubernetes import config as kube_config

    import tests.integration.conftest as e2e
    from tests.conftest import _kubeconfig_path
    from tests.integration.test_chart_install import helm_install
    from tests.integration.test_rbac import service_account_kubeconfig

    admin = _kubeconfig_path()
    api = kube_config.new_client_from_config(config_file=admin)
    core = client.CoreV1Api(api)
    namespace = f"gp-rbac-e2e-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    release = helm_install(
        admin,
        f"rbac{uuid.uuid4().hex[:6]}",
        namespace,
        [f"credentials.namespace={namespace}", "replicaCount=0"],
        wait=False,
    )
    token_dir = Path(config.rootpath) / ".pytest_cache"
    token_dir.mkdir(exist_ok=True)
    sa_kubeconfig = service_account_kubeconfig(
        api, admin, namespace, release.fullname, token_dir / "rbac-e2e.kubeconfig"
    )
    _state.update(api=api, namespace=namespace, release=release, logs=[])

    original = e2e.OperatorProcess.__init__

    def as_chart_account(self: Any, tmp: Path, kubeconfig: str, *args: Any, **kwargs: Any) -> None:
        original(self, tmp, str(sa_kubeconfig), *args, **kwargs)
        _state["logs"].append(self.log_path)

    e2e.OperatorProcess.__init__ = as_chart_account  # type: ignore[method-assign]
    print(f"\n[rbac-e2e] the operator runs as {namespace}/{release.fullname} ({sa_kubeconfig})")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests.integration.test_rbac import FORBIDDEN

    refused: list[str] = []
    for log in _state.get("logs", []):
        with contextlib.suppress(FileNotFoundError):
            refused += [
                line for line in Path(log).read_text(errors="replace").splitlines() if FORBIDDEN.search(line)
            ]
    if refused:
        print("\n[rbac-e2e] the chart's RBAC refused the operator:\n" + "\n".join(sorted(set(refused))[:20]))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        print(f"\n[rbac-e2e] no RBAC refusal in {len(_state.get('logs', []))} operator log(s)")


def pytest_unconfigure(config: pytest.Config) -> None:
    if "release" not in _state:
        return
    from kubernetes import client

    from tests.integration.test_chart_install import helm_uninstall

    helm_uninstall(_state["release"])
    with contextlib.suppress(client.ApiException):
        client.CoreV1Api(_state["api"]).delete_namespace(_state["namespace"])
    with contextlib.suppress(FileNotFoundError):
        (Path(config.rootpath) / ".pytest_cache" / "rbac-e2e.kubeconfig").unlink()
