"""GPU models: one canonical name per model and memory size, and the spec sheet behind it.

Clouds name the same card a dozen ways (`A6000`, `RTXA6000`, `RTX-A6000`), and the same name can mean
two cards (`A100` is 40 GB at AWS and 80 GB at Cudo). A pool that says `gpuTypes: [A100-80GB]` must
match every cloud's spelling, so names are normalized once, at load time, from the source name, the
per-GPU memory the cloud reports and hints in the instance type (`..._pcie`). The canonical names are
those of `gpus.csv` where it has the card; the others follow the same `VENDOR-MODEL[-VARIANT]` style.
"""

from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """Spec-sheet figures of one GPU model; None where the public sources had no figure."""

    name: str
    memory_gib: float
    memory_bandwidth_gbs: float | None = None
    bf16_tflops: float | None = None
    fp8_tflops: float | None = None
    interconnect: str = ""
    # vLLM's CUDA kernels need compute capability 7.0 or newer; AMD/Intel cards need their own builds.
    vllm_supported: bool = True

    @property
    def nvlink(self) -> bool:
        return "NVLink" in self.interconnect or "XGMI" in self.interconnect


# Cards missing from gpus.csv: memory is the vendor's marketed size (GB), no other figures.
_EXTRA_SPECS: dict[str, float] = {
    "H100-NVL": 94,
    "A100-40GB-PCIe": 40,
    "L40": 48,
    "A30": 24,
    "A16": 16,
    "A800": 80,
    "RTX-6000": 24,
    "RTX-PRO-6000": 96,
    "RTX-A2000": 6,
    "RTX-A4000": 16,
    "RTX-A4500": 20,
    "RTX-A5000": 24,
    "RTX-4000-Ada": 20,
    "RTX-3060": 12,
    "RTX-3060-8GB": 8,
    "RTX-3070": 8,
    "RTX-3080": 10,
    "RTX-3090": 24,
    "RTX-4060": 16,
    "RTX-4070": 16,
    "RTX-4090-48GB": 48,
    "RTX-5090": 32,
    "T4": 16,
    "P100": 16,
    "P4": 8,
    "P4000": 8,
    "M4000": 8,
    "M60": 8,
    "K80": 12,
    "Radeon-MI25": 16,
    "Radeon-Pro-V520": 8,
}

# Older than compute capability 7.0, or not NVIDIA: the default vllm/vllm-openai image is a CUDA build
# (AMD and Intel Gaudi need other images, which pools do not select yet).
_VLLM_UNSUPPORTED = frozenset(
    {"P100", "P4", "P4000", "M4000", "M60", "K80", "Radeon-MI25", "Radeon-Pro-V520"}
    | {"Gaudi2", "Gaudi3", "MI300X", "MI325X"}
)

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
    """Every known GPU model by canonical name: gpus.csv plus memory-only entries for the rest."""
    specs: dict[str, GpuSpec] = {}
    text = resources.files("gpupool.catalog").joinpath("data/gpus.csv").read_text(encoding="utf-8")
    for row in csv.DictReader(text.splitlines()):
        specs[row["gpu"]] = GpuSpec(
            name=row["gpu"],
            memory_gib=float(row["memory_gib"]),
            memory_bandwidth_gbs=_float_or_none(row["memory_bandwidth_gbs"]),
            bf16_tflops=_float_or_none(row["bf16_tflops_dense"]),
            fp8_tflops=_float_or_none(row["fp8_tflops_dense"]),
            interconnect=row["interconnect"],
        )
    for name, memory in _EXTRA_SPECS.items():
        specs.setdefault(name, GpuSpec(name=name, memory_gib=memory))
    for name in _VLLM_UNSUPPORTED:
        spec = specs[name]
        specs[name] = GpuSpec(
            name=spec.name,
            memory_gib=spec.memory_gib,
            memory_bandwidth_gbs=spec.memory_bandwidth_gbs,
            bf16_tflops=spec.bf16_tflops,
            fp8_tflops=spec.fp8_tflops,
            interconnect=spec.interconnect,
            vllm_supported=False,
        )
    return specs


def _float_or_none(text: str) -> float | None:
    return float(text) if text.strip() else None


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
