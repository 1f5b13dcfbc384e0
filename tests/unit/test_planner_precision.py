"""Precision limits: what vLLM refuses on a GPU, and what it runs the slow way, from the capability alone."""

from __future__ import annotations

import pytest

from gpupool.catalog import GpuSpec, gpu_specs, spec_for
from gpupool.planner.precision import ACTIVATION_DTYPES, WEIGHT_FORMATS, PrecisionVerdict, precision_check


def check(
    gpu: str, weight_format: str = "bfloat16", activation_dtype: str = "auto", **kw: bool
) -> PrecisionVerdict:
    return precision_check(
        spec_for(gpu), activation_dtype=activation_dtype, weight_format=weight_format, **kw
    )


def test_bfloat16_is_refused_below_ampere_and_the_message_says_what_to_change() -> None:
    verdict = check("T4", activation_dtype="bfloat16")
    assert not verdict.ok
    assert verdict.refusal == (
        "bfloat16 needs compute capability 8.0 (Ampere) or newer; T4 is 7.5: "
        "set spec.engine.dtype: float16, or allow a newer GPU in spec.gpu.types"
    )
    assert "V100 is 7.0" in (check("V100", activation_dtype="bfloat16").refusal or "")
    for gpu in ("A10G", "A100", "L4", "H100", "B200", "RTX-5090"):
        assert check(gpu, activation_dtype="bfloat16").ok, gpu


def test_auto_falls_back_to_float16_without_bfloat16_and_says_so() -> None:
    verdict = check("T4", "bfloat16", "auto")
    assert verdict.ok
    assert verdict.warnings == ("T4 has no bfloat16: vLLM casts the bfloat16 weights to float16",)
    assert check("T4", "float16", "auto") == PrecisionVerdict()
    assert check("T4", "bfloat16", "float16") == PrecisionVerdict()


@pytest.mark.parametrize("activation_dtype", ["auto", "bfloat16"])
def test_a_model_that_forbids_float16_cannot_run_without_bfloat16(activation_dtype: str) -> None:
    for gpu in ("T4", "V100", "RTX-6000"):
        refusal = check(gpu, activation_dtype=activation_dtype, fp16_allowed=False).refusal
        assert refusal is not None and gpu in refusal and "does not allow float16" in refusal
        assert "spec.gpu.types" in refusal and "spec.engine.dtype: float16" not in refusal
    assert check("A10G", activation_dtype=activation_dtype, fp16_allowed=False).ok


def test_float16_for_a_model_that_forbids_it_is_refused_on_every_gpu() -> None:
    refusal = check("H100", activation_dtype="float16", fp16_allowed=False).refusal
    assert refusal == (
        "the model does not allow float16 (numerically unstable in it), on H100 (9.0) or any GPU: "
        "set spec.engine.dtype: bfloat16 or auto"
    )


def test_fp8_is_native_from_ada_weight_only_on_ampere_refused_below() -> None:
    for gpu in ("L4", "L40S", "RTX-4090", "H100", "H200", "B200", "RTX-PRO-6000"):
        assert check(gpu, "fp8") == PrecisionVerdict(), gpu
    for gpu in ("A100", "A10G", "RTX-A6000"):
        verdict = check(gpu, "fp8")
        assert verdict.ok and len(verdict.warnings) == 1, gpu
        assert "Marlin" in verdict.warnings[0] and "8.9 (Ada)" in verdict.warnings[0]
    refusal = check("T4", "fp8").refusal
    assert refusal is not None
    assert refusal.startswith("FP8 weights need compute capability 8.0 (Ampere) or newer; T4 is 7.5:")
    assert "spec.engine.quantization" in refusal and "spec.gpu.types" in refusal


def test_nvfp4_is_native_on_blackwell_only() -> None:
    for gpu in ("B200", "B300", "GB200", "RTX-5090", "RTX-PRO-6000"):
        assert check(gpu, "nvfp4") == PrecisionVerdict(), gpu
    for gpu in ("H100", "L40S", "A100"):
        verdict = check(gpu, "nvfp4")
        assert verdict.ok and "10.0 (Blackwell)" in verdict.warnings[0], gpu
    assert not check("T4", "nvfp4").ok


def test_mxfp4_needs_ampere_runs_fast_on_hopper_and_datacentre_blackwell_and_bfloat16() -> None:
    for gpu in ("H100", "H200", "B200"):
        assert check(gpu, "mxfp4") == PrecisionVerdict(), gpu
    for gpu in ("A100", "L4", "RTX-5090"):
        verdict = check(gpu, "mxfp4")
        assert verdict.ok and "Marlin" in verdict.warnings[0], gpu
    refusal = check("T4", "mxfp4").refusal
    assert refusal is not None and "8.0 (Ampere)" in refusal and "T4 is 7.5" in refusal
    refusal = check("H100", "mxfp4", "float16").refusal
    assert refusal is not None and "spec.engine.dtype: bfloat16" in refusal


@pytest.mark.parametrize(
    ("weight_format", "refused", "slow", "fast"),
    [
        ("awq", "V100", "T4", "A10G"),
        ("gptq", None, "V100", "A100"),
        ("int4", None, "T4", "L4"),
        ("int8", "V100", None, "T4"),
        ("bitsandbytes", None, None, "V100"),
    ],
)
def test_integer_formats_follow_their_kernels(
    weight_format: str, refused: str | None, slow: str | None, fast: str
) -> None:
    if refused is not None:
        refusal = check(refused, weight_format, "float16").refusal
        assert refusal is not None and refused in refusal, weight_format
    if slow is not None:
        verdict = check(slow, weight_format, "float16")
        assert verdict.ok and len(verdict.warnings) == 1 and slow in verdict.warnings[0], weight_format
    assert check(fast, weight_format, "float16") == PrecisionVerdict(), weight_format


def test_compressed_tensors_without_a_scheme_is_checked_loosely_and_says_so() -> None:
    verdict = check("T4", "compressed-tensors", "float16")
    assert verdict.ok and "scheme not given" in verdict.warnings[0]


def test_unknown_gpus_and_other_vendors_are_not_judged() -> None:
    assert precision_check(None, activation_dtype="auto", weight_format="fp8").ok
    verdict = check("MI300X", "fp8")
    assert verdict.ok and "not checked" in verdict.warnings[0]


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="activation_dtype"):
        check("H100", activation_dtype="half")
    with pytest.raises(ValueError, match="weight_format"):
        check("H100", "gguf")


def test_every_supported_catalog_gpu_answers_every_combination() -> None:
    # No combination crashes; every refusal names its GPU, its capability and a spec field to change.
    specs: list[GpuSpec] = [s for s in gpu_specs().values() if s.vllm_supported]
    for spec in specs:
        for activation_dtype in ACTIVATION_DTYPES:
            for weight_format in WEIGHT_FORMATS:
                for fp16_allowed in (True, False):
                    verdict = precision_check(
                        spec,
                        activation_dtype=activation_dtype,
                        weight_format=weight_format,
                        fp16_allowed=fp16_allowed,
                    )
                    if verdict.refusal is not None:
                        assert spec.name in verdict.refusal and "spec." in verdict.refusal
                        assert spec.compute_capability is not None
                        major, minor = spec.compute_capability
                        assert f"{major}.{minor}" in verdict.refusal
