"""Which offers have a fast inter-node network, from the provider and the instance type.

A replica split across nodes sends every layer's activations between them, which ordinary cloud
Ethernet cannot carry at decode speed; only an RDMA fabric can (InfiniBand, AWS's EFA, RoCE). No
price list says which instance types have one, so it is read off the instance type by a small
table, and only where the provider's own documentation says so (data/README.md lists each entry
and why). Anything else is "" (ordinary Ethernet): a wrong "" costs a multi-node option, a wrong
"infiniband" would buy nodes that cannot serve.
"""

from __future__ import annotations

import re

INFINIBAND = "infiniband"
EFA = "efa"
RDMA = "rdma"  # RoCE (RDMA over Converged Ethernet), e.g. OCI cluster networking
ETHERNET = ""
NETWORK_FABRICS = (INFINIBAND, EFA, RDMA, ETHERNET)

# AWS: the full-node sizes of the families whose instances attach EFA (with GPUDirect RDMA from p4d
# on). Smaller sizes of the same families (p5.4xlarge) are left out until their EFA is confirmed.
_AWS_EFA_FAMILIES = frozenset({"p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200", "p6-b300"})
_AWS_FULL_NODE_SIZES = frozenset({"24xlarge", "48xlarge"})

# Azure: Standard_<family><vCPUs><features>[_<accelerator>]_<version>; feature letter "r" means
# RDMA-capable, which on the N series is InfiniBand (Standard_ND96isr_H100_v5, Standard_NC24rs_v3).
_AZURE_SIZE = re.compile(r"^Standard_N[A-Z]+\d+(?P<features>[a-z]*)(?:_|$)")


def network_fabric(provider: str, instance_type: str) -> str:
    """The inter-node fabric an instance of this type can join: infiniband, efa, rdma, or ""."""
    if provider == "aws":
        family, _, size = instance_type.partition(".")
        return EFA if family in _AWS_EFA_FAMILIES and size in _AWS_FULL_NODE_SIZES else ETHERNET
    if provider == "azure":
        match = _AZURE_SIZE.match(instance_type)
        return INFINIBAND if match is not None and "r" in match["features"] else ETHERNET
    if provider == "oci":
        # OCI's cluster networks (RoCE v2) are built from its bare-metal GPU shapes (BM.GPU.H100.8).
        return RDMA if instance_type.startswith("BM.GPU") else ETHERNET
    if provider == "nebius":
        # Nebius puts its 8-GPU presets in GPU clusters joined by InfiniBand; smaller presets are not.
        return INFINIBAND if "8gpu" in instance_type else ETHERNET
    # Lambda's on-demand instances (its InfiniBand is in 1-Click Clusters, not in this catalog), GCP
    # (the rows carry no machine type), and every other cloud: no documented RDMA fabric.
    return ETHERNET
