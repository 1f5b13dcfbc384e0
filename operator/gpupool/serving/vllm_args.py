"""The `vllm serve` command line, and the guard that keeps users from fighting the operator over it.

The operator owns the flags that follow from the plan (tensor-parallel size, context length,
memory share, port): if a user's `spec.engine.extraArgs` repeated one, vLLM's argparse would
silently take the last occurrence and the pod would run a shape the planner never priced or
fitted. So a repeated managed flag is an error naming the spec field to use instead.

How vLLM is started. The pods set `command: ["vllm", "serve"]` and pass the model as the
first positional argument, the form vLLM's Kubernetes guide uses (vllm-project/vllm,
docs/deployment/k8s.md: `vllm serve <model> ...`). Setting `command` rather than relying on
the image's ENTRYPOINT keeps the pod independent of it: older `vllm/vllm-openai` images use
`python3 -m vllm.entrypoints.openai.api_server` (docker/Dockerfile, target `vllm-openai`),
newer ones `vllm serve`, and an image override may use neither.

The API key never appears in argv, where `ps` and the pod spec would show it: the pods set
the `VLLM_API_KEY` environment variable from the Secret, which vLLM's server reads when
`--api-key` is absent (vllm/entrypoints/openai/api_server.py: `args.api_key or
envs.VLLM_API_KEY`). `/health` stays outside that check, so probes need no key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from gpupool.serving.inputs import RenderError, ServingInput

#: The port vLLM listens on inside the pod; the Service's `http` port targets it.
VLLM_PORT = 8000

#: Managed vLLM flags (and their argparse aliases) -> the spec field that sets each one.
MANAGED_FLAGS: Mapping[str, str] = {
    "--model": "spec.model",
    "--served-model-name": "spec.servedName",
    "--tensor-parallel-size": "spec.engine.tensorParallelSize",
    "-tp": "spec.engine.tensorParallelSize",
    "--pipeline-parallel-size": "the planner (it splits the layers into stages when no single node holds the model)",
    "-pp": "the planner (it splits the layers into stages when no single node holds the model)",
    "--max-model-len": "spec.engine.maxModelLen",
    "--dtype": "spec.engine.dtype",
    "--quantization": "spec.engine.quantization",
    "-q": "spec.engine.quantization",
    "--gpu-memory-utilization": "spec.engine.gpuMemoryUtilization",
    "--max-num-seqs": "spec.engine.maxNumSeqs",
    "--max-num-batched-tokens": "spec.engine.maxNumBatchedTokens",
    "--rope-scaling": "spec.engine.ropeScaling",
    "--port": "the operator (the Service targets port 8000)",
    "--api-key": "spec.apiKeySecretRef",
}

#: Flags the operator owns only for a replica that spans nodes: elsewhere they are the user's.
MULTI_NODE_MANAGED_FLAGS: Mapping[str, str] = {
    "--distributed-executor-backend": "the operator (a replica that spans nodes runs vLLM's Ray executor)",
}

# The spec's quantization names that vLLM can apply at load time to an unquantized
# checkpoint. The other names (awq, gptq, int8, int4) describe how the checkpoint itself
# was quantized: vLLM reads that from the checkpoint's `quantization_config` and picks the
# fastest kernel for the GPU (awq_marlin/gptq_marlin where supported, compressed-tensors for
# INT8/INT4 llm-compressor checkpoints). Forcing `--quantization awq` would pin the slower
# non-Marlin kernel, and vLLM has no `int8`/`int4` method names at all. The planner still
# uses the spec value to size the weights.
_LOAD_TIME_QUANTIZATION: Mapping[str, str] = {"fp8": "fp8", "bitsandbytes": "bitsandbytes"}


def vllm_args(inp: ServingInput) -> list[str]:
    """The arguments after `vllm serve`: the model, the managed flags, then the user's extras.

    Raises RenderError if an extra argument repeats a managed flag.
    """
    check_extra_args(inp.extra_args)
    args = [
        inp.model,
        "--served-model-name",
        inp.served_name,
        "--tensor-parallel-size",
        str(inp.tensor_parallel_size),
        "--max-model-len",
        str(inp.max_model_len),
        "--dtype",
        inp.dtype,
    ]
    args += parallel_args(inp)
    method = _LOAD_TIME_QUANTIZATION.get(inp.quantization)
    if method is not None:
        args += ["--quantization", method]
    args += ["--gpu-memory-utilization", _decimal(inp.gpu_memory_utilization)]
    # Only what the spec states: left out, vLLM's own defaults apply, as the planner assumed.
    if inp.max_num_seqs is not None:
        args += ["--max-num-seqs", str(inp.max_num_seqs)]
    if inp.max_num_batched_tokens is not None:
        args += ["--max-num-batched-tokens", str(inp.max_num_batched_tokens)]
    if inp.rope_scaling is not None:
        # vLLM v0.11 reads `--rope-scaling` as JSON (vllm/engine/arg_utils.py, ModelConfig.rope_scaling).
        args += ["--rope-scaling", json.dumps(dict(inp.rope_scaling), sort_keys=True, separators=(",", ":"))]
    args += ["--port", str(VLLM_PORT)]
    return args + list(inp.extra_args)


def parallel_args(inp: ServingInput) -> list[str]:
    """The pipeline stages when the layers are split, and Ray as the executor across nodes.

    Empty for a replica that is tensor parallel on one node, so its command line is what it
    always was. vLLM's default executor (multiprocessing) stays on one node; across nodes it
    needs Ray, whose cluster the group's leader starts and its workers join
    (leaderworkerset.py).
    """
    args: list[str] = []
    if inp.pipeline_parallel_size > 1:
        args += ["--pipeline-parallel-size", str(inp.pipeline_parallel_size)]
    if inp.nodes_per_replica > 1:
        _check_flags(inp.extra_args, MULTI_NODE_MANAGED_FLAGS)
        args += ["--distributed-executor-backend", "ray"]
    return args


def check_extra_args(extra_args: tuple[str, ...] | list[str]) -> None:
    """Raise RenderError naming `spec.engine.extraArgs` and the flag if one is managed."""
    _check_flags(extra_args, MANAGED_FLAGS)


def _check_flags(extra_args: tuple[str, ...] | list[str], managed: Mapping[str, str]) -> None:
    for arg in extra_args:
        flag = _flag_name(arg)
        if flag is not None and flag in managed:
            raise RenderError(
                "spec.engine.extraArgs",
                f"{arg!r} sets {flag}, which the operator manages; set {managed[flag]} instead",
            )


def _flag_name(arg: str) -> str | None:
    """The canonical flag an argument sets, or None for a value.

    vLLM's parser accepts `--flag=value` and underscores for dashes (`--max_model_len`),
    so both spellings count as the same flag.
    """
    if not arg.startswith("-") or _is_number(arg):
        return None
    name = arg.split("=", 1)[0]
    if name.startswith("--"):
        return "--" + name[2:].replace("_", "-")
    return name


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _decimal(value: float) -> str:
    """A float as vLLM's argparse expects it, without float noise (0.9, never 0.9000000000000001)."""
    return f"{value:.4f}".rstrip("0").rstrip(".")
