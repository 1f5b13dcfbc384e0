"""Any Hugging Face model: its config.json and exact weights, read from the Hub when it is asked for.

The planner sizes a replica from a model's architecture and weight bytes. The built-in table
(planner/models.py) knows a few dozen popular models; every other one is described by its own
repo. This package reads that repo through huggingface_hub (the config files vLLM reads and the
header of every safetensors file vLLM would load: exact parameter counts per dtype, no weights
downloaded), with the token from the ModelDeployment's spec.hfTokenSecretRef, and remembers the
answer for a while. It does network I/O, so it sits in the imperative shell, beside providers,
under the controllers; the built-in table stays the fallback when the Hub cannot be asked.

Every failure is a ModelUnresolved whose `reason` is one word (NotFound, Gated, Unauthorized,
Unreachable, Malformed, NoSafetensors) and whose message says what to do; failures are remembered
briefly too, so a broken spec never makes the operator call the Hub in a loop.
"""

from gpupool.modelhub.cache import ModelHub, default_hub, resolve_model, resolve_model_sync
from gpupool.modelhub.model import HubModel, ModelUnresolved, UnresolvedReason

__all__ = [
    "HubModel",
    "ModelHub",
    "ModelUnresolved",
    "UnresolvedReason",
    "default_hub",
    "resolve_model",
    "resolve_model_sync",
]
