"""What input no valid object can be made from, named by the spec field a person should fix.

Every renderer checks its input here first, so a bad spec fails the same way whatever
workload it would have become, and the controller can put the `RenderError` (with its
`field`) straight into the ModelDeployment's `Ready=False` condition.
"""

from __future__ import annotations

import re

from gpupool.serving.inputs import RenderError, ServingInput

# A Service name must be a DNS-1035 label, stricter than a ModelDeployment name
# (DNS-1123 subdomain): no dots, no leading digit.
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

#: The longest name of a model whose replicas span nodes. Its LeaderWorkerSet names each
#: group's workers the StatefulSet `<name>-<group>`, whose pods carry the label
#: `controller-revision-hash: <name>-<group>-<hash of up to 10 characters>`, and a label
#: value has at most 63 characters: 48 leaves room for `-<group>` up to a thousand groups.
MULTI_NODE_NAME_MAX = 48


def validate(inp: ServingInput) -> None:
    """Raise RenderError, naming the spec field, for input no valid object could be made from."""
    if len(inp.name) > 63 or not _DNS1035_LABEL.match(inp.name):
        raise RenderError(
            "metadata.name",
            f"{inp.name!r} must be a DNS-1035 label (lower-case letters, digits and '-', "
            "starting with a letter, at most 63 characters) to name the model's Service",
        )
    if not inp.model.strip():
        raise RenderError("spec.model", "a Hugging Face model id is required")
    if not inp.gpu_types:
        raise RenderError("spec.gpu.types", "no GPU type is allowed for this model; the plan chose none")
    if inp.replicas < 0:
        raise RenderError("spec.replicas", f"must not be negative, got {inp.replicas}")
    if inp.gpus_per_replica < 1:
        raise RenderError("spec.gpu.count", f"must be at least 1, got {inp.gpus_per_replica}")
    tp = inp.tensor_parallel_size
    if tp < 1 or inp.gpus_per_replica % tp != 0:
        raise RenderError(
            "spec.engine.tensorParallelSize",
            f"{tp} must be at least 1 and divide the {inp.gpus_per_replica} GPUs of a replica",
        )
    _check_parallel_shape(inp)
    if inp.max_model_len < 1:
        raise RenderError("spec.engine.maxModelLen", f"must be at least 1, got {inp.max_model_len}")
    if not 0.0 < inp.gpu_memory_utilization <= 1.0:
        raise RenderError(
            "spec.engine.gpuMemoryUtilization", f"must be in (0, 1], got {inp.gpu_memory_utilization}"
        )
    if inp.max_num_seqs is not None and inp.max_num_seqs < 1:
        raise RenderError("spec.engine.maxNumSeqs", f"must be at least 1, got {inp.max_num_seqs}")


def _check_parallel_shape(inp: ServingInput) -> None:
    """The pipeline stages and nodes of a replica fit its GPUs (tensor parallelism is checked).

    These numbers are the planner's, not the user's, so the field named is the placement the
    planner keeps in the ModelDeployment's status.
    """
    tp, pp, nodes, gpus = (
        inp.tensor_parallel_size,
        inp.pipeline_parallel_size,
        inp.nodes_per_replica,
        inp.gpus_per_replica,
    )
    if pp < 1:
        raise RenderError("status.placement", f"the pipeline-parallel size must be at least 1, got {pp}")
    if nodes < 1:
        raise RenderError("status.placement", f"a replica spans at least 1 node, got {nodes}")
    if nodes == 1:
        if gpus % (tp * pp) != 0:
            raise RenderError(
                "status.placement",
                f"{tp} tensor-parallel ranks x {pp} pipeline stages must divide the {gpus} GPUs of a replica",
            )
        return
    # Across nodes: tensor parallel within a node (its NVLink), one pipeline stage per node
    # (only activations cross the slower network between stages).
    if pp != nodes:
        raise RenderError(
            "status.placement",
            f"a replica over {nodes} nodes runs one pipeline stage per node, so {nodes} stages, not {pp}",
        )
    if gpus != tp * nodes:
        raise RenderError(
            "status.placement",
            f"a replica over {nodes} nodes of {tp} GPUs (the tensor-parallel size) has {tp * nodes} GPUs, "
            f"not {gpus}",
        )
    if len(inp.name) > MULTI_NODE_NAME_MAX:
        raise RenderError(
            "metadata.name",
            f"{inp.name!r} is longer than {MULTI_NODE_NAME_MAX} characters, the most a model whose "
            "replicas span nodes may have: its LeaderWorkerSet derives longer names from it",
        )
