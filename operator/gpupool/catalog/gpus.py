"""GPU models: one canonical name per model and memory size, and the spec sheet behind it.

Clouds name the same card a dozen ways (`A6000`, `RTXA6000`, `RTX-A6000`), and the same name can mean
two cards (`A100` is 40 GB at AWS and 80 GB at Cudo). A pool that says `gpuTypes: [A100-80GB]` must
match every cloud's spelling, so names are normalized once, at load time, from the source name, the
per-GPU memory the cloud reports and hints in the instance type (`..._pcie`). The canonical names are
those of `gpus.csv`, which has a row for every name the shipped offers produce; a card no source
knows gets a tidied name in the same `VENDOR-MODEL[-VARIANT]` style.
"""

from __future__ import annotations

import csv
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

# The one rule for a CUDA total nobody has logged (see data/README.md, "cuda_memory_gib"): 97 % of the
# marketed size, and 15/16 of that again where ECC on GDDR memory keeps check bits in it. 97 % is just
# below the lowest ratio any logged card shows, so a derived figure errs small, never large.
DERIVED_CUDA_FRACTION = 0.97
GDDR_ECC_FRACTION = 15 / 16


def derived_cuda_memory_gib(memory_gib: float, *, ecc_reserves_memory: bool) -> float:
    """The CUDA-visible total the catalog assumes for a card without a logged figure (rounded down)."""
    fraction = DERIVED_CUDA_FRACTION * (GDDR_ECC_FRACTION if ecc_reserves_memory else 1.0)
    return math.floor(memory_gib * fraction * 100 + 1e-9) / 100


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """Spec-sheet figures of one GPU model (one row of data/gpus.csv).

    Tensor throughputs are dense (no 2:4 sparsity); None means the card has no tensor cores for that
    format (bf16 below compute capability 8.0, fp8 below 8.9, int8 below 7.5), never "unknown".
    `compute_capability` is None for cards that are not NVIDIA's.
    """

    name: str
    memory_gib: float
    memory_bandwidth_gbs: float | None = None
    bf16_tflops_dense: float | None = None
    fp16_tflops_dense: float | None = None
    fp8_tflops_dense: float | None = None
    int8_tops_dense: float | None = None
    interconnect: str = ""
    # GPUs of one instance reach each other over NVLink/NVSwitch (or AMD's XGMI mesh), not PCIe;
    # pairs joined by an optional bridge do not count, since a cloud's 8-GPU box is rarely bridged.
    nvlink: bool = False
    # vLLM's CUDA kernels need compute capability 7.0 or newer; AMD/Intel cards need their own builds.
    vllm_supported: bool = True
    compute_capability: tuple[int, int] | None = None
    architecture: str = ""
    memory_type: str = ""
    ecc_reserves_memory: bool = False
    # What torch.cuda.mem_get_info()[1] reports in GiB: the total vLLM multiplies by
    # gpu_memory_utilization. None only for hand-made specs; every shipped row has one.
    cuda_memory_gib: float | None = None
    cuda_memory_source: str = ""  # "derived", or the public log it was read from

    @property
    def bf16_tflops(self) -> float | None:
        """16-bit tensor TFLOPS in the dtype the card serves in: bf16, else fp16 (T4, V100)."""
        return self.bf16_tflops_dense if self.bf16_tflops_dense is not None else self.fp16_tflops_dense

    @property
    def fp8_tflops(self) -> float | None:
        return self.fp8_tflops_dense

    @property
    def cuda_memory_derived(self) -> bool:
        return self.cuda_memory_source == "derived"


# Source spellings (upper-cased, separators removed) to canonical names, when memory does not matter.
_ALIASES: dict[str, str] = {
    "H100": "H100",
    "H100SXM": "H100",
    "H10080GSXM5": "H100",
    "H100NVLINK": "H100",
    "H100MEGA": "H100",
    "H10080GPCIE": "H100-PCIe",
    "H10080GPCIENVLINK": "H100-PCIe",
    "H100PCIE": "H100-PCIe",
    "H100NVL": "H100-NVL",
    "H200": "H200",
    "GH200": "GH200",
    "B200": "B200",
    "B300": "B300",
    "A10080GB": "A100-80GB",
    "A10080GBSXM": "A100-80GB",
    "A10080GPCIE": "A100-80GB-PCIe",
    "A10080GPCIENVLINK": "A100-80GB-PCIe",
    "A10G": "A10G",
    "A10": "A10",
    "A30": "A30",
    "A40": "A40",
    "A16": "A16",
    "A800": "A800",
    "L4": "L4",
    "L40": "L40",
    "L40S": "L40S",
    "T4": "T4",
    "T4G": "T4",
    "V100": "V100",
    "V10032GB": "V100-32GB",
    "P100": "P100",
    "P4": "P4",
    "P4000": "P4000",
    "M4000": "M4000",
    "M60": "M60",
    "K80": "K80",
    "GAUDI2": "Gaudi2",
    "GAUDI3": "Gaudi3",
    "MI300X": "MI300X",
    "MI325X": "MI325X",
    "RADEONMI25": "Radeon-MI25",
    "RADEONPROV520": "Radeon-Pro-V520",
    "A6000": "RTX-A6000",
    "RTXA6000": "RTX-A6000",
    "A5000": "RTX-A5000",
    "RTXA5000": "RTX-A5000",
    "RTXA4500": "RTX-A4500",
    "A4000": "RTX-A4000",
    "RTXA4000": "RTX-A4000",
    "RTXA2000": "RTX-A2000",
    "RTX6000": "RTX-6000",
    "RTX6000ADA": "RTX-6000-Ada",
    "RTX4000ADA": "RTX-4000-Ada",
    "RTXPRO6000": "RTX-PRO-6000",
    "RTXPRO600096GB": "RTX-PRO-6000",
    "RTXPRO6000S": "RTX-PRO-6000",
    "RTX3060": "RTX-3060",
    "RTX3070": "RTX-3070",
    "RTX3080": "RTX-3080",
    "RTX3090": "RTX-3090",
    "RTX4060": "RTX-4060",
    "RTX4070": "RTX-4070",
    "RTX4090": "RTX-4090",
    "RTX5090": "RTX-5090",
}

# RunPod's catalog names the PCIe cards without a suffix (its "H100" is "H100 PCIe").
_RUNPOD_NAMES = {"H100": "H100-PCIe", "A100-80GB": "A100-80GB-PCIe"}


def _squash(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", name.upper())


@functools.cache
def gpu_specs() -> dict[str, GpuSpec]:
    """Every known GPU model by canonical name, from data/gpus.csv (read once)."""
    text = resources.files("gpupool.catalog").joinpath("data/gpus.csv").read_text(encoding="utf-8")
    return {row["gpu"]: spec_from_row(row) for row in csv.DictReader(text.splitlines())}


def spec_from_row(row: Mapping[str, str]) -> GpuSpec:
    """One gpus.csv row as a GpuSpec; a malformed row raises ValueError naming the GPU."""
    name = row["gpu"]
    try:
        return GpuSpec(
            name=name,
            memory_gib=float(row["memory_gib"]),
            memory_bandwidth_gbs=_float_or_none(row["memory_bandwidth_gbs"]),
            bf16_tflops_dense=_float_or_none(row["bf16_tflops_dense"]),
            fp16_tflops_dense=_float_or_none(row["fp16_tflops_dense"]),
            fp8_tflops_dense=_float_or_none(row["fp8_tflops_dense"]),
            int8_tops_dense=_float_or_none(row["int8_tops_dense"]),
            interconnect=row["interconnect"],
            nvlink=_yes(row["nvlink"]),
            vllm_supported=_yes(row["vllm_supported"]),
            compute_capability=_capability(row["compute_capability"]),
            architecture=row["architecture"],
            memory_type=row["memory_type"],
            ecc_reserves_memory=_yes(row["ecc_reserves_memory"]),
            cuda_memory_gib=_float_or_none(row["cuda_memory_gib"]),
            cuda_memory_source=row["cuda_memory_source"],
        )
    except (KeyError, ValueError) as error:
        raise ValueError(f"gpus.csv row {name!r}: {error}") from None


def _float_or_none(text: str) -> float | None:
    return float(text) if text.strip() else None


def _yes(text: str) -> bool:
    if text not in ("yes", "no"):
        raise ValueError(f"expected yes or no, got {text!r}")
    return text == "yes"


def _capability(text: str) -> tuple[int, int] | None:
    """ "8.6" as (8, 6); empty for cards that are not NVIDIA's."""
    if not text.strip():
        return None
    major, minor = text.split(".")
    return int(major), int(minor)


def normalize_gpu_name(
    source_name: str, memory_gib: float | None = None, *, provider: str = "", instance_type: str = ""
) -> str:
    """The canonical name of a GPU as a cloud spells it.

    `memory_gib` (per GPU, as reported) separates cards that share a name; `instance_type` carries
    the PCIe/SXM hint some clouds put only there. Unknown names come back tidied but otherwise as
    given, so a new card still gets a stable name of its own.
    """
    if provider == "runpod" and source_name in _RUNPOD_NAMES:
        return _RUNPOD_NAMES[source_name]
    squashed = _squash(source_name)
    pcie = "PCIE" in _squash(instance_type)
    if squashed == "A100":
        if memory_gib is not None and memory_gib >= 60:
            return "A100-80GB-PCIe" if pcie else "A100-80GB"
        return "A100-40GB-PCIe" if pcie else "A100"
    name = _ALIASES.get(squashed)
    if name is None:
        return re.sub(r"[^A-Za-z0-9]+", "-", source_name.strip()).strip("-") or "unknown"
    if name == "H100":
        if memory_gib is not None and memory_gib > 85:
            return "H100-NVL"
        if pcie:
            return "H100-PCIe"
    if name == "A100-80GB" and pcie:
        return "A100-80GB-PCIe"
    # One name per memory size: a card sold with a non-standard memory gets the size in its name.
    if name in ("RTX-4090", "RTX-3060") and memory_gib is not None:
        standard = gpu_specs()[name].memory_gib if name in gpu_specs() else None
        if standard is not None and abs(memory_gib - standard) / standard > 0.15:
            return f"{name}-{round(memory_gib)}GB"
    return name


def spec_for(gpu: str) -> GpuSpec | None:
    """The spec sheet of a canonical GPU name, or None for a card no source describes."""
    return gpu_specs().get(gpu)
