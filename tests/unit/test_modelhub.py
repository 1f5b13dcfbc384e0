"""gpupool.modelhub against a local Hub: the real huggingface_hub client, real files, real HTTP.

tests/hubserver.py serves the fixture repos of tests/fixtures/hub the way the Hub answers
(model info, files with Range requests, its refusals), and the resolver is pointed at it by
its endpoint. The cache's clock is a variable the tests move, so expiry is stepped, not waited
for; requests are counted on the server's side.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import socket
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from huggingface_hub import get_hf_file_metadata, hf_hub_url

from gpupool.modelhub import (
    HubModel,
    ModelHub,
    ModelUnresolved,
    default_hub,
    resolve_model,
    resolve_model_sync,
)
from gpupool.settings import OperatorSettings
from tests.hubserver import FIXTURES, READ_TOKEN, UNGRANTED_TOKEN, HubServer, run_hub_server

QWEN = "Qwen/Qwen2.5-0.5B-Instruct"
QWEN_3B = "Qwen/Qwen2.5-3B-Instruct"
LLAMA = "meta-llama/Llama-3.2-1B-Instruct"
GEMMA = "google/gemma-3-1b-it"
AWQ = "Qwen/Qwen2.5-0.5B-Instruct-AWQ"
GPTQ = "TheBloke/TinyLlama-1.1B-Chat-v1.0-GPTQ"
GGUF = "Qwen/Qwen2.5-0.5B-Instruct-GGUF"
# A token the fake Hub does not know, easy to find wherever it might leak.
BAD_TOKEN = "hf_CANARYtokenThatMustNeverBeShown0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def server() -> Iterator[HubServer]:
    with run_hub_server() as hub:
        yield hub


@pytest.fixture
def hub(server: HubServer) -> HubServer:
    server.reset()
    return server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def resolver(hub: HubServer, clock: Clock) -> ModelHub:
    return ModelHub(
        endpoint=hub.url,
        cache_seconds=3600,
        failure_cache_seconds=60,
        request_timeout_seconds=5,
        resolve_timeout_seconds=20,
        clock=clock,
    )


def fixture_script() -> ModuleType:
    """tests/fixtures/hub/make_headers.py, the script that writes the safetensors fixtures."""
    spec = importlib.util.spec_from_file_location("make_headers", FIXTURES / "make_headers.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- what a resolution returns ----------------------------------------------------------------

EXACT = [
    (QWEN, None, {"BF16": 494_032_768}, 988_065_536, 1),
    (QWEN_3B, None, {"BF16": 3_085_938_688}, 6_171_877_376, 2),
    (LLAMA, READ_TOKEN, {"BF16": 1_235_814_400}, 2_471_628_800, 1),
    (GEMMA, READ_TOKEN, {"BF16": 999_885_952}, 1_999_771_904, 1),
    (AWQ, None, {"F16": 139_001_728, "I32": 45_077_760}, 458_314_496, 1),
    (GPTQ, None, {"F16": 138_733_568, "I32": 122_450_944}, 767_270_912, 1),
]


@pytest.mark.parametrize(("model_id", "token", "by_dtype", "nbytes", "files"), EXACT)
async def test_exact_parameters_per_dtype(
    resolver: ModelHub,
    hub: HubServer,
    model_id: str,
    token: str | None,
    by_dtype: dict[str, int],
    nbytes: int,
    files: int,
) -> None:
    model = await resolver.resolve(model_id, token=token)
    assert model.model_id == model_id
    assert model.parameters_by_dtype == by_dtype
    assert model.parameters == sum(by_dtype.values())
    assert model.weight_bytes == nbytes
    assert len(model.safetensors_files) == files
    assert len(model.revision) == 40
    # Only headers were read: every weights request asked for a byte range, none for the file.
    weights = [r for r in hub.requests if r.path.endswith(".safetensors")]
    assert len(weights) == files
    assert all(r.range == "bytes=0-100000" and r.status == 206 for r in weights)


async def test_the_configs_come_back_as_published(resolver: ModelHub) -> None:
    qwen = await resolver.resolve(QWEN, token=None)
    assert qwen.config["tie_word_embeddings"] is True
    assert qwen.config["num_key_value_heads"] == 2
    assert qwen.extra_configs == {}
    gemma = await resolver.resolve(GEMMA, token=READ_TOKEN)
    assert gemma.gated
    assert (gemma.config["sliding_window"], gemma.config["sliding_window_pattern"]) == (512, 6)
    assert "rope_scaling" in gemma.config
    llama = await resolver.resolve(LLAMA, token=READ_TOKEN)
    assert llama.config["rope_scaling"]["rope_type"] == "llama3"
    awq = await resolver.resolve(AWQ, token=None)
    assert awq.config["quantization_config"]["quant_method"] == "awq"
    gptq = await resolver.resolve(GPTQ, token=None)
    assert gptq.extra_configs["quantize_config.json"]["bits"] == 4
    assert gptq.config["quantization_config"]["quant_method"] == "gptq"


async def test_a_sharded_model_is_the_sum_of_its_shards_as_the_index_names_them(
    resolver: ModelHub, hub: HubServer
) -> None:
    model = await resolver.resolve(QWEN_3B, token=None)
    assert model.safetensors_files == (
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    )
    # The index's total_size is the tensors' bytes: the headers agree with it exactly.
    assert model.weight_bytes == 6_171_877_376
    assert hub.count("/api/models/") == 1
    assert hub.count("model.safetensors.index.json") == 1


async def test_every_file_is_read_at_the_commit_the_model_info_resolved(
    resolver: ModelHub, hub: HubServer
) -> None:
    model = await resolver.resolve(QWEN_3B, token=None)
    files = [r.path for r in hub.requests if "/resolve/" in r.path]
    assert files and all(f"/resolve/{model.revision}/" in path for path in files)
    pinned = await resolver.resolve(QWEN_3B, token=None, revision=model.revision)
    assert pinned.parameters_by_dtype == model.parameters_by_dtype


def test_the_headers_are_the_real_files_size_to_the_byte(hub: HubServer) -> None:
    """The Hub publishes 988,097,824 bytes for this file: only the real header layout gives it."""
    meta = get_hf_file_metadata(hf_hub_url(QWEN, "model.safetensors", endpoint=hub.url), token=False)
    assert meta.size == 988_097_824
    assert meta.commit_hash and len(meta.commit_hash) == 40
    assert hub.requests[-1].method == "HEAD"


def test_the_committed_fixtures_are_what_the_script_writes() -> None:
    make_headers = fixture_script()
    for path, content in make_headers.render().items():
        assert path.read_bytes() == content, f"{path} is stale: run tests/fixtures/hub/make_headers.py"


# --- the cache ----------------------------------------------------------------------------------


async def test_a_second_call_asks_the_hub_nothing(resolver: ModelHub, hub: HubServer) -> None:
    first = await resolver.resolve(QWEN, token=None)
    asked = hub.count()
    again = await resolver.resolve(QWEN, token=None)
    assert again is first
    assert hub.count() == asked


async def test_a_success_is_asked_again_once_its_ttl_has_passed(
    resolver: ModelHub, hub: HubServer, clock: Clock
) -> None:
    await resolver.resolve(QWEN, token=None)
    clock.now += 3599
    await resolver.resolve(QWEN, token=None)
    assert hub.count("/api/models/") == 1
    clock.now += 2
    await resolver.resolve(QWEN, token=None)
    assert hub.count("/api/models/") == 2


async def test_a_failure_is_remembered_briefly_so_a_broken_spec_is_no_hot_loop(
    resolver: ModelHub, hub: HubServer, clock: Clock
) -> None:
    for _ in range(20):
        with pytest.raises(ModelUnresolved) as caught:
            await resolver.resolve("nobody/nothing", token=None)
        assert caught.value.reason == "NotFound"
    assert hub.count() == 1
    clock.now += 61
    with pytest.raises(ModelUnresolved):
        await resolver.resolve("nobody/nothing", token=None)
    assert hub.count() == 2


async def test_a_transient_failure_clears_once_its_short_ttl_has_passed(
    resolver: ModelHub, hub: HubServer, clock: Clock
) -> None:
    hub.fail_next(503)
    with pytest.raises(ModelUnresolved) as caught:
        await resolver.resolve(QWEN, token=None)
    assert caught.value.reason == "Unreachable"
    assert "503" in caught.value.message
    clock.now += 61
    model = await resolver.resolve(QWEN, token=None)
    assert model.parameters == 494_032_768


async def test_concurrent_calls_share_one_request(resolver: ModelHub, hub: HubServer) -> None:
    models = await asyncio.gather(*(resolver.resolve(QWEN_3B, token=None) for _ in range(10)))
    assert all(m is models[0] for m in models)
    assert hub.count("/api/models/") == 1
    assert hub.count("model-00001-of-00002") == 1


async def test_a_cancelled_caller_leaves_the_shared_request_running(
    resolver: ModelHub, hub: HubServer
) -> None:
    hub.stall(0.2)
    first = asyncio.create_task(resolver.resolve(QWEN, token=None))
    second = asyncio.create_task(resolver.resolve(QWEN, token=None))
    await asyncio.sleep(0)
    first.cancel()
    model = await second
    assert model.parameters == 494_032_768
    assert hub.count("/api/models/") == 1
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_each_token_is_its_own_entry(resolver: ModelHub, hub: HubServer) -> None:
    with pytest.raises(ModelUnresolved) as caught:
        await resolver.resolve(LLAMA, token=UNGRANTED_TOKEN)
    assert caught.value.reason == "Gated"
    model = await resolver.resolve(LLAMA, token=READ_TOKEN)
    assert model.parameters == 1_235_814_400
    assert hub.count("/api/models/") == 2


# --- why a model is unresolved --------------------------------------------------------------------

FAILURES = [
    ("nobody/nothing", None, "NotFound", ["nobody/nothing", "not found", "spec.model", "hfTokenSecretRef"]),
    ("nobody/nothing", READ_TOKEN, "NotFound", ["nobody/nothing", "not found", "cannot read it"]),
    (LLAMA, None, "Gated", [LLAMA, "is gated", "accept its license", "spec.hfTokenSecretRef"]),
    (LLAMA, UNGRANTED_TOKEN, "Gated", [LLAMA, "has no access", "accept its license", "owns the token"]),
    (QWEN, BAD_TOKEN, "Unauthorized", [QWEN, "refused the token", "401", "spec.hfTokenSecretRef"]),
    (GGUF, None, "NoSafetensors", [GGUF, "no safetensors", ".gguf", "spec.architecture"]),
    ("gpupool-test/broken-config", None, "Malformed", ["broken-config", "config.json", "not valid JSON"]),
    ("gpupool-test/broken-header", None, "Malformed", ["broken-header", "model.safetensors", "header"]),
    ("not a repo id!", None, "NotFound", ["'not a repo id!'", "is not a Hub repo id", "org/name"]),
]


@pytest.mark.parametrize(("model_id", "token", "reason", "says"), FAILURES)
async def test_each_failure_has_its_reason_and_says_what_to_do(
    resolver: ModelHub, model_id: str, token: str | None, reason: str, says: list[str]
) -> None:
    with pytest.raises(ModelUnresolved) as caught:
        await resolver.resolve(model_id, token=token)
    assert caught.value.reason == reason
    for words in says:
        assert words in caught.value.message
    assert str(caught.value) == caught.value.message


async def test_gated_with_the_right_token_resolves(resolver: ModelHub, hub: HubServer) -> None:
    model = await resolver.resolve(LLAMA, token=READ_TOKEN)
    assert model.gated
    assert all(r.authenticated for r in hub.requests)


async def test_an_unknown_revision_is_not_found(resolver: ModelHub) -> None:
    with pytest.raises(ModelUnresolved) as caught:
        await resolver.resolve(QWEN, token=None, revision="no-such-branch")
    assert caught.value.reason == "NotFound"
    assert "'no-such-branch'" in caught.value.message


async def test_an_unreachable_hub_is_unreachable(clock: Clock) -> None:
    endpoint = closed_port_url()
    resolver = ModelHub(endpoint=endpoint, request_timeout_seconds=2, clock=clock)
    with pytest.raises(ModelUnresolved) as caught:
        await resolver.resolve(QWEN, token=None)
    assert caught.value.reason == "Unreachable"
    assert endpoint in caught.value.message
    assert "asks again in 60 s" in caught.value.message


async def test_a_hub_that_does_not_answer_in_time_is_unreachable(hub: HubServer, clock: Clock) -> None:
    hub.stall(1.0)
    resolver = ModelHub(endpoint=hub.url, request_timeout_seconds=0.1, clock=clock)
    with pytest.raises(ModelUnresolved) as caught:
        await resolver.resolve(QWEN, token=None)
    assert caught.value.reason == "Unreachable"
    assert "did not answer in time" in caught.value.message


async def test_the_whole_resolution_has_a_deadline(hub: HubServer, clock: Clock) -> None:
    hub.stall(1.0)
    resolver = ModelHub(endpoint=hub.url, request_timeout_seconds=5, resolve_timeout_seconds=0.1, clock=clock)
    with pytest.raises(ModelUnresolved) as caught:
        await resolver.resolve(QWEN, token=None)
    assert caught.value.reason == "Unreachable"


async def test_a_token_in_the_environment_is_never_used(
    resolver: ModelHub, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    with pytest.raises(ModelUnresolved) as caught:
        await resolver.resolve(LLAMA, token=None)
    assert caught.value.reason == "Gated"
    assert hub.requests and not any(r.authenticated for r in hub.requests)


LEAKS = [
    (QWEN, BAD_TOKEN, None),
    ("nobody/nothing", BAD_TOKEN, None),
    (LLAMA, UNGRANTED_TOKEN, None),
    ("nobody/nothing", READ_TOKEN, None),
    (GGUF, READ_TOKEN, None),
    ("gpupool-test/broken-config", READ_TOKEN, None),
    ("gpupool-test/broken-header", READ_TOKEN, None),
    (QWEN, READ_TOKEN, 503),
    (QWEN, READ_TOKEN, 429),
    (QWEN, READ_TOKEN, 403),
]


@pytest.mark.parametrize(("model_id", "token", "fault"), LEAKS)
async def test_the_token_never_leaks(
    resolver: ModelHub,
    hub: HubServer,
    caplog: pytest.LogCaptureFixture,
    model_id: str,
    token: str,
    fault: int | None,
) -> None:
    for name in (None, "huggingface_hub", "httpx2", "gpupool"):
        caplog.set_level(logging.DEBUG, logger=name)
    if fault:
        hub.fail_next(fault)
    with pytest.raises(ModelUnresolved) as caught:
        await resolver.resolve(model_id, token=token)
    exc = caught.value
    shown = [str(exc), repr(exc), *map(str, exc.args), "".join(traceback.format_exception(exc))]
    assert all(token not in text for text in shown)
    assert caplog.text and token not in caplog.text


async def test_the_token_never_leaks_when_the_hub_is_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    resolver = ModelHub(endpoint=closed_port_url(), request_timeout_seconds=2)
    with pytest.raises(ModelUnresolved) as caught:
        await resolver.resolve(QWEN, token=BAD_TOKEN)
    assert BAD_TOKEN not in repr(caught.value)
    assert BAD_TOKEN not in caplog.text


# --- where the endpoint comes from ------------------------------------------------------------------


def test_the_endpoint_is_a_setting_and_hf_endpoint_is_honoured(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GPUPOOL_HF_ENDPOINT", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert OperatorSettings().hf_endpoint == "https://huggingface.co"
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert ModelHub.from_settings().endpoint == hub.url
    monkeypatch.setenv("GPUPOOL_HF_ENDPOINT", "http://127.0.0.1:1")
    assert ModelHub.from_settings().endpoint == "http://127.0.0.1:1"
    settings = OperatorSettings(hf_endpoint=hub.url, hub_cache_seconds=5, hub_failure_cache_seconds=1)
    resolver = ModelHub.from_settings(settings)
    assert (resolver.endpoint, resolver.cache_seconds, resolver.failure_cache_seconds) == (hub.url, 5, 1)


@pytest.fixture
def default_at(hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    monkeypatch.setenv("GPUPOOL_HF_ENDPOINT", hub.url)
    default_hub.cache_clear()
    yield hub
    default_hub.cache_clear()


async def test_resolve_model_uses_the_process_resolver(default_at: HubServer) -> None:
    model = await resolve_model(QWEN, token=None)
    assert isinstance(model, HubModel)
    assert default_hub().endpoint == default_at.url
    await resolve_model(QWEN, token=None)
    assert default_at.count("/api/models/") == 1


def test_resolve_model_sync_for_the_cli(default_at: HubServer) -> None:
    assert resolve_model_sync(QWEN_3B, token=None).parameters == 3_085_938_688
    with pytest.raises(ModelUnresolved) as caught:
        resolve_model_sync(LLAMA, token=None)
    assert caught.value.reason == "Gated"


async def test_a_header_longer_than_the_first_read_is_read_in_a_second_range(
    tmp_path: Path, clock: Clock
) -> None:
    """huggingface_hub reads 100 kB first; a checkpoint with thousands of tensors needs a second read."""
    make_headers = fixture_script()
    tensors = [(f"experts.{i}.weight", "BF16", (64, 32)) for i in range(3000)]
    content, _ = make_headers.header_bytes(tensors)
    assert len(content) > 100_000
    repo = tmp_path / "big" / "moe"
    repo.mkdir(parents=True)
    (repo / "config.json").write_text('{"model_type": "test"}')
    (repo / "model.safetensors").write_bytes(content)
    (tmp_path / "repos.json").write_text('{"big/moe": {}}')
    with run_hub_server(tmp_path) as local:
        model = await ModelHub(endpoint=local.url, clock=clock).resolve("big/moe", token=None)
        ranges = [r.range for r in local.requests if r.path.endswith(".safetensors")]
    assert model.parameters_by_dtype == {"BF16": 3000 * 64 * 32}
    assert ranges[0] == "bytes=0-100000" and len(ranges) == 2
