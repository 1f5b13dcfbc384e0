"""Would the scheduler put this pod on a node of that offer? Labels, selectors, affinity, taints.

Before buying an instance for a pod, the packer asks what the scheduler will ask once the node
is there: do the node's labels satisfy the pod's nodeSelector and required node affinity, and
does the pod tolerate every NoSchedule and NoExecute taint the node will carry. The node's labels
are known before it exists: the well-known ones come from the offer, gpupool's own and the
pool's from the claim (nodeclaim/launch.py puts exactly these on it). Its name and claim are
not known, so a pod that requires a particular hostname never gets a new node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gpupool.catalog.offers import CapacityType, Offer

GPU_TAINT = ("nvidia.com/gpu", "present", "NoSchedule")
# Only these effects keep a pod off a node (PreferNoSchedule is a preference).
BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})


@dataclass(frozen=True, slots=True)
class Requirement:
    """One matchExpression of a node selector term."""

    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist, Gt, Lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator == "In":
            return value is not None and value in self.values
        if self.operator == "NotIn":
            return value is None or value not in self.values
        if self.operator == "Exists":
            return value is not None
        if self.operator == "DoesNotExist":
            return value is None
        if self.operator in ("Gt", "Lt") and value is not None and len(self.values) == 1:
            try:
                have, bound = int(value), int(self.values[0])
            except ValueError:
                return False
            return have > bound if self.operator == "Gt" else have < bound
        return False


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str = ""  # empty with Exists: tolerates every taint
    operator: str = "Equal"
    value: str = ""
    effect: str = ""  # empty: every effect

    def tolerates(self, key: str, value: str, effect: str) -> bool:
        if self.effect and self.effect != effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == key
        return self.key == key and self.value == value


@dataclass(frozen=True, slots=True)
class PodConstraints:
    """The parts of a pod's spec that decide which nodes it may run on, besides resources.

    `terms` are the required node-affinity terms, ORed; a term's requirements are ANDed. A term
    with matchFields (node names) is kept as an unsatisfiable term: a new node has no name yet.
    """

    node_selector: tuple[tuple[str, str], ...] = ()
    terms: tuple[tuple[Requirement, ...], ...] = ()
    tolerations: tuple[Toleration, ...] = ()

    @property
    def reads_labels(self) -> bool:
        """Whether the node's labels matter (else only its taints do)."""
        return bool(self.node_selector or self.terms)


ANY_NODE = PodConstraints(tolerations=(Toleration(key=GPU_TAINT[0], operator="Exists"),))


def node_taints(pool_taints: Iterable[tuple[str, str, str]]) -> tuple[tuple[str, str, str], ...]:
    """Every taint a node of the pool carries: the GPU taint, then the pool's own."""
    return (GPU_TAINT, *(t for t in pool_taints if t[0] != GPU_TAINT[0]))


def gpupool_labels(pool: str, gpu: str, gpu_count: int, capacity_type: str, provider: str) -> dict[str, str]:
    """The labels the operator itself puts on every node it bought (nodeclaim/launch.py)."""
    return {
        "gpupool.dev/pool": pool,
        "gpupool.dev/gpu": gpu,
        "gpupool.dev/gpu-count": str(gpu_count),
        "gpupool.dev/capacity-type": capacity_type,
        "gpupool.dev/provider": provider,
    }


def node_labels(
    offer: Offer, capacity_type: CapacityType, pool: str, pool_labels: Mapping[str, str]
) -> dict[str, str]:
    """The labels a Node bought from this offer for this pool will carry, hostname aside: the
    pool's, the well-known ones its kubelet and cloud set, and gpupool's (which win). A zone is
    expected only where the offer has one."""
    return {
        **dict(pool_labels),
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "arm64" if offer.cpu_arch in ("arm64", "aarch64") else "amd64",
        "node.kubernetes.io/instance-type": offer.instance_type,
        "topology.kubernetes.io/region": offer.region,
        **({"topology.kubernetes.io/zone": offer.zone} if offer.zone else {}),
        **gpupool_labels(pool, offer.gpu, offer.gpu_count, capacity_type, offer.provider),
    }


def refusal(
    pod: PodConstraints, labels: Mapping[str, str], taints: tuple[tuple[str, str, str], ...]
) -> str | None:
    """Why the scheduler would keep `pod` off a node with these labels and taints, or None."""
    for key, value in pod.node_selector:
        if labels.get(key) != value:
            return f"its nodeSelector {key}={value} matches no such node"
    if pod.terms and not any(all(r.matches(labels) for r in term) for term in pod.terms):
        return "its required node affinity matches no such node"
    for key, value, effect in taints:
        if effect in BLOCKING_EFFECTS and not any(t.tolerates(key, value, effect) for t in pod.tolerations):
            return (
                f"it does not tolerate the taint {key}={value}:{effect}"
                if value
                else (f"it does not tolerate the taint {key}:{effect}")
            )
    return None
