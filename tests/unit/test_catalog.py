"""The offer catalog: the shipped snapshot loads whole, names are normalized, caveats are handled visibly."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from gpupool.catalog import (
    GCP_GPU_ONLY,
    PLACEHOLDER_PRICE,
    Offer,
    Unavailable,
    apply_discounts,
    gpu_specs,
    load_offers_csv,
    load_shipped_offers,
    network_fabric,
    normalize_gpu_name,
    parse_offers_csv,
    placeable,
    spec_for,
)
from gpupool.catalog.gpus import derived_cuda_memory_gib, spec_from_row

HEADER = "provider,region,zone,instance_type,gpu,gpu_count,gpu_memory_gib,vcpus,memory_gib,price_hour,spot_price_hour\n"


@pytest.fixture(scope="module")
def offers() -> list[Offer]:
    return load_shipped_offers()


def test_every_source_row_becomes_one_offer_with_a_unique_key(offers: list[Offer]) -> None:
    assert len(offers) == 2723
    assert len({o.key for o in offers}) == len(offers)
    assert len(Counter(o.provider for o in offers)) == 16


def test_shipped_offers_are_cached_but_returned_as_fresh_lists(offers: list[Offer]) -> None:
    again = load_shipped_offers()
    assert again == offers
    assert again is not offers
    assert again[0] is offers[0]


def test_price_by_capacity_type() -> None:
    offer = Offer("x", "r", "", "t", "H100", 8, 80, 1, 1, on_demand_price=20.0, spot_price=None)
    assert offer.price("on-demand") == 20.0
    assert offer.price("spot") is None
    assert offer.price_per_gpu("on-demand") == 2.5
    assert offer.key == "x/r//t/H100/8"
    with pytest.raises(ValueError, match="capacity type"):
        offer.price("reserved")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("source", "memory", "provider", "instance_type", "expected"),
    [
        ("A100", 40, "aws", "p4d.24xlarge", "A100"),
        ("A100", 80, "cudo", "epyc-genoa-a100-pcie_1x12v24gb", "A100-80GB-PCIe"),
        ("A100", 80, "seeweb", "ECS1GPU3", "A100-80GB"),
        ("A100-80GB-SXM", None, "runpod", "1x_A100-80GB-SXM_SECURE", "A100-80GB"),
        ("A100-80GB", None, "runpod", "1x_A100-80GB_SECURE", "A100-80GB-PCIe"),
        ("H100", None, "runpod", "1x_H100_SECURE", "H100-PCIe"),
        ("H100-SXM", None, "runpod", "1x_H100-SXM_SECURE", "H100"),
        ("H100", 80, "lambda", "gpu_1x_h100_pcie", "H100-PCIe"),
        ("H100", 80, "lambda", "gpu_1x_h100_sxm5", "H100"),
        ("H100-MEGA", 80, "gcp", "", "H100"),
        ("H100-80G-PCIe-NVLink", 80, "hyperstack", "n3-H100x8-NVLink", "H100-PCIe"),
        ("H100", 93.58, "vast", "1x-H100_NVL-32-65536", "H100-NVL"),
        ("A6000", 48, "lambda", "gpu_1x_a6000", "RTX-A6000"),
        ("RTXA6000", None, "runpod", "x", "RTX-A6000"),
        ("RTX6000Ada", 48, "shadeform", "x", "RTX-6000-Ada"),
        ("RTX6000", 24, "lambda", "gpu_1x_rtx6000", "RTX-6000"),
        ("RTX4090", 47.99, "vast", "x", "RTX-4090-48GB"),
        ("RTX4090", 23.99, "vast", "x", "RTX-4090"),
        ("GAUDI2", 96, "shadeform", "x", "Gaudi2"),
        ("RTX PRO 6000 96GB", None, "seeweb", "x", "RTX-PRO-6000"),
        ("Brand New GPU", None, "x", "x", "Brand-New-GPU"),
    ],
)
def test_gpu_names_are_normalized_by_name_memory_and_instance_hint(
    source: str, memory: float | None, provider: str, instance_type: str, expected: str
) -> None:
    assert normalize_gpu_name(source, memory, provider=provider, instance_type=instance_type) == expected


def test_one_name_per_gpu_model_and_memory_size(offers: list[Offer]) -> None:
    # Every normalized name keeps its memory within 15 % of one size (usable vs marketed memory).
    sizes: dict[str, list[float]] = {}
    for offer in offers:
        sizes.setdefault(offer.gpu, []).append(offer.gpu_memory_gib)
    for name, values in sizes.items():
        assert max(values) <= min(values) * 1.15, (name, sorted(set(values)))
    assert {"A100", "A100-80GB", "H100", "H100-PCIe", "L40S", "RTX-A6000"} <= set(sizes)


def test_gcp_rows_are_kept_but_marked_gpu_only_and_not_placeable(offers: list[Offer]) -> None:
    gcp = [o for o in offers if o.provider == "gcp"]
    assert len(gcp) == 690
    assert all(o.exclusion == GCP_GPU_ONLY for o in gcp)
    assert all(o.instance_type.startswith("accelerator:") for o in gcp)
    assert not any(o.provider == "gcp" for o in placeable(offers))
    # A3 High and A3 Mega in the same zone stay two offers.
    zone = [o for o in gcp if o.zone == "us-central1-a" and o.gpu == "H100" and o.gpu_count == 8]
    assert {o.source_gpu for o in zone} == {"H100", "H100-MEGA"}


def test_mithril_placeholder_prices_are_excluded(offers: list[Offer]) -> None:
    mithril = [o for o in offers if o.provider == "mithril"]
    assert mithril
    assert all(o.exclusion == PLACEHOLDER_PRICE for o in mithril)


def test_azure_nd96isr_h100_is_fixed_to_8_gpus_with_a_note(offers: list[Offer]) -> None:
    nd = [o for o in offers if o.instance_type == "Standard_ND96isr_H100_v5"]
    assert nd
    assert all(o.gpu_count == 8 for o in nd)
    assert all(any("12" in note for note in o.notes) for o in nd)


def test_runpod_host_ram_is_unknown_and_gpu_memory_comes_from_the_spec_sheet(offers: list[Offer]) -> None:
    runpod = [o for o in offers if o.provider == "runpod"]
    assert all(o.memory_gib is None for o in runpod)
    h100 = next(o for o in runpod if o.instance_type == "1x_H100-SXM_SECURE")
    assert h100.gpu_memory_gib == 80
    assert any("spec sheet" in note for note in h100.notes)


def test_vast_placeholder_host_figures_are_dropped(offers: list[Offer]) -> None:
    vast = [o for o in offers if o.provider == "vast"]
    assert vast
    assert all(o.vcpus is None and o.memory_gib is None for o in vast)


def test_aws_usable_memory_is_kept_as_reported(offers: list[Offer]) -> None:
    a10g = next(o for o in offers if o.instance_type == "g5.xlarge")
    assert a10g.gpu == "A10G"
    assert a10g.gpu_memory_gib == pytest.approx(22.35)


def test_arm_hosts_are_marked(offers: list[Offer]) -> None:
    assert next(o for o in offers if o.instance_type.startswith("g5g.")).cpu_arch == "arm64"
    assert next(o for o in offers if o.gpu == "GH200").cpu_arch == "arm64"
    assert next(o for o in offers if o.instance_type == "p5.48xlarge").cpu_arch == "x86_64"


def test_gpu_specs_cover_every_gpu_in_the_catalog(offers: list[Offer]) -> None:
    missing = {o.gpu for o in offers} - set(gpu_specs())
    assert not missing
    h100 = spec_for("H100")
    assert h100 is not None and h100.memory_bandwidth_gbs == 3350 and h100.nvlink
    k80 = spec_for("K80")
    assert k80 is not None and not k80.vllm_supported


def test_every_runnable_gpu_in_the_catalog_has_a_full_spec_row(offers: list[Offer]) -> None:
    # Empty tensor figures mean "no tensor cores for that format", so they follow the compute capability.
    for name in sorted({o.gpu for o in offers}):
        spec = spec_for(name)
        assert spec is not None, name
        assert (
            spec.memory_gib > 0 and spec.memory_bandwidth_gbs and spec.architecture and spec.interconnect
        ), name
        assert spec.cuda_memory_gib and spec.cuda_memory_source, name
        if not spec.vllm_supported:
            continue
        cc = spec.compute_capability
        assert cc is not None and cc >= (7, 0), name
        assert spec.fp16_tflops_dense, name
        assert (spec.bf16_tflops_dense is not None) == (cc >= (8, 0)), name
        assert (spec.fp8_tflops_dense is not None) == (cc >= (8, 9)), name
        assert (spec.int8_tops_dense is not None) == (cc >= (7, 5)), name


def test_cards_vllms_cuda_image_cannot_drive_still_have_figures_and_stay_refused() -> None:
    for name in (
        "K80",
        "M60",
        "M4000",
        "P4",
        "P4000",
        "P100",
        "Radeon-MI25",
        "Radeon-Pro-V520",
        "MI300X",
        "Gaudi2",
    ):
        spec = spec_for(name)
        assert spec is not None and not spec.vllm_supported, name
        assert spec.memory_bandwidth_gbs and spec.cuda_memory_gib, name
        assert spec.compute_capability is None or spec.compute_capability < (7, 0), name


@pytest.mark.parametrize(
    ("gpu", "capability", "architecture"),
    [
        ("V100", (7, 0), "Volta"),
        ("T4", (7, 5), "Turing"),
        ("A100", (8, 0), "Ampere"),
        ("A10G", (8, 6), "Ampere"),
        ("L4", (8, 9), "Ada"),
        ("H100", (9, 0), "Hopper"),
        ("B200", (10, 0), "Blackwell"),
        ("RTX-5090", (12, 0), "Blackwell"),
        ("MI300X", None, "CDNA 3"),
    ],
)
def test_each_gpu_knows_its_compute_capability(
    gpu: str, capability: tuple[int, int] | None, architecture: str
) -> None:
    spec = spec_for(gpu)
    assert spec is not None
    assert spec.compute_capability == capability
    assert spec.architecture == architecture


def test_cuda_memory_is_logged_where_a_log_exists_and_derived_by_one_rule_elsewhere() -> None:
    specs = gpu_specs()
    # Figures read from public vLLM/PyTorch logs (data/README.md names each one).
    assert specs["H100"].cuda_memory_gib == 79.11 and not specs["H100"].cuda_memory_derived
    assert specs["L4"].cuda_memory_gib == 22.05 and not specs["L4"].cuda_memory_derived
    assert specs["H200"].cuda_memory_derived
    measured = 0
    for spec in specs.values():
        assert spec.cuda_memory_gib is not None
        rule = derived_cuda_memory_gib(spec.memory_gib, ecc_reserves_memory=spec.ecc_reserves_memory)
        if spec.cuda_memory_derived:
            assert spec.cuda_memory_gib == rule, spec.name
            continue
        # The rule must never promise more than a real card showed, and stay close to it.
        measured += 1
        assert rule <= spec.cuda_memory_gib <= spec.memory_gib, spec.name
        assert spec.cuda_memory_gib - rule < 0.03 * spec.memory_gib, spec.name
    assert measured >= 20


def test_existing_spec_attributes_keep_their_meaning() -> None:
    t4, a100, h100 = spec_for("T4"), spec_for("A100"), spec_for("H100")
    assert t4 is not None and a100 is not None and h100 is not None
    # T4 serves in float16: its 16-bit figure is the fp16 one, and it has no bf16 or fp8 tensor cores.
    assert t4.bf16_tflops == 65 and t4.bf16_tflops_dense is None and t4.fp8_tflops is None
    assert a100.bf16_tflops == 312 and a100.fp8_tflops is None
    assert h100.fp8_tflops == 1979 and h100.vllm_supported


def test_a_malformed_spec_row_names_its_gpu() -> None:
    row = dict.fromkeys(
        [
            "memory_bandwidth_gbs",
            "bf16_tflops_dense",
            "fp16_tflops_dense",
            "fp8_tflops_dense",
            "int8_tops_dense",
            "interconnect",
            "architecture",
            "memory_type",
            "cuda_memory_gib",
            "cuda_memory_source",
            "compute_capability",
        ],
        "",
    )
    row |= {
        "gpu": "X1",
        "memory_gib": "24",
        "nvlink": "maybe",
        "vllm_supported": "yes",
        "ecc_reserves_memory": "no",
    }
    with pytest.raises(ValueError, match=r"X1.*yes or no"):
        spec_from_row(row)


def test_load_offers_csv_reads_a_user_file(tmp_path: Path) -> None:
    path = tmp_path / "offers.csv"
    path.write_text(
        HEADER
        + "sim,us-east-1,,sim.h100x8,H100,8,80,96,1000,20,6\n"
        + "sim,us-east-1,,sim.h100x8,H100,8,80,96,1000,21,7\n"  # duplicate key: first kept
        + "sim,us-east-1,,sim.none,,1,,,,1,\n",  # no GPU: skipped
        encoding="utf-8",
    )
    offers = load_offers_csv(path)
    assert len(offers) == 1
    assert offers[0].on_demand_price == 20 and offers[0].spot_price == 6
    assert parse_offers_csv(path.read_text(encoding="utf-8")) == offers


def test_discounts_apply_per_provider_and_are_noted() -> None:
    offers = parse_offers_csv(HEADER + "a,r,,t,H100,1,80,8,64,10,4\nb,r,,t,H100,1,80,8,64,10,\n")
    discounted = apply_discounts(offers, {"a": 20})
    assert discounted[0].on_demand_price == pytest.approx(8.0)
    assert discounted[0].spot_price == pytest.approx(3.2)
    assert any("20 % negotiated discount" in n for n in discounted[0].notes)
    assert discounted[1] == offers[1]
    with pytest.raises(ValueError, match=r"0\.\.95"):
        apply_discounts(offers, {"a": 99})


@pytest.mark.parametrize(
    ("provider", "instance_type", "network"),
    [
        ("aws", "p5.48xlarge", "efa"),
        ("aws", "p4d.24xlarge", "efa"),
        ("aws", "p6-b300.48xlarge", "efa"),
        ("aws", "p5.4xlarge", ""),  # one GPU: its EFA is not confirmed, so not marked
        ("aws", "g6e.48xlarge", ""),
        ("azure", "Standard_ND96isr_H100_v5", "infiniband"),
        ("azure", "Standard_ND96amsr_A100_v4", "infiniband"),
        ("azure", "Standard_ND96isr_H200_v5", "infiniband"),
        ("azure", "Standard_NC24rs_v3", "infiniband"),
        ("azure", "Standard_NC24ads_A100_v4", ""),
        ("azure", "Standard_NC80adis_H100_v5", ""),
        ("oci", "BM.GPU.H100.8", "rdma"),
        ("oci", "VM.GPU.A10.1", ""),
        ("nebius", "gpu-h100-sxm_8gpu-128vcpu-1600gb", "infiniband"),
        ("nebius", "gpu-h100-sxm_1gpu-16vcpu-200gb", ""),
        ("lambda", "gpu_8x_h100_sxm5", ""),  # InfiniBand only in 1-Click Clusters
        ("gcp", "accelerator:H100", ""),
        ("runpod", "8x_H100-SXM_SECURE", ""),
    ],
)
def test_network_fabric_rule_table(provider: str, instance_type: str, network: str) -> None:
    assert network_fabric(provider, instance_type) == network


def test_shipped_offers_carry_their_network_fabric(offers: list[Offer]) -> None:
    by_type = {(o.provider, o.instance_type): o for o in offers}
    assert by_type[("aws", "p5.48xlarge")].network == "efa"
    assert by_type[("azure", "Standard_ND96isr_H100_v5")].fast_network
    assert by_type[("lambda", "gpu_8x_h100_sxm5")].network == ""
    marked = Counter(o.provider for o in offers if o.network)
    assert set(marked) == {"aws", "azure", "nebius"}
    # A discount rewrites prices, never the fabric; a user's CSV gets the same rule.
    discounted = apply_discounts([by_type[("aws", "p5.48xlarge")]], {"aws": 10})
    assert discounted[0].network == "efa"
    user = parse_offers_csv(HEADER + "azure,eastus,,Standard_ND96asr_v4,A100,8,40,96,900,27,\n")
    assert user[0].network == "infiniband"
    assert Offer("x", "r", "", "t", "H100", 8, 80, 1, 1, on_demand_price=1.0, spot_price=None).network == ""


def test_unavailable_marks_expire_and_are_per_capacity_type() -> None:
    marks = Unavailable().mark("k", "spot", until=100.0)
    assert marks.is_unavailable("k", "spot", now=50.0)
    assert not marks.is_unavailable("k", "on-demand", now=50.0)
    assert not marks.is_unavailable("k", "spot", now=100.0)
    # A later mark extends, an earlier one does not shorten.
    assert marks.mark("k", "spot", 200.0).is_unavailable("k", "spot", 150.0)
    assert marks.mark("k", "spot", 10.0).is_unavailable("k", "spot", 50.0)
    assert marks.expired_removed(150.0).until == {}
