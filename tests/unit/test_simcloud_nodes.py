"""The machine ids simcloud's Nodes report survive KWOK, which plays their kubelet.

KWOK's node-initialize stage renders `nodeInfo.machineID` and `nodeInfo.systemUUID` into
YAML unquoted (`machineID: {{ or $nodeInfo.machineID `""` }}`) and decodes it with go-yaml,
so a value go-yaml reads as a number fails the stage: the Node never gets its conditions and
never turns Ready, and its claim stays Registered (issue 10's crash experiment found one).
simcloud used the 12-hex instance id there, which is such a number about once in 220.
"""

from __future__ import annotations

import math
import random
import re

from simcloud.nodes import machine_ids, render_node
from simcloud.store import SimInstance

# go-yaml v2 resolves a plain scalar that starts with a digit, a sign or a dot as an int
# (strconv.ParseInt with base 0) or, matching this and in range, as a float.
_GO_YAML_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
# Instance ids that were numbers to KWOK: digits, digits with an exponent, a binary literal.
NUMBER_LIKE_IDS = ("524397420553", "123456789e12", "0b1011001110")


def reads_as_number(text: str) -> bool:
    """Whether go-yaml v2 decodes `text`, written unquoted, as a number rather than a string."""
    if not text or text[0] not in "0123456789+-.":
        return False
    plain = text.replace("_", "")
    try:
        int(plain, 0)
        return True
    except ValueError:
        return bool(_GO_YAML_FLOAT.match(plain)) and math.isfinite(float(plain))


def _instance(instance_id: str) -> SimInstance:
    return SimInstance(
        id=instance_id, name=f"simcloud-{instance_id}", offer_key="k", region="aws-eu-south-2",
        zone="eus2-az3", instance_type="g6.xlarge", gpu="L4", gpu_count=1, gpu_memory_gib=24,
        vcpus=4, memory_gib=16, cpu_arch="x86_64", capacity_type="spot", price_per_hour=0.09,
        state="running", launched_at=0, boot_at=0,
    )  # fmt: skip


def test_the_ids_that_broke_kwok_read_as_numbers() -> None:
    assert all(reads_as_number(i) for i in NUMBER_LIKE_IDS)
    # Strings to KWOK (each checked against KWOK v0.8.0 on the test cluster, as the above were):
    # letters, and an exponent past a float's range.
    assert not reads_as_number("0d3282318ca7") and not reads_as_number("12e456789012")


def test_a_number_like_instance_id_gives_a_node_with_string_machine_ids() -> None:
    for instance_id in NUMBER_LIKE_IDS:
        info = render_node(_instance(instance_id))["status"]["nodeInfo"]
        assert not reads_as_number(info["machineID"]), info
        assert not reads_as_number(info["systemUUID"]), info
        # Shaped as a real machine's: a 32-hex machine-id and a dashed SMBIOS UUID.
        assert re.fullmatch(r"[0-9a-f]{32}", info["machineID"]), info
        assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", info["systemUUID"]), info


def test_machine_ids_are_stable_per_instance_and_never_numbers() -> None:
    # A restarted simcloud re-renders the Nodes of its running instances: same ids each time.
    assert machine_ids("abc123") == machine_ids("abc123")
    assert machine_ids("abc123") != machine_ids("abc124")
    rng = random.Random(10)
    for _ in range(5000):
        instance_id = f"{rng.getrandbits(48):012x}"
        assert not any(reads_as_number(value) for value in machine_ids(instance_id)), instance_id
