"""simcloud's price list: real catalog offers, relabelled as simcloud regions.

A simulated cloud with made-up prices would make every cost figure in the demo meaningless. So
simcloud sells the offers of the catalog shipped with gpupool (a public snapshot of real prices),
taken from a chosen set of source clouds. Each offer keeps its instance type, GPU, sizes and prices,
and its region becomes `<source cloud>-<source region>` (e.g. `lambda-us-east-1`, `runpod-CA`):
names stay unique across sources (AWS and Lambda both have `us-east-1`) and say where the price came
from. Offers the catalog excludes from placement (GCP's GPU-only prices, placeholders) are left out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable

from gpupool.catalog import Offer, load_shipped_offers

PROVIDER = "simcloud"
DEFAULT_SOURCES = ("lambda", "runpod", "aws")


def simcloud_region(source: Offer) -> str:
    return f"{source.provider}-{source.region}" if source.region else source.provider


def simcloud_offers(
    catalog: Iterable[Offer],
    *,
    sources: Collection[str] = DEFAULT_SOURCES,
    regions: Collection[str] = (),
) -> list[Offer]:
    """The offers simcloud sells: catalog offers of `sources`, relabelled; only `regions` (simcloud
    names) if given. Offers without an instance type or with an exclusion are dropped."""
    offers: list[Offer] = []
    seen: set[tuple[str, str, str]] = set()
    for source in catalog:
        if source.provider not in sources or source.exclusion is not None or not source.instance_type:
            continue
        region = simcloud_region(source)
        if regions and region not in regions:
            continue
        ident = (region, source.zone, source.instance_type)
        if ident in seen:
            continue
        seen.add(ident)
        offers.append(
            dataclasses.replace(
                source,
                provider=PROVIDER,
                region=region,
                notes=(*source.notes, f"price from {source.provider} {source.region or '(no region)'}"),
            )
        )
    return offers


def shipped_simcloud_offers(
    sources: Collection[str] = DEFAULT_SOURCES, regions: Collection[str] = ()
) -> list[Offer]:
    return simcloud_offers(load_shipped_offers(), sources=sources, regions=regions)


def offer_names(offer: Offer) -> frozenset[str]:
    """Every name a fault scope may use for this offer: its key with or without the provider
    prefix, its instance type, region, `region/instance_type`, and GPU."""
    bare_key = offer.key.split("/", 1)[1]
    return frozenset(
        {
            offer.key,
            bare_key,
            offer.instance_type,
            offer.region,
            f"{offer.region}/{offer.instance_type}",
            offer.gpu,
        }
    )
