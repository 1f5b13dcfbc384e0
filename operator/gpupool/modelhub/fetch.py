"""One model's metadata read from the Hub through huggingface_hub: blocking, and run in a thread.

What vLLM loads decides what is read. Its config.json (and the quantization files it reads beside
it) and the safetensors files it would load: the ones the index names when the repo has
model.safetensors.index.json, otherwise every *.safetensors at the repo's root. Of each of
those only the header is read (HfApi.parse_safetensors_file_metadata asks for its first bytes
with an HTTP Range request), which gives every tensor's dtype and shape, hence the exact
parameter count and weight bytes without downloading a single weight.

The model info is asked first, once: it tells which files exist (so nothing is probed that is not
there) and pins the commit every later read uses, so one resolution never mixes two uploads.
Small JSON files are read into memory with the library's own session and error mapping rather
than through hf_hub_download, which would write them to a disk cache the operator does not need.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from huggingface_hub import HfApi, get_session, hf_hub_url, hf_raise_for_status
from huggingface_hub.errors import SafetensorsParsingError
from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]  # public, lazily exported

from gpupool import __version__
from gpupool.modelhub.model import HubModel, ModelUnresolved

SAFETENSORS_INDEX = "model.safetensors.index.json"
# The quantization files vLLM's loaders look for beside config.json (ModelOpt; GPTQ; AWQ).
EXTRA_CONFIG_FILES = ("hf_quant_config.json", "quantize_config.json", "quant_config.json")
# Shard headers are read this many at a time: a 163-shard checkpoint costs seconds, not minutes.
_SHARD_READERS = 8
# Other weight formats, named when a repo has no safetensors, so the message says what it has.
_OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack", ".onnx")


class Abandoned(Exception):
    """The caller stopped waiting (its deadline passed): the remaining requests are not made."""


class Progress:
    """Which file is being read, so an error can say which one failed; and whether to go on."""

    def __init__(self) -> None:
        self.file: str | None = None
        self.abandoned = False

    def reading(self, name: str | None) -> None:
        if self.abandoned:
            raise Abandoned(name or "model info")
        self.file = name


def fetch_model(
    model_id: str,
    *,
    token: str | None,
    revision: str | None,
    endpoint: str,
    timeout: float,
    progress: Progress,
) -> HubModel:
    """Read the model's metadata from the Hub; raises what huggingface_hub raises, or ModelUnresolved."""
    # token=False, not None: never fall back to a token the library finds in the environment.
    api = HfApi(endpoint=endpoint, token=token or False, library_name="gpupool", library_version=__version__)
    progress.reading(None)
    info = api.model_info(model_id, revision=revision, expand=["sha", "siblings", "gated"], timeout=timeout)
    if not info.sha:
        raise ModelUnresolved("Malformed", f"model {model_id}: the Hub's model info names no commit")
    sha = info.sha
    files = [sibling.rfilename for sibling in info.siblings or ()]

    def read_json(name: str) -> Any:
        progress.reading(name)
        response = get_session().get(
            hf_hub_url(model_id, name, revision=sha, endpoint=endpoint),
            headers=build_hf_headers(
                token=token or False, library_name="gpupool", library_version=__version__
            ),
            timeout=timeout,
        )
        hf_raise_for_status(response)
        return json.loads(response.content)

    root_safetensors = sorted(f for f in files if "/" not in f and f.endswith(".safetensors"))
    if SAFETENSORS_INDEX not in files and not root_safetensors:
        raise ModelUnresolved("NoSafetensors", _no_safetensors(model_id, files))

    config = read_json("config.json")
    if not isinstance(config, dict):
        raise ModelUnresolved("Malformed", f"model {model_id}: config.json is not a JSON object")
    extra = {}
    for name in EXTRA_CONFIG_FILES:
        if name in files:
            value = read_json(name)
            if not isinstance(value, dict):
                raise ModelUnresolved("Malformed", f"model {model_id}: {name} is not a JSON object")
            extra[name] = value

    if SAFETENSORS_INDEX in files:
        index = read_json(SAFETENSORS_INDEX)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelUnresolved(
                "Malformed", f"model {model_id}: {SAFETENSORS_INDEX} has no weight_map naming its shards"
            )
        weights = sorted({str(shard) for shard in weight_map.values()})
    else:
        weights = root_safetensors

    counts, nbytes = _read_headers(api, model_id, sha, weights, timeout, progress)
    progress.file = None
    return HubModel(
        model_id=model_id,
        revision=sha,
        config=config,
        parameters_by_dtype=counts,
        weight_bytes=nbytes,
        safetensors_files=tuple(weights),
        extra_configs=extra,
        gated=bool(info.gated),
    )


def _read_headers(
    api: HfApi, model_id: str, sha: str, files: Iterable[str], timeout: float, progress: Progress
) -> tuple[dict[str, int], int]:
    """Elements by dtype and total tensor bytes over every file's header."""

    def header(name: str) -> tuple[str, dict[str, int], int]:
        if progress.abandoned:
            raise Abandoned(name)
        try:
            meta = api.parse_safetensors_file_metadata(model_id, name, revision=sha, timeout=timeout)
        except Exception:
            progress.file = name
            raise
        try:
            spans = sum(end - start for start, end in (t.data_offsets for t in meta.tensors.values()))
        except (TypeError, ValueError) as bad:
            raise SafetensorsParsingError(f"{name}: tensor offsets are not pairs of integers") from bad
        return name, {str(dtype): n for dtype, n in meta.parameter_count.items()}, spans

    counts: dict[str, int] = {}
    total = 0
    names = list(files)
    with ThreadPoolExecutor(max_workers=min(_SHARD_READERS, len(names)) or 1) as pool:
        for _name, by_dtype, spans in pool.map(header, names):
            for dtype, count in by_dtype.items():
                counts[dtype] = counts.get(dtype, 0) + count
            total += spans
    return dict(sorted(counts.items())), total


def _no_safetensors(model_id: str, files: list[str]) -> str:
    others = sorted({ext for f in files for ext in _OTHER_WEIGHTS if f.endswith(ext)})
    has = f" (it has {', '.join(others)} files)" if others else ""
    return (
        f"model {model_id} has no safetensors weights{has}: gpupool sizes a model from its "
        "safetensors headers and vLLM loads those; pick the repo's Transformers/safetensors "
        "variant, or give spec.architecture"
    )
