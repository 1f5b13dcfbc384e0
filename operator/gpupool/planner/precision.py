"""Which precisions a GPU can serve, the way vLLM decides it at start-up.

vLLM refuses some pairings outright (bfloat16 on a T4, FP8 weights on a V100) and quietly takes a
slower path for others (FP8 on an A100 runs weight-only through the Marlin kernel). Both are known
before a node is bought, from the GPU's compute capability alone, so the planner checks them here
instead of discovering them in a crash-looping pod. A refusal names the GPU, its capability and the
spec field that would fix it; a warning says what runs slower and why.

The thresholds are those of the default image, vLLM v0.11.0 (api/deployment.py DEFAULT_IMAGE);
paths in comments are vLLM's. Later releases lowered some of them (by v0.30 FP8 weights and the
Marlin kernels also run on 7.5), so the table moves with the image.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpupool.catalog.gpus import GpuSpec

Capability = tuple[int, int]

ACTIVATION_DTYPES = ("auto", "bfloat16", "float16", "float32")
WEIGHT_FORMATS = (
    "bfloat16",
    "float16",
    "float32",
    "fp8",
    "awq",
    "gptq",
    "compressed-tensors",
    "bitsandbytes",
    "mxfp4",
    "nvfp4",
    "int8",
    "int4",
)

# The architecture that introduced each capability a rule asks for, to name it in messages.
_ARCHITECTURES: dict[Capability, str] = {
    (6, 0): "Pascal",
    (7, 0): "Volta",
    (7, 5): "Turing",
    (8, 0): "Ampere",
    (8, 9): "Ada",
    (9, 0): "Hopper",
    (10, 0): "Blackwell",
    (11, 0): "Blackwell",
}

# bfloat16 arithmetic: vllm/v1/worker/gpu_worker.py `_check_if_gpu_supports_dtype` (v0.11 calls
# vllm/platforms/cuda.py `check_if_supports_dtype`) raises below 8.0.
BF16_MINIMUM: Capability = (8, 0)

_NO_GPU_FIX = "allow a newer GPU in spec.gpu.types"
_WEIGHTS_FIX = f"serve a 16-bit checkpoint (spec.model, spec.engine.quantization: none), or {_NO_GPU_FIX}"


@dataclass(frozen=True, slots=True)
class _WeightRule:
    """A weight format's floor (refused below) and the range where vLLM runs its fast kernel."""

    what: str
    minimum: Capability
    fast_from: Capability | None = None  # below it (and at or above the minimum): a slower path
    fast_below: Capability | None = None  # at or above it: the slower path again
    slow_path: str = ""
    fix: str = _WEIGHTS_FIX


_WEIGHT_RULES: dict[str, _WeightRule] = {
    # fp8.py Fp8Config.get_min_capability 80; below 8.9 utils/marlin_utils_fp8.py logs "Weight-only
    # FP8 compression will be used leveraging the Marlin kernel".
    "fp8": _WeightRule(
        "FP8 weights",
        (8, 0),
        fast_from=(8, 9),
        slow_path="run weight-only through the Marlin kernel (FP8 storage, 16-bit math)",
    ),
    # awq.py AWQConfig.get_min_capability 75; awq_marlin.py (the kernel vLLM upgrades to) needs 80.
    "awq": _WeightRule(
        "AWQ weights", (7, 5), fast_from=(8, 0), slow_path="use the plain AWQ kernel, not AWQ Marlin"
    ),
    # gptq.py GPTQConfig.get_min_capability 60; gptq_marlin.py needs 80.
    "gptq": _WeightRule(
        "GPTQ weights",
        (6, 0),
        fast_from=(8, 0),
        slow_path="use the ExLlama GPTQ kernel, not GPTQ Marlin",
    ),
    # bitsandbytes.py BitsAndBytesConfig.get_min_capability 70.
    "bitsandbytes": _WeightRule("bitsandbytes weights", (7, 0)),
    # mxfp4.py Mxfp4Config.get_min_capability 80; get_mxfp4_backend picks FlashInfer or Triton kernels
    # on 9.0 up to (not including) 11.0 and the Marlin weight-only kernel elsewhere.
    "mxfp4": _WeightRule(
        "MXFP4 weights",
        (8, 0),
        fast_from=(9, 0),
        fast_below=(11, 0),
        slow_path="run weight-only through the Marlin kernel",
        fix=_NO_GPU_FIX,
    ),
    # modelopt.py ModelOptNvFp4Config.get_min_capability 80 (compressed_tensors_w4a4_nvfp4.py alike):
    # FP4 tensor cores are Blackwell's (10.x, and 12.x consumer Blackwell); below, Marlin emulates.
    "nvfp4": _WeightRule(
        "NVFP4 weights",
        (8, 0),
        fast_from=(10, 0),
        slow_path="run weight-only through the Marlin FP4 kernel (16-bit math)",
    ),
    # compressed_tensors/schemes/compressed_tensors_w8a8_int8.py get_min_capability 75 (INT8 tensor
    # cores; V100 has none).
    "int8": _WeightRule("INT8 (W8A8) weights", (7, 5)),
    # compressed_tensors/schemes/compressed_tensors_wNa16.py: the Marlin kernel from 8.0, else
    # kernels/mixed_precision/exllama.py (60, float16 only).
    "int4": _WeightRule(
        "INT4 (W4A16) weights",
        (6, 0),
        fast_from=(8, 0),
        slow_path="use the ExLlama kernel, not Marlin",
    ),
    # compressed_tensors.py CompressedTensorsConfig.get_min_capability 70; each scheme then checks
    # its own floor at load, which is why callers should pass the scheme (int8, int4, fp8, nvfp4).
    "compressed-tensors": _WeightRule("compressed-tensors weights", (7, 0)),
}


@dataclass(frozen=True, slots=True)
class PrecisionVerdict:
    """`refusal`: why the GPU cannot serve this precision at all (None: it can); `warnings`: what
    runs, but slower or converted."""

    refusal: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.refusal is None


def precision_check(
    gpu: GpuSpec | None, *, activation_dtype: str, weight_format: str, fp16_allowed: bool = True
) -> PrecisionVerdict:
    """Whether `gpu` can serve weights stored as `weight_format` computing in `activation_dtype`.

    `activation_dtype` is spec.engine.dtype ("auto" lets vLLM take the checkpoint's dtype and fall
    back to float16 where bfloat16 is missing); `fp16_allowed` is False for models whose config
    forbids float16 (Gemma 2 and 3: vLLM refuses them in float16 for numerical instability).
    Raises ValueError for a dtype or format outside ACTIVATION_DTYPES / WEIGHT_FORMATS.
    """
    if activation_dtype not in ACTIVATION_DTYPES:
        raise ValueError(f"activation_dtype {activation_dtype!r}: expected one of {ACTIVATION_DTYPES}")
    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"weight_format {weight_format!r}: expected one of {WEIGHT_FORMATS}")
    if activation_dtype == "float16" and not fp16_allowed:
        return PrecisionVerdict(
            f"the model does not allow float16 (numerically unstable in it), on{_on(gpu)} or any GPU: "
            "set spec.engine.dtype: bfloat16 or auto"
        )
    if weight_format == "mxfp4" and activation_dtype == "float16":
        # mxfp4.py Mxfp4Config.get_supported_act_dtypes: bfloat16 only.
        return PrecisionVerdict(
            f"MXFP4 weights compute in bfloat16 only, on{_on(gpu)} or any GPU: "
            "set spec.engine.dtype: bfloat16 or auto"
        )
    if gpu is None or gpu.compute_capability is None:
        name = "an unknown GPU" if gpu is None else gpu.name
        return PrecisionVerdict(
            warnings=(f"precision support of {name} is not checked (no compute capability)",)
        )
    capability = gpu.compute_capability
    refusal = _activation_refusal(gpu, capability, activation_dtype, fp16_allowed)
    if refusal is not None:
        return PrecisionVerdict(refusal)
    warnings: list[str] = []
    if capability < BF16_MINIMUM and activation_dtype == "auto" and weight_format == "bfloat16":
        warnings.append(f"{gpu.name} has no bfloat16: vLLM casts the bfloat16 weights to float16")
    rule = _WEIGHT_RULES.get(weight_format)
    if rule is not None:
        if capability < rule.minimum:
            return PrecisionVerdict(_needs(f"{rule.what} need", rule.minimum, gpu, capability, rule.fix))
        if not _fast(rule, capability):
            warnings.append(
                f"{rule.what} on {gpu.name} ({_cc(capability)}) {rule.slow_path}: slower than on {_fast_gpus(rule)}"
            )
    if weight_format == "compressed-tensors":
        warnings.append(
            "compressed-tensors scheme not given: vLLM checks its own floor at load "
            "(int8 7.5, int4 8.0 for Marlin, fp8 8.9 native, nvfp4 10.0 native)"
        )
    return PrecisionVerdict(warnings=tuple(warnings))


def _activation_refusal(gpu: GpuSpec, capability: Capability, dtype: str, fp16_allowed: bool) -> str | None:
    if capability >= BF16_MINIMUM or dtype not in ("bfloat16", "auto"):
        return None
    if fp16_allowed:
        if dtype == "auto":
            return None  # vLLM falls back to float16
        return _needs(
            "bfloat16 needs",
            BF16_MINIMUM,
            gpu,
            capability,
            f"set spec.engine.dtype: float16, or {_NO_GPU_FIX}",
        )
    # float16 is the only fallback (float32 is not a spec.engine.dtype), and the model forbids it.
    return _needs(
        "bfloat16 needs", BF16_MINIMUM, gpu, capability, f"{_NO_GPU_FIX} (the model does not allow float16)"
    )


def _needs(what: str, minimum: Capability, gpu: GpuSpec, capability: Capability, fix: str) -> str:
    return (
        f"{what} compute capability {_cc(minimum)} ({_ARCHITECTURES[minimum]}) or newer; "
        f"{gpu.name} is {_cc(capability)}: {fix}"
    )


def _fast(rule: _WeightRule, capability: Capability) -> bool:
    if rule.fast_from is not None and capability < rule.fast_from:
        return False
    return rule.fast_below is None or capability < rule.fast_below


def _fast_gpus(rule: _WeightRule) -> str:
    assert rule.fast_from is not None  # a rule with a slow path always has a fast range
    low = f"compute capability {_cc(rule.fast_from)} ({_ARCHITECTURES[rule.fast_from]})"
    if rule.fast_below is None:
        return f"{low} or newer"
    return f"{low} to {rule.fast_below[0] - 1}.x"


def _on(gpu: GpuSpec | None) -> str:
    """ " H100 (9.0)" for messages, or " this GPU" when the catalog does not know it."""
    if gpu is None:
        return " this GPU"
    if gpu.compute_capability is None:
        return f" {gpu.name}"
    return f" {gpu.name} ({_cc(gpu.compute_capability)})"


def _cc(capability: Capability) -> str:
    return f"{capability[0]}.{capability[1]}"
