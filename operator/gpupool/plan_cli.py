"""`gpupool plan` and `gpupool offers`: the planner and the catalog, from a terminal, without a cluster.

`plan` answers "where would this model run, at what price, and why not elsewhere?" from a
ModelDeployment YAML or from flags, and prints the decision with its memory arithmetic and a ranked
table of alternatives (the way SkyPilot shows its optimizer's choice), or JSON in the schema that
docs/planner.md documents. `offers` lists the cheapest offers for a GPU. Both are thin: parse,
call the pure planner, format. Exit codes: 0 a plan was found, 1 nothing fits (with the closest
options and why they fail), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

import yaml
from pydantic import ValidationError

from gpupool.api import GpuPoolSpec, ModelDeploymentSpec, Quantization, WireModel
from gpupool.api.deployment import DEFAULT_POOL
from gpupool.catalog import (
    CAPACITY_TYPES,
    CapacityType,
    Offer,
    load_offers_csv,
    load_shipped_offers,
)
from gpupool.planner import (
    Candidate,
    MemoryEstimate,
    Plan,
    UnknownModel,
    architecture_from_hf_config,
    plan_deployment,
    pool_constraints_from_spec,
    request_from_spec,
)

M = TypeVar("M", bound=WireModel)

EXIT_OK = 0
EXIT_NO_PLAN = 1
EXIT_BAD_INPUT = 2


class InputError(Exception):
    """A file or flag the user gave cannot be used; the message says which and why."""


def _load_yaml_spec(path: str, kind: str) -> tuple[dict[str, Any], str]:
    """The spec of the first object of `kind` in a YAML file (or the file itself if it is a bare spec)."""
    try:
        documents = [d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d]
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"cannot read {path}: {error}") from None
    for document in documents:
        if not isinstance(document, Mapping):
            continue
        if document.get("kind") == kind:
            name = str((document.get("metadata") or {}).get("name") or DEFAULT_POOL)
            return dict(document.get("spec") or {}), name
        if "kind" not in document and "spec" not in document:
            return dict(document), DEFAULT_POOL
    raise InputError(f"{path} has no {kind}")


def _validated(model: type[M], spec: Mapping[str, Any]) -> M:
    """The spec as the API model, or an InputError naming each field the API server would refuse."""
    try:
        return model.from_k8s(spec)
    except ValidationError as error:
        problems = "; ".join(
            f"spec.{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
            for e in error.errors(include_url=False)
        )
        raise InputError(problems) from None


def _offers(path: str | None) -> list[Offer]:
    if path is None:
        return load_shipped_offers()
    try:
        return load_offers_csv(path)
    except (OSError, KeyError, ValueError) as error:
        raise InputError(f"cannot read offers from {path}: {error}") from None


def _spec_from_flags(args: argparse.Namespace, base: Mapping[str, Any]) -> dict[str, Any]:
    """The ModelDeployment spec: the YAML's, with any flag given on the command line on top."""
    spec = dict(base)
    engine = dict(spec.get("engine") or {})
    gpu = dict(spec.get("gpu") or {})
    if args.model:
        spec["model"] = args.model
    if args.replicas is not None:
        spec["replicas"] = args.replicas
    if args.objective:
        spec["objective"] = args.objective
    if args.max_hourly_cost is not None:
        spec["maxHourlyCost"] = args.max_hourly_cost
    if args.capacity_type:
        spec["capacityType"] = args.capacity_type
    if args.max_model_len is not None:
        engine["maxModelLen"] = args.max_model_len
    if args.dtype:
        engine["dtype"] = args.dtype
    if args.quantization:
        engine["quantization"] = args.quantization
    if args.max_num_seqs is not None:
        engine["maxNumSeqs"] = args.max_num_seqs
    if args.gpu_memory_utilization is not None:
        engine["gpuMemoryUtilization"] = args.gpu_memory_utilization
    if args.tensor_parallel_size is not None:
        engine["tensorParallelSize"] = args.tensor_parallel_size
    if args.gpu:
        gpu["types"] = list(args.gpu)
    if args.gpus_per_replica is not None:
        gpu["count"] = args.gpus_per_replica
    serving = dict(spec.get("serving") or {})
    for flag, key in (
        ("target_concurrency", "targetConcurrency"),
        ("avg_input_tokens", "averageInputTokens"),
        ("avg_output_tokens", "averageOutputTokens"),
    ):
        if getattr(args, flag) is not None:
            serving[key] = getattr(args, flag)
    if serving:
        spec["serving"] = serving
    spec["engine"], spec["gpu"] = engine, gpu
    return spec


def build_plan(args: argparse.Namespace) -> Plan:
    """Everything `gpupool plan` decides, from parsed arguments; raises InputError on bad input."""
    spec: dict[str, Any] = {}
    if args.file:
        spec, _ = _load_yaml_spec(args.file, "ModelDeployment")
    spec = _spec_from_flags(args, spec)
    if not spec.get("model"):
        raise InputError("give a model: -f modeldeployment.yaml or --model HF_ID")
    architecture = None
    if args.config:
        try:
            config = json.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise InputError(f"cannot read {args.config}: {error}") from None
        architecture = architecture_from_hf_config(str(spec["model"]), config)
    try:
        request = request_from_spec(_validated(ModelDeploymentSpec, spec), architecture=architecture)
    except UnknownModel as error:
        raise InputError(str(error)) from None
    if args.max_gpus is not None:
        from dataclasses import replace

        request = replace(request, max_gpus_per_replica=args.max_gpus)

    pool_spec, pool_name = _load_yaml_spec(args.pool, "GpuPool") if args.pool else ({}, DEFAULT_POOL)
    pool = pool_constraints_from_spec(_validated(GpuPoolSpec, pool_spec), name=pool_name)
    from dataclasses import replace as _replace

    if args.provider:
        pool = _replace(pool, providers=tuple(args.provider))
    if args.region:
        pool = _replace(pool, regions=tuple(args.region))
    if args.capacity_type and args.capacity_type not in pool.capacity_types:
        if args.pool:
            pass  # the pool's own rule stands; the plan will say the capacity type is not allowed
        else:
            pool = _replace(pool, capacity_types=(args.capacity_type,))
    if args.include_gpu_only_prices:
        pool = _replace(pool, include_excluded=True)
    return plan_deployment(request, _offers(args.offers), pool)


def _money(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"${value:,.{digits}f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return lines


def _candidate_row(mark: str, candidate: Candidate) -> list[str]:
    offer = candidate.offer
    memory = candidate.memory
    need = f"{memory.required_gib:.0f}/{memory.available_gib:.0f}" if memory else "-"
    tps = f"{candidate.throughput.tokens_per_second:,.0f}" if candidate.throughput else "-"
    return [
        mark,
        candidate.provider,
        offer.instance_type if offer else "-",
        (offer.region or "-") if offer else "-",
        candidate.shape.gpu,
        str(offer.gpu_count) if offer else "-",
        str(candidate.shape.tensor_parallel_size)
        + (
            f"x{candidate.shape.pipeline_parallel_size}" if candidate.shape.pipeline_parallel_size > 1 else ""
        ),
        candidate.capacity_type or "-",
        _money(candidate.cost_per_hour if candidate.cost_per_hour is not None else candidate.price_per_hour),
        tps,
        _money(candidate.cost_per_million_tokens),
        need,
        candidate.reason or "",
    ]


def _memory_lines(memory: MemoryEstimate) -> list[str]:
    """vLLM's arithmetic for the busiest GPU of the shape, as its start-up log reports it."""
    load, work = memory.load, memory.workload
    gib = 1 << 30
    return [
        f"Memory per GPU (tp {memory.tensor_parallel_size}, pp {memory.pipeline_parallel_size}): "
        f"{memory.gpu_memory_gib:g} GiB x {work.gpu_memory_utilization:g} = {memory.budget_gib:.1f} GiB "
        f"- weights {load.weights_bytes / gib:.1f} - activations {load.activation_bytes / gib:.1f}"
        + (f" - NCCL {load.non_torch_bytes / gib:.2f}" if load.non_torch_bytes else "")
        + f" = KV cache {memory.kv_budget_gib:.1f} GiB; {memory.headroom_gib:.1f} GiB left outside "
        f"the budget for the CUDA context and graphs",
        f"KV cache: {memory.kv_cache_tokens:,} tokens; maximum concurrency {memory.max_concurrency:.2f} "
        f"at {work.max_model_len:,} tokens, {memory.concurrency_at_average:.1f} at "
        f"{work.average_input_tokens:,} + {work.average_output_tokens:,} tokens "
        f"(target {work.target_concurrency}; max-num-seqs {work.max_num_seqs}, "
        f"max-num-batched-tokens {work.max_batched_tokens})",
    ]


def format_plan(plan: Plan, *, rows: int = 10) -> str:
    """The human-readable decision: summary, memory arithmetic, ranked alternatives, notes."""
    out: list[str] = []
    choice = plan.choice
    out.append(
        f"Model {plan.model}: {plan.replicas} replica(s), maxModelLen {plan.max_model_len}, objective {plan.objective}"
    )
    memory = plan.memory
    if memory is not None:
        out.extend(_memory_lines(memory))
    if choice is not None and choice.offer is not None:
        offer = choice.offer
        out.append(
            f"Chosen: {plan.replicas} x {choice.shape.gpus_per_replica} x {choice.shape.gpu} "
            f"(tensor parallel {choice.shape.tensor_parallel_size}"
            + (
                f" x pipeline parallel {choice.shape.pipeline_parallel_size}, one node each"
                if choice.shape.pipeline_parallel_size > 1
                else ""
            )
            + f") on {offer.provider} {offer.instance_type} "
            f"in {offer.region or '-'}{'/' + offer.zone if offer.zone else ''}, {choice.capacity_type}: "
            f"{choice.instances} instance(s) x {_money(choice.price_per_hour)}/h = {_money(choice.cost_per_hour)}/h"
            + (
                f", ~{choice.throughput.tokens_per_second * plan.replicas:,.0f} tok/s, "
                f"~{_money(choice.cost_per_million_tokens)}/1M tokens (estimate)"
                if choice.throughput
                else ""
            )
        )
    else:
        out.append(f"No placement ({plan.reason}): {plan.message}")
    shown = [c for c in plan.alternatives if c.feasible][:rows]
    refused = [c for c in plan.alternatives if not c.feasible][: max(3, rows // 2)]
    table_rows = [_candidate_row("*" if c is choice else " ", c) for c in shown]
    table_rows += [_candidate_row("x", c) for c in refused]
    if table_rows:
        out.append("")
        out.extend(
            _table(
                [
                    " ",
                    "PROVIDER",
                    "INSTANCE",
                    "REGION",
                    "GPU",
                    "GPUS",
                    "TP",
                    "CAPACITY",
                    "$/HR",
                    "TOK/S(est)",
                    "$/1M TOK(est)",
                    "NEED/HAVE GiB",
                    "WHY NOT",
                ],
                table_rows,
            )
        )
        feasible_total = sum(1 for c in plan.alternatives if c.feasible)
        refused_total = len(plan.alternatives) - feasible_total
        out.append(
            f"({len(shown)} of {feasible_total} feasible and {len(refused)} of {refused_total} refused options shown; "
            "* chosen, x refused)"
        )
    if plan.notes:
        out.append("")
        out.extend(f"note: {note}" for note in plan.notes)
    return "\n".join(out)


def _plan(args: argparse.Namespace) -> int:
    try:
        plan = build_plan(args)
    except InputError as error:
        print(f"gpupool plan: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    stream: TextIO = sys.stdout
    if args.output == "json":
        json.dump(plan.to_dict(max_alternatives=args.alternatives), stream, indent=2)
        stream.write("\n")
    else:
        print(format_plan(plan, rows=args.alternatives), file=stream)
    if not plan.feasible:
        if args.output == "json":
            print(f"gpupool plan: {plan.reason}: {plan.message}", file=sys.stderr)
        return EXIT_NO_PLAN
    return EXIT_OK


def add_plan_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register `gpupool plan` on the CLI's sub-parsers."""
    plan: argparse.ArgumentParser = subparsers.add_parser(
        "plan",
        help="size a model and choose the cheapest GPUs for it (no cluster needed)",
        description="Size a model and rank the offers that can serve it; exits 1 when nothing fits.",
    )
    plan.add_argument("-f", "--file", help="a ModelDeployment YAML (flags below override its fields)")
    plan.add_argument(
        "--pool", help="a GpuPool YAML whose providers, regions, capacity types and limits apply"
    )
    plan.add_argument(
        "--offers", help="an offers CSV (columns of the shipped gpu-offers.csv); default: shipped"
    )
    plan.add_argument("-o", "--output", choices=("table", "json"), default="table")
    plan.add_argument("--model", help="Hugging Face model id, e.g. meta-llama/Llama-3.1-70B-Instruct")
    plan.add_argument("--config", help="a Hugging Face config.json for a model the built-in table lacks")
    plan.add_argument("--max-model-len", type=int)
    plan.add_argument("--dtype", choices=("auto", "bfloat16", "float16"))
    plan.add_argument("--quantization", choices=[str(q) for q in Quantization])
    plan.add_argument("--max-num-seqs", type=int, help="vLLM's --max-num-seqs (default: vLLM's)")
    plan.add_argument(
        "--target-concurrency", type=int, help="sequences one replica must hold at once (default 4)"
    )
    plan.add_argument("--avg-input-tokens", type=int, help="average prompt tokens (default 1024)")
    plan.add_argument("--avg-output-tokens", type=int, help="average completion tokens (default 256)")
    plan.add_argument("--gpu-memory-utilization", type=float)
    plan.add_argument("--tensor-parallel-size", type=int)
    plan.add_argument("--gpus-per-replica", type=int)
    plan.add_argument("--gpu", action="append", help="allowed GPU model (repeatable), e.g. H100")
    plan.add_argument("--provider", action="append", help="allowed provider (repeatable), e.g. lambda")
    plan.add_argument("--region", action="append", help="allowed region (repeatable)")
    plan.add_argument("--capacity-type", choices=CAPACITY_TYPES)
    plan.add_argument("--max-gpus", type=int, help="at most this many GPUs per replica")
    plan.add_argument("--replicas", type=int)
    plan.add_argument("--objective", choices=("costPerHour", "costPerToken"))
    plan.add_argument("--max-hourly-cost", type=float, help="budget for all replicas, USD/h")
    plan.add_argument(
        "--include-gpu-only-prices",
        action="store_true",
        help="also place on offers whose price is not a whole-instance price (GCP GPU-only rows, placeholders)",
    )
    plan.add_argument(
        "--alternatives", type=int, default=10, help="feasible alternatives to show (default 10)"
    )
    plan.set_defaults(func=_plan)
    return plan


def cheapest_offers(
    offers: Sequence[Offer],
    *,
    gpu: Sequence[str] = (),
    count: int | None = None,
    providers: Sequence[str] = (),
    regions: Sequence[str] = (),
    capacity_types: Sequence[CapacityType] = CAPACITY_TYPES,
    include_excluded: bool = False,
) -> tuple[list[tuple[float, CapacityType, Offer]], dict[str, int]]:
    """(price, capacity type, offer) cheapest first, and how many matching offers were left out and why."""
    wanted = {g.lower() for g in gpu}
    matched: list[tuple[float, CapacityType, Offer]] = []
    left_out: dict[str, int] = {}
    for offer in offers:
        if wanted and offer.gpu.lower() not in wanted and offer.source_gpu.lower() not in wanted:
            continue
        if count is not None and offer.gpu_count != count:
            continue
        if providers and offer.provider not in providers:
            continue
        if regions and offer.region not in regions:
            continue
        if offer.exclusion is not None and not include_excluded:
            why = f"{offer.provider}: {offer.exclusion}"
            left_out[why] = left_out.get(why, 0) + 1
            continue
        for capacity in capacity_types:
            price = offer.price(capacity)
            if price is not None:
                matched.append((price, capacity, offer))
    matched.sort(key=lambda item: (item[0], item[2].key, item[1]))
    return matched, left_out


def _offers_command(args: argparse.Namespace) -> int:
    try:
        offers = _offers(args.offers)
    except InputError as error:
        print(f"gpupool offers: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    capacity_types: tuple[CapacityType, ...] = (args.capacity_type,) if args.capacity_type else CAPACITY_TYPES
    matched, left_out = cheapest_offers(
        offers,
        gpu=args.gpu or (),
        count=args.count,
        providers=args.provider or (),
        regions=args.region or (),
        capacity_types=capacity_types,
        include_excluded=args.include_gpu_only_prices,
    )
    shown = matched[: args.limit]
    if args.output == "json":
        json.dump(
            {
                "offers": [
                    {
                        "key": o.key,
                        "provider": o.provider,
                        "region": o.region,
                        "zone": o.zone,
                        "instanceType": o.instance_type,
                        "gpu": o.gpu,
                        "gpuCount": o.gpu_count,
                        "gpuMemoryGiB": o.gpu_memory_gib,
                        "vcpus": o.vcpus,
                        "memoryGiB": o.memory_gib,
                        "network": o.network,
                        "capacityType": capacity,
                        "pricePerHour": price,
                        "pricePerGpuHour": round(price / o.gpu_count, 4),
                        "exclusion": o.exclusion,
                        "notes": list(o.notes),
                    }
                    for price, capacity, o in shown
                ],
                "matched": len(matched),
                "leftOut": left_out,
            },
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
    else:
        rows = [
            [
                o.provider,
                o.instance_type,
                o.region or "-",
                o.zone or "-",
                o.gpu,
                str(o.gpu_count),
                f"{o.gpu_memory_gib:g}",
                o.network or "-",
                capacity,
                _money(price, 3),
                _money(price / o.gpu_count, 3),
                "; ".join(filter(None, [o.exclusion or "", *o.notes])),
            ]
            for price, capacity, o in shown
        ]
        headers = [
            "PROVIDER",
            "INSTANCE",
            "REGION",
            "ZONE",
            "GPU",
            "GPUS",
            "GiB/GPU",
            "NET",
            "CAPACITY",
            "$/HR",
            "$/GPU-HR",
        ]
        print("\n".join(_table([*headers, "NOTES"], rows)))
        print(f"({len(shown)} of {len(matched)} matching offers shown, cheapest first)")
        for why, number in sorted(left_out.items()):
            print(f"note: {number} matching offers not shown ({why}); --include-gpu-only-prices lists them")
    if not matched:
        print("gpupool offers: no offer matches", file=sys.stderr)
        return EXIT_NO_PLAN
    return EXIT_OK


def add_offers_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register `gpupool offers` on the CLI's sub-parsers."""
    offers: argparse.ArgumentParser = subparsers.add_parser(
        "offers",
        help="list the cheapest GPU offers in the catalog",
        description="List the cheapest offers matching the filters, cheapest first.",
    )
    offers.add_argument(
        "--gpu", action="append", help="GPU model (normalized or as the cloud names it); repeatable"
    )
    offers.add_argument("--count", type=int, help="GPUs per instance")
    offers.add_argument("--provider", action="append")
    offers.add_argument("--region", action="append")
    offers.add_argument("--capacity-type", choices=CAPACITY_TYPES)
    offers.add_argument("--limit", type=int, default=20)
    offers.add_argument("--offers", help="an offers CSV; default: the shipped snapshot")
    offers.add_argument("--include-gpu-only-prices", action="store_true")
    offers.add_argument("-o", "--output", choices=("table", "json"), default="table")
    offers.set_defaults(func=_offers_command)
    return offers
