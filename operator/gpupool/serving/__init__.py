"""Pure rendering of a model's vLLM serving objects: Deployment, Service, PodDisruptionBudget.

The controller maps a ModelDeployment and the planner's shape onto a `ServingInput`
(`serving_input_from_spec` does it from the API model, whose defaults are the only ones), calls
`render_all`, and server-side-applies the dicts. A model whose replicas span nodes
(`nodes_per_replica > 1`) gets a LeaderWorkerSet from `render_all` instead of the Deployment.
No I/O here; the renderers see only the `ServingInput`, never the API models.
"""

from gpupool.serving.inputs import (
    DEFAULT_IMAGE,
    RenderError,
    SecretKeyRef,
    ServingInput,
    Taint,
    serving_input_from_spec,
)
from gpupool.serving.leaderworkerset import leader_selector_labels, render_leader_worker_set
from gpupool.serving.render import (
    render_all,
    render_deployment,
    render_pdb,
    render_service,
    selector_labels,
    selector_string,
)
from gpupool.serving.vllm_args import MANAGED_FLAGS, VLLM_PORT

__all__ = [
    "DEFAULT_IMAGE",
    "MANAGED_FLAGS",
    "VLLM_PORT",
    "RenderError",
    "SecretKeyRef",
    "ServingInput",
    "Taint",
    "leader_selector_labels",
    "render_all",
    "render_deployment",
    "render_leader_worker_set",
    "render_pdb",
    "render_service",
    "selector_labels",
    "selector_string",
    "serving_input_from_spec",
]
