"""vLLM's memory arithmetic, reproduced from first principles for each layer type and failure class.

Each test recomputes the figure by hand from the model's published config and vLLM's rules
(vllm/v1/worker/gpu_worker.py for the budget, vllm/v1/kv_cache_interface.py and
vllm/v1/core/kv_cache_utils.py for pages, groups and blocks per request), then checks the
planner agrees. GPU memory is what the CUDA runtime reports (an "80 GB" H100 79.19 GiB, an L4
22.05 GiB).
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from gpupool.planner import ModelArchitecture, architecture_from_hub, estimate_memory, find_model
from gpupool.planner.kv_cache import LayerRun, cdiv, kv_layout
from gpupool.planner.memory import (
    CUDA_CONTEXT_GIB,
    GIB,
    PROFILE_WORKSPACE_GIB,
    loaded_weight_bytes,
    quantization_refusal,
    vllm_batch_defaults,
)

H100, L4 = 79.19, 22.05


def model(name: str) -> ModelArchitecture:
    found = find_model(name)
    assert found is not None
    return found


def test_vllm_batch_defaults_follow_the_gpu_as_arg_utils_does() -> None:
    assert vllm_batch_defaults("H100", H100) == (8192, 1024)
    assert vllm_batch_defaults("A100-80GB", 79.15) == (2048, 256)  # A100s are excluded by name
    assert vllm_batch_defaults("L4", L4) == (2048, 256)


def test_llama_8b_at_4k_fits_one_l4_and_reports_its_concurrency() -> None:
    arch = model("meta-llama/Llama-3.1-8B-Instruct")
    memory = estimate_memory(arch, tensor_parallel_size=1, gpu="L4", gpu_memory_gib=L4, max_model_len=4096)
    weights = 8_030_261_248 * 2
    # Profiling peak on an L4: 2048 batched tokens through the widest layer, or the sampler's
    # float32 logits for 256 requests over a 128,256-token vocabulary, whichever is larger.
    forward = 2048 * 2 * (4 * 4096 + (32 + 16) * 128 + 3 * 14336)
    sampler = 256 * 128_256 * 14
    activation = max(forward, sampler) + PROFILE_WORKSPACE_GIB * GIB
    budget = 0.9 * L4 * GIB - weights - activation
    block = 16 * (2 * 8 * 128 * 2) * 32  # 16 tokens x K and V of 8 heads x 128 x bf16, 32 layers
    blocks = int(budget // block)
    assert memory.fits
    assert memory.num_blocks == blocks
    assert memory.kv_cache_tokens == blocks * 16
    assert memory.max_concurrency == pytest.approx(blocks / (4096 / 16))
    assert 8 < memory.max_concurrency < 9  # about 34k tokens of KV cache: 8 sequences of 4k
    assert memory.load.weights_bytes == weights


def test_gemma_3_27b_at_32k_fits_one_80gb_gpu_because_52_of_62_layers_are_windowed() -> None:
    arch = model("google/gemma-3-27b-it")
    assert arch.runs == (LayerRun("sliding", 52, 1024), LayerRun("full", 10))
    memory = estimate_memory(
        arch, tensor_parallel_size=1, gpu="H100", gpu_memory_gib=H100, max_model_len=32768
    )
    # One group of the 10 full layers and ceil(52 / 10) = 6 groups of windowed ones share a pool
    # of blocks of 16 tokens x 10 layers. A 32k request takes 2048 blocks in the full group and
    # cdiv(min(1024 - 1 + 8192, 32768), 16) + 1 = 577 in each windowed group.
    layout = memory.load.layout
    assert layout.group_size == 10 and len(layout.groups) == 7
    per_request = 32768 // 16 + 6 * (cdiv(1023 + 8192, 16) + 1)
    assert layout.blocks_per_request(32768) == per_request == 5510
    assert memory.fits and memory.max_concurrency >= 1
    # Sized as if every layer were full attention, the same budget would not hold one sequence.
    full = estimate_memory(
        dataclasses.replace(arch, layer_runs=()),
        tensor_parallel_size=1,
        gpu="H100",
        gpu_memory_gib=H100,
        max_model_len=32768,
    )
    assert full.load.layout.blocks_per_request(32768) == 2048
    assert full.load.layout.bytes_per_block == 16 * 8192 * 62
    assert memory.max_concurrency > 2 * full.max_concurrency


def test_chunked_local_attention_takes_the_chunk_plus_one_step() -> None:
    config = {
        "model_type": "llama4_text",
        "num_hidden_layers": 48,
        "hidden_size": 5120,
        "intermediate_size": 8192,
        "num_attention_heads": 40,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "attention_chunk_size": 8192,
        "no_rope_layers": [0 if (i + 1) % 4 == 0 else 1 for i in range(48)],
        "max_position_embeddings": 131072,
        "vocab_size": 202048,
    }
    arch = architecture_from_hub("acme/llama4-like", config, parameters_by_dtype={"BF16": 17_000_000_000})
    assert arch.runs == (LayerRun("chunked", 36, 8192), LayerRun("full", 12))
    layout = kv_layout(arch.runs, attention_token_bytes=2 * 8 * 128 * 2, max_batched_tokens=8192)
    # 36 chunked layers in 3 groups of 12, one full group: a 128k request holds its chunk + one step.
    assert layout.group_size == 12 and len(layout.groups) == 4
    assert layout.blocks_per_request(131072) == 131072 // 16 + 3 * cdiv(8192 + 8192, 16)


def test_mla_keeps_one_latent_vector_per_token_on_every_rank() -> None:
    arch = model("deepseek-ai/DeepSeek-V3")
    one = estimate_memory(arch, tensor_parallel_size=8, gpu="H200", gpu_memory_gib=139.8, max_model_len=32768)
    # kv_lora_rank 512 + qk_rope_head_dim 64 elements in bf16, for each of the 61 layers, on each rank.
    assert one.load.layout.page_bytes == 16 * (512 + 64) * 2
    assert one.load.layout.bytes_per_block == 16 * 576 * 2 * 61
    assert one.kv_bytes_per_token == 576 * 2 * 61  # not multiplied by tp: replicated, not split
    assert one.fits


def test_mamba_state_is_one_padded_page_per_sequence() -> None:
    pattern = "M-M-M-M*-" * 4  # Nemotron-H style: 16 Mamba2 layers, 4 attention layers, MLPs
    config = {
        "model_type": "nemotron_h",
        "num_hidden_layers": len(pattern),
        "hybrid_override_pattern": pattern,
        "hidden_size": 4096,
        "intermediate_size": 21504,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "mamba_num_heads": 128,
        "mamba_head_dim": 64,
        "ssm_state_size": 128,
        "n_groups": 8,
        "conv_kernel": 4,
        "max_position_embeddings": 8192,
        "vocab_size": 131072,
    }
    arch = architecture_from_hub("acme/hybrid", config, parameters_by_dtype={"BF16": 8_000_000_000})
    assert arch.runs == (LayerRun("state", 16), LayerRun("full", 4)) and arch.state is not None
    state = arch.state.bytes_per_rank(1, 2)
    # conv: (4 - 1) x (128 x 64 + 2 x 8 x 128) channels; SSM: 128 heads x 64 x 128, in bf16
    assert state == ((4 - 1) * (128 * 64 + 2 * 8 * 128) + 128 * 64 * 128) * 2
    token = 2 * 8 * 128 * 2
    layout = kv_layout(arch.runs, attention_token_bytes=token, state_bytes=state, max_batched_tokens=2048)
    # The attention block grows until its page holds a state: 16 x ceil(state / (16 x token)).
    assert layout.block_size == 16 * math.ceil(state / (16 * token))
    assert layout.page_bytes == layout.block_size * token >= state
    # 4 attention layers make the group size; the 16 state layers 4 groups taking one page each.
    assert layout.group_size == 4 and len(layout.groups) == 5
    assert layout.blocks_per_request(8192) == cdiv(8192, layout.block_size) + 4
    assert layout.blocks_per_request(100) == layout.blocks_per_request(1)  # constant per sequence


def test_sliding_window_pages_are_bounded_by_window_plus_batched_tokens() -> None:
    arch = model("openai/gpt-oss-20b")
    assert arch.runs == (LayerRun("sliding", 12, 128), LayerRun("full", 12))
    layout = estimate_memory(
        arch, tensor_parallel_size=1, gpu="L4", gpu_memory_gib=L4, max_model_len=32768
    ).load.layout
    assert layout.group_size == 12 and len(layout.groups) == 2
    assert layout.blocks_per_request(32768) == 2048 + cdiv(127 + 2048, 16) + 1
    assert layout.blocks_per_request(64) == 4 + cdiv(64, 16) + 1


def test_kv_heads_are_replicated_when_tensor_parallel_exceeds_them() -> None:
    arch = model("Qwen/Qwen2.5-7B-Instruct")  # 4 KV heads
    four = estimate_memory(arch, tensor_parallel_size=4, gpu="L4", gpu_memory_gib=L4, max_model_len=8192)
    # A tp of 4 splits the heads: one per rank. 4 x 1 x 128 x 2 x 2 x 28 layers per token.
    assert four.load.layout.page_bytes == 16 * 2 * 1 * 128 * 2
    assert four.kv_bytes_per_token == 4 * 2 * 128 * 2 * 28


def test_headroom_outside_the_budget_is_checked_separately() -> None:
    arch = model("Qwen/Qwen3-0.6B")
    tight = estimate_memory(
        arch,
        tensor_parallel_size=1,
        gpu="L4",
        gpu_memory_gib=L4,
        max_model_len=4096,
        gpu_memory_utilization=0.99,
    )
    # (1 - 0.99) x 22.05 GiB = 0.22 GiB cannot hold the CUDA context: vLLM refuses to start.
    assert tight.headroom_gib < CUDA_CONTEXT_GIB and not tight.starts and not tight.fits
    assert "lower spec.engine.gpuMemoryUtilization" in tight.shortfall_message()
    thin = estimate_memory(
        arch,
        tensor_parallel_size=1,
        gpu="L4",
        gpu_memory_gib=L4,
        max_model_len=4096,
        gpu_memory_utilization=0.96,
    )
    assert thin.fits and thin.thin_headroom  # starts, but CUDA graph capture may run short


def test_targets_size_the_cache_and_max_num_seqs_caps_them() -> None:
    arch = model("meta-llama/Llama-3.1-8B-Instruct")
    common = {"tensor_parallel_size": 1, "gpu": "L4", "gpu_memory_gib": L4, "max_model_len": 8192}
    small = estimate_memory(arch, **common, target_concurrency=2)
    assert small.fits
    big = estimate_memory(arch, **common, target_concurrency=16)  # 16 x 8k tokens: 16 GiB of KV
    assert not big.fits and "KV cache for 16 x 8192" in big.shortfall_message()
    at_average = estimate_memory(
        arch, **common, target_concurrency=16, average_input_tokens=1024, average_output_tokens=256
    )
    assert at_average.fits and at_average.concurrency_at_average >= 16
    capped = estimate_memory(arch, **common, target_concurrency=8, max_num_seqs=4, average_input_tokens=512)
    assert not capped.fits and "exceeds maxNumSeqs 4" in capped.shortfall_message()


def test_llama_70b_bf16_takes_two_80gb_gpus_not_four() -> None:
    arch = model("meta-llama/Llama-3.1-70B-Instruct")
    one = estimate_memory(arch, tensor_parallel_size=1, gpu="H100", gpu_memory_gib=H100, max_model_len=8192)
    two = estimate_memory(arch, tensor_parallel_size=2, gpu="H100", gpu_memory_gib=H100, max_model_len=8192)
    assert not one.fits and two.fits
    assert two.load.weights_bytes == pytest.approx(70_553_706_496 * 2 / 2)
    assert 2 < two.max_concurrency < 4


def test_weights_follow_the_checkpoint_and_load_time_quantization() -> None:
    llama = model("meta-llama/Llama-3.1-8B-Instruct")
    assert loaded_weight_bytes(llama) == 8_030_261_248 * 2
    # --quantization fp8 makes linear layers one byte; embeddings and the LM head stay 16 bit.
    embedding = 128_256 * 4096 * 2
    assert loaded_weight_bytes(llama, "fp8") == pytest.approx(embedding * 2 + (8_030_261_248 - embedding))
    gpt = model("openai/gpt-oss-120b")
    assert gpt.native_format == "mxfp4"
    assert loaded_weight_bytes(gpt) == gpt.checkpoint_bytes  # exact: storage as loaded
    assert quantization_refusal(gpt, "fp8") is not None and "mxfp4" in (
        quantization_refusal(gpt, "fp8") or ""
    )
    assert quantization_refusal(gpt, "mxfp4") is None and quantization_refusal(llama, "fp8") is None


def test_pipeline_parallel_splits_layers_across_nodes() -> None:
    arch = model("meta-llama/Llama-3.1-405B-Instruct")
    node = estimate_memory(arch, tensor_parallel_size=8, gpu="H100", gpu_memory_gib=H100, max_model_len=8192)
    assert not node.fits  # 811 GB of bf16 weights on 8 x 80 GB
    two = estimate_memory(
        arch,
        tensor_parallel_size=8,
        pipeline_parallel_size=2,
        gpu="H100",
        gpu_memory_gib=H100,
        max_model_len=8192,
    )
    # The busiest stage: 63 of 126 layers plus one embedding matrix, split 8 ways.
    embedding = 128_256 * 16384 * 2
    per_layer = (405_853_388_800 * 2 - 2 * embedding) / 126
    assert two.load.weights_bytes == pytest.approx((63 * per_layer + embedding) / 8)
    assert two.fits and two.load.layout.group_size == 63
