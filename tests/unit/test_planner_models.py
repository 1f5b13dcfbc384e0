"""Model architectures: the built-in table, config.json parsing as vLLM reads it, spec overrides."""

from __future__ import annotations

import pytest

from gpupool.api import ModelDeploymentSpec
from gpupool.planner import (
    ModelArchitecture,
    UnknownModel,
    architecture_from_hf_config,
    architecture_from_hub,
    find_model,
    known_models,
    request_from_spec,
    resolve_architecture,
    tensor_parallel_refusal,
)
from gpupool.planner.hf_config import checkpoint_bytes, checkpoint_format, derived_max_context
from gpupool.planner.kv_cache import LayerRun
from gpupool.planner.models import RopeScaling

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"


def model(name: str) -> ModelArchitecture:
    found = find_model(name)
    assert found is not None
    return found


def test_every_model_of_the_table_is_read_from_its_config_and_parameter_counts() -> None:
    table = known_models()
    assert len(table) == 31
    for arch in table.values():
        assert arch.params_b > 0 and arch.layers > 0 and arch.head_dim > 0 and arch.kv_heads > 0
        assert arch.checkpoint_bytes and arch.hidden_size and arch.vocab_size and arch.max_context
        assert not any("estimated" in a for a in arch.assumptions)  # exact counts, not shapes
    assert model(LLAMA_8B).params_b == pytest.approx(8.030261248)
    assert model("Qwen/Qwen2.5-0.5B-Instruct").tie_word_embeddings


def test_lookup_is_case_insensitive_and_unknown_models_say_what_to_give() -> None:
    assert find_model(LLAMA_8B.lower()) == model(LLAMA_8B)
    with pytest.raises(UnknownModel, match="architecture"):
        resolve_architecture("someone/unknown-7b")


def test_spec_architecture_overrides_and_describes_unknown_models() -> None:
    custom = resolve_architecture(
        "acme/llm-13b", {"paramsB": 13, "layers": 40, "attentionHeads": 40, "kvHeads": 40, "hiddenSize": 5120}
    )
    assert custom.params_b == 13 and custom.head_dim == 128 and custom.runs == (LayerRun("full", 40),)
    shorter = resolve_architecture(LLAMA_8B, {"maxContext": 4096})
    assert shorter.max_context == 4096 and shorter.layers == 32
    resized = resolve_architecture(LLAMA_8B, {"paramsB": 9})
    assert resized.checkpoint_bytes is None  # a stated size replaces the measured one
    with pytest.raises(UnknownModel, match="layers"):
        resolve_architecture("acme/x", {"paramsB": 1})


def test_context_is_derived_as_vllm_derives_it() -> None:
    # llama3 scaling is already in max_position_embeddings; YaRN multiplies the original length.
    assert model(LLAMA_8B).max_context == 131072
    assert model("deepseek-ai/DeepSeek-V3").max_context == 4096 * 40
    assert model("openai/gpt-oss-20b").max_context == 4096 * 32
    assert model("google/gemma-3-27b-it").max_context == 131072  # Gemma 3's maximum is already scaled
    assert model("Qwen/Qwen2.5-7B-Instruct").max_context == 32768
    assert derived_max_context(4096, RopeScaling("linear", 4.0)) == 16384
    assert derived_max_context(32768, RopeScaling("dynamic", 2.0)) == 65536
    assert derived_max_context(4096, RopeScaling("longrope", 32.0)) == 4096
    assert derived_max_context(8192, None) == 8192


def test_rope_scaling_in_the_spec_extends_the_context_qwen_documents() -> None:
    qwen = "Qwen/Qwen2.5-7B-Instruct"
    plain = request_from_spec(ModelDeploymentSpec.from_k8s({"model": qwen}))
    assert plain.architecture.max_context == 32768
    yarn = request_from_spec(
        ModelDeploymentSpec.from_k8s(
            {
                "model": qwen,
                "engine": {
                    "maxModelLen": 131072,
                    "ropeScaling": {
                        "ropeType": "yarn",
                        "factor": 4.0,
                        "originalMaxPositionEmbeddings": 32768,
                    },
                },
            }
        )
    )
    assert yarn.architecture.max_context == 131072 and yarn.effective_max_model_len == 131072


def test_layer_types_come_from_every_family_s_keys() -> None:
    base = {"num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 2, "hidden_size": 512}
    listed = architecture_from_hub(
        "a/listed",
        {**base, "sliding_window": 256, "layer_types": ["sliding_attention"] * 5 + ["full_attention"]},
    )
    assert listed.runs == (LayerRun("sliding", 5, 256), LayerRun("full", 1))
    pattern = architecture_from_hub("a/gemma3", {**base, "sliding_window": 512, "sliding_window_pattern": 3})
    assert pattern.runs == (LayerRun("sliding", 4, 512), LayerRun("full", 2))
    gemma2 = architecture_from_hub("a/gemma2", {**base, "model_type": "gemma2", "sliding_window": 4096})
    assert gemma2.runs == (LayerRun("sliding", 3, 4096), LayerRun("full", 3)) and not gemma2.fp16_allowed
    qwen = architecture_from_hub("a/qwen", {**base, "sliding_window": 32768, "use_sliding_window": False})
    assert qwen.runs == (LayerRun("full", 6),)
    mistral = architecture_from_hub("a/mistral", {**base, "sliding_window": 4096})
    assert mistral.runs == (LayerRun("sliding", 6, 4096),)
    next_ = architecture_from_hub(
        "a/next",
        {
            **base,
            "full_attention_interval": 3,
            "linear_num_key_heads": 4,
            "linear_num_value_heads": 8,
            "linear_key_head_dim": 64,
            "linear_value_head_dim": 64,
            "linear_conv_kernel_dim": 4,
        },
    )
    assert next_.runs == (LayerRun("state", 4), LayerRun("full", 2)) and next_.state is not None
    assert next_.state.conv_dim == 2 * 4 * 64 + 8 * 64


def test_checkpoint_formats_and_exact_sizes_come_from_the_checkpoint() -> None:
    assert checkpoint_format({"quantization_config": {"quant_method": "fp8"}}) == "fp8"
    assert checkpoint_format({"quantization_config": {"quant_method": "awq", "bits": 4}}) == "awq"
    ct = {"config_groups": {"g": {"weights": {"num_bits": 4, "type": "float"}}}}
    assert checkpoint_format({"quantization_config": {"quant_method": "compressed-tensors", **ct}}) == "nvfp4"
    w8 = {"config_groups": {"g": {"weights": {"num_bits": 8, "type": "int"}}}}
    assert checkpoint_format({"quantization_config": {"quant_method": "compressed-tensors", **w8}}) == "int8"
    modelopt = {"hf_quant_config.json": {"quantization": {"quant_algo": "NVFP4"}}}
    assert checkpoint_format({}, modelopt) == "nvfp4"
    assert checkpoint_format({}) is None
    assert checkpoint_bytes({"BF16": 10, "F8_E4M3": 100, "F32": 3, "I32": 2}) == 20 + 100 + 12 + 8
    awq = architecture_from_hub(
        "a/awq",
        {
            "num_hidden_layers": 2,
            "num_attention_heads": 8,
            "hidden_size": 512,
            "quantization_config": {"quant_method": "awq"},
        },
        parameters_by_dtype={"I32": 1000, "F16": 200},
    )
    # Packed 4-bit weights: each I32 element holds eight of them.
    assert awq.params_b == pytest.approx(8200 / 1e9) and awq.checkpoint_bytes == 4400


def test_config_without_parameter_counts_is_estimated_and_says_so() -> None:
    llama = architecture_from_hf_config(
        "my/llama",
        {
            "num_hidden_layers": 32,
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "vocab_size": 128256,
            "max_position_embeddings": 131072,
            "tie_word_embeddings": False,
        },
    )
    assert 7.9 < llama.params_b < 8.1 and any("estimated" in a for a in llama.assumptions)
    with pytest.raises(UnknownModel, match="num_hidden_layers"):
        architecture_from_hf_config("bad", {"hidden_size": 1})


def test_moe_active_parameters_are_derived_from_the_expert_shapes() -> None:
    deepseek = model("deepseek-ai/DeepSeek-V3")
    assert deepseek.mla and deepseek.moe and 35 < (deepseek.active_params_b or 0) < 40  # published: 37B
    qwen = model("Qwen/Qwen3-30B-A3B")
    assert 3.0 < (qwen.active_params_b or 0) < 3.6  # published: 3.3B


@pytest.mark.parametrize(
    ("heads", "kv_heads", "tp", "accepted"),
    [
        (32, 8, 1, True),
        (32, 8, 2, True),
        (32, 8, 8, True),
        (32, 8, 16, True),  # multiple of the 8 KV heads: replicated
        (32, 8, 3, False),
        (64, 8, 16, True),
        (28, 4, 8, False),  # Qwen2.5-7B: 8 does not divide 28 heads
        (40, 8, 16, False),
        (14, 2, 4, False),
        (24, 8, 6, False),  # divides 24 heads, but neither divides nor is a multiple of 8 KV heads
        (48, 8, 6, False),
    ],
)
def test_tensor_parallel_rule_matches_vllm(heads: int, kv_heads: int, tp: int, accepted: bool) -> None:
    arch = ModelArchitecture("m", 1.0, 2, heads, kv_heads, 128)
    refusal = tensor_parallel_refusal(arch, tp)
    assert (refusal is None) == accepted
    if not accepted:
        assert str(tp) in (refusal or "")
