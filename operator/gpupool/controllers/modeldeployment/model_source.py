"""Where a ModelDeployment's architecture comes from: the Hugging Face Hub, else the built-in table.

The Hub is asked first (through `gpupool.modelhub`, cached with a TTL, failures cached briefly so
a broken spec never loops hot), with the token the spec's `hfTokenSecretRef` names, read from the
deployment's own namespace. When the Hub cannot say (the model is not there, the endpoint is not
reachable, the repo has no safetensors) and the built-in table knows the model, the table is the
offline fallback. A gated model without a usable token is never planned from the table: vLLM
could not download it either, so the deployment says why instead of buying GPUs for a pod that
cannot start. A spec that describes its model (`spec.architecture`) asks nobody.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpupool.api import ModelDeploymentSpec
from gpupool.controllers.kube import Kube
from gpupool.modelhub import ModelHub, ModelUnresolved
from gpupool.planner import ModelArchitecture, UnknownModel, architecture_from_hub, find_model

# Failures the built-in table may stand in for: the Hub did not say anything about the model.
_TABLE_STANDS_IN = frozenset({"NotFound", "Unreachable", "NoSafetensors", "Malformed"})


@dataclass(frozen=True, slots=True)
class ModelSource:
    """The architecture to plan with (None: let the planner use the table or spec.architecture),
    or why there is none (`unresolved`: the ModelUnresolved reason and its message)."""

    architecture: ModelArchitecture | None = None
    unresolved: tuple[str, str] | None = None


async def _token(kube: Kube, namespace: str, spec: ModelDeploymentSpec) -> str | None:
    ref = spec.hf_token_secret_ref
    if ref is None:
        return None
    try:
        return await kube.read_secret_value(namespace, ref.name, ref.key)
    except KeyError:
        raise ModelUnresolved(
            "Unauthorized",
            f"spec.hfTokenSecretRef: Secret {namespace}/{ref.name} has no key {ref.key!r}; "
            "put the Hugging Face token under that key",
        ) from None
    except Exception as error:  # not found, forbidden: say which, never what it holds
        status = getattr(getattr(error, "status", None), "code", None)
        raise ModelUnresolved(
            "Unauthorized",
            f"spec.hfTokenSecretRef: the operator cannot read Secret {namespace}/{ref.name} "
            f"({'not found' if status == 404 else 'forbidden' if status == 403 else type(error).__name__}); "
            "create it, or let the operator read it (chart value modelHub.readTokenSecrets)",
        ) from None


async def model_source(
    hub: ModelHub | None, kube: Kube, namespace: str, spec: ModelDeploymentSpec
) -> ModelSource:
    """The architecture of the spec's model, from the Hub when it can say."""
    if hub is None or spec.architecture is not None:
        return ModelSource()
    try:
        token = await _token(kube, namespace, spec)
        found = await hub.resolve(spec.model, token=token)
    except ModelUnresolved as error:
        if error.reason in _TABLE_STANDS_IN and find_model(spec.model) is not None:
            return ModelSource()  # the built-in table stands in (the resolver logged why)
        return ModelSource(unresolved=(error.reason, error.message))
    try:
        architecture = architecture_from_hub(
            spec.model,
            found.config,
            parameters_by_dtype=found.parameters_by_dtype,
            extra_configs=found.extra_configs,
        )
    except UnknownModel as error:
        if find_model(spec.model) is not None:
            return ModelSource()
        return ModelSource(
            unresolved=("Malformed", f"{error}; describe the model in spec.architecture instead")
        )
    return ModelSource(architecture=architecture)
