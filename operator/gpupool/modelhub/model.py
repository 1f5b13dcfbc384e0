"""What the Hub says of a model, and the one error that says why it could not be asked.

These are plain data so that the controller (which turns them into a ModelDeployment's status)
and the planner's callers can use them without knowing how they were fetched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# Why a model could not be resolved; each is the `reason` of the ModelUnresolved condition.
UnresolvedReason = Literal["NotFound", "Gated", "Unauthorized", "Unreachable", "Malformed", "NoSafetensors"]


@dataclass(frozen=True, slots=True)
class HubModel:
    """A model as its checkpoint on the Hub describes it, at one commit.

    `parameters_by_dtype` counts the elements of every tensor vLLM would load, by their safetensors
    storage dtype ("BF16", "F8_E4M3", "I32", ...), summed over every shard: packed quantized weights
    count as stored (an I32 of an AWQ checkpoint holds eight 4-bit weights), so `weight_bytes`, the
    tensors' exact size in bytes, is what sizes memory. The dicts are shared with the cache: treat
    them as read-only.
    """

    model_id: str
    # The commit the Hub resolved the asked revision (or `main`) to; every file was read there.
    revision: str
    config: dict[str, Any]
    parameters_by_dtype: dict[str, int]
    weight_bytes: int
    safetensors_files: tuple[str, ...]
    # Quantization files vLLM reads beside config.json, when the repo has them, by file name
    # (hf_quant_config.json of NVIDIA ModelOpt checkpoints; quantize_config.json and
    # quant_config.json of older GPTQ and AWQ ones).
    extra_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    gated: bool = False

    @property
    def parameters(self) -> int:
        """Stored elements over every dtype (the exact parameter count of an unquantized model)."""
        return sum(self.parameters_by_dtype.values())


class ModelUnresolved(Exception):
    """The model's metadata could not be had; `message` says which model, what, and what to do.

    Messages reach a resource's status, so they never hold a token (the resolver scrubs them).
    """

    def __init__(self, reason: UnresolvedReason, message: str) -> None:
        super().__init__(message)
        self.reason: UnresolvedReason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"ModelUnresolved({self.reason!r}, {self.message!r})"
