"""Model fit: architectures, memory arithmetic and tensor-parallel rules, against public deployment facts."""

from __future__ import annotations

import pytest

from gpupool.planner import (
    ModelArchitecture,
    UnknownModel,
    accepted_tensor_parallel_sizes,
    architecture_from_hf_config,
    estimate_memory,
    find_model,
    known_models,
    resolve_architecture,
    tensor_parallel_refusal,
)
from gpupool.planner.memory import kv_bytes_per_token_per_gpu, weight_bytes_per_param

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"
LLAMA_405B = "meta-llama/Llama-3.1-405B-Instruct"


def model(name: str) -> ModelArchitecture:
    found = find_model(name)
    assert found is not None
    return found


def test_every_model_of_the_table_is_known_with_complete_figures() -> None:
    table = known_models()
    assert len(table) == 31
    for arch in table.values():
        assert arch.params_b > 0 and arch.layers > 0 and arch.head_dim > 0 and arch.kv_heads > 0


def test_derived_figures_are_recorded_as_assumptions() -> None:
    phi = model("microsoft/Phi-3.5-mini-instruct")
    assert 3.8 < phi.params_b < 4.8  # the public figure is 3.8B; the estimate errs large
    assert any("estimated" in a for a in phi.assumptions)
    qwen = model("Qwen/Qwen2.5-72B-Instruct")
    assert any("head_dim" in a for a in qwen.assumptions)
    assert not model(LLAMA_8B).assumptions


def test_lookup_is_case_insensitive_and_unknown_models_say_what_to_give() -> None:
    assert find_model(LLAMA_8B.lower()) == model(LLAMA_8B)
    with pytest.raises(UnknownModel, match="architecture"):
        resolve_architecture("someone/unknown-7b")


def test_spec_architecture_overrides_and_describes_unknown_models() -> None:
    custom = resolve_architecture(
        "acme/llm-13b", {"paramsB": 13, "layers": 40, "attentionHeads": 40, "kvHeads": 40, "hiddenSize": 5120}
    )
    assert custom.params_b == 13 and custom.head_dim == 128
    longer = resolve_architecture(LLAMA_8B, {"maxContext": 4096})
    assert longer.max_context == 4096 and longer.layers == 32
    with pytest.raises(UnknownModel, match="layers"):
        resolve_architecture("acme/x", {"paramsB": 1})


def test_hf_config_json_is_read_including_moe_mla_and_quantization() -> None:
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
            "torch_dtype": "bfloat16",
        },
    )
    assert 7.5 < llama.params_b < 8.5  # Llama-3.1-8B has 8.03B
    assert llama.kv_heads == 8 and llama.head_dim == 128 and llama.max_context == 131072
    deepseek = architecture_from_hf_config(
        "my/ds",
        {
            "num_hidden_layers": 61,
            "hidden_size": 7168,
            "num_attention_heads": 128,
            "num_key_value_heads": 128,
            "kv_lora_rank": 512,
            "qk_rope_head_dim": 64,
            "qk_nope_head_dim": 128,
            "n_routed_experts": 256,
            "num_parameters": 671e9,
            "quantization_config": {"quant_method": "fp8"},
        },
    )
    assert deepseek.mla and deepseek.moe and deepseek.weight_bytes_per_param == 1.0
    gemma3 = architecture_from_hf_config(
        "my/gemma3",
        {
            "text_config": {
                "num_hidden_layers": 34,
                "num_attention_heads": 8,
                "num_key_value_heads": 4,
                "head_dim": 256,
                "hidden_size": 2560,
            },
            "num_parameters": 4e9,
        },
    )
    assert gemma3.layers == 34 and gemma3.head_dim == 256
    with pytest.raises(UnknownModel, match="num_hidden_layers"):
        architecture_from_hf_config("bad", {"hidden_size": 1})


def test_known_case_8b_bf16_fits_one_24gb_gpu_at_moderate_context() -> None:
    for gpu_memory in (24.0, 22.35):  # L4/A10 and AWS's usable A10G
        memory = estimate_memory(
            model(LLAMA_8B),
            tensor_parallel_size=1,
            gpu_memory_gib=gpu_memory,
            max_model_len=4096,
            max_num_seqs=4,
        )
        assert memory.fits, memory.shortfall_message()
        assert 14 < memory.weights_gib < 16  # 8B x 2 bytes


def test_known_case_70b_bf16_does_not_fit_one_80gb_gpu() -> None:
    memory = estimate_memory(
        model(LLAMA_70B), tensor_parallel_size=1, gpu_memory_gib=80, max_model_len=2048, max_num_seqs=1
    )
    assert not memory.fits
    assert memory.weights_gib > 120
    assert memory.shortfall_message().startswith("needs 13")
    assert "has 72 GiB" in memory.shortfall_message()


def test_known_case_405b_fp8_needs_a_full_node_of_80gb_cards() -> None:
    arch = model(LLAMA_405B)
    sizes = {
        tp: estimate_memory(
            arch, tensor_parallel_size=tp, gpu_memory_gib=80, max_model_len=8192, quantization="fp8"
        ).fits
        for tp in accepted_tensor_parallel_sizes(arch, 8)
    }
    assert sizes == {1: False, 2: False, 4: False, 8: True}


def test_weights_follow_dtype_quantization_and_native_formats() -> None:
    llama = model(LLAMA_70B)
    assert weight_bytes_per_param(llama) == 2.0
    assert weight_bytes_per_param(llama, "float16") == 2.0
    assert weight_bytes_per_param(llama, quantization="fp8") == 1.0
    assert weight_bytes_per_param(llama, quantization="awq") < 0.6
    assert weight_bytes_per_param(model("deepseek-ai/DeepSeek-V3")) == 1.0
    assert weight_bytes_per_param(model("openai/gpt-oss-120b")) < 0.6
    with pytest.raises(ValueError, match="quantization"):
        weight_bytes_per_param(llama, quantization="nf3")


def test_kv_cache_per_token_matches_the_published_formula() -> None:
    # 2 (K and V) x kv_heads x head_dim x 2 bytes x layers
    assert kv_bytes_per_token_per_gpu(model(LLAMA_8B), 1, 2) == 2 * 8 * 128 * 2 * 32
    assert kv_bytes_per_token_per_gpu(model(LLAMA_70B), 8, 2) == 2 * 1 * 128 * 2 * 80
    # tp beyond the KV heads replicates them: one head per GPU, not a fraction.
    qwen_moe = model("Qwen/Qwen3-235B-A22B")  # 4 KV heads
    assert kv_bytes_per_token_per_gpu(qwen_moe, 8, 2) == kv_bytes_per_token_per_gpu(qwen_moe, 4, 2)
    # MLA: one latent vector of 512 + 64 per token and layer, on every rank.
    deepseek = model("deepseek-ai/DeepSeek-V3")
    assert kv_bytes_per_token_per_gpu(deepseek, 8, 2) == (512 + 64) * 2 * 61


def test_kv_cache_scales_with_context_and_concurrency() -> None:
    small = estimate_memory(
        model(LLAMA_8B), tensor_parallel_size=1, gpu_memory_gib=80, max_model_len=4096, max_num_seqs=4
    )
    large = estimate_memory(
        model(LLAMA_8B), tensor_parallel_size=1, gpu_memory_gib=80, max_model_len=8192, max_num_seqs=16
    )
    assert large.kv_cache_gib == pytest.approx(small.kv_cache_gib * 8)
    fp8_kv = estimate_memory(
        model(LLAMA_8B),
        tensor_parallel_size=1,
        gpu_memory_gib=80,
        max_model_len=8192,
        max_num_seqs=16,
        kv_cache_dtype="fp8",
    )
    assert fp8_kv.kv_cache_gib == pytest.approx(large.kv_cache_gib / 2)


def test_gpu_memory_utilization_bounds_what_is_available() -> None:
    args = {"tensor_parallel_size": 1, "gpu_memory_gib": 24.0, "max_model_len": 8192, "max_num_seqs": 2}
    assert estimate_memory(model(LLAMA_8B), gpu_memory_utilization=0.95, **args).fits
    assert not estimate_memory(model(LLAMA_8B), gpu_memory_utilization=0.6, **args).fits


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


def test_tensor_parallel_refusal_names_the_heads() -> None:
    arch = ModelArchitecture("m", 1.0, 2, 32, 8, 128)
    assert tensor_parallel_refusal(arch, 3) == "tensor parallel 3 does not divide 32 attention heads"
