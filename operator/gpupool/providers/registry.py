"""From a GpuProvider's spec to a ready provider: the one place that knows every provider type.

The controllers call `build_provider` with what the GpuProvider resource holds (type, endpoint,
the API key read from its Secret, options) and get back a CloudProvider already wrapped in the
retry policy, so no controller constructs a cloud client or a retry loop itself. Cloud modules are
imported only when their type is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from gpupool.providers.base import CloudProvider
from gpupool.providers.errors import InvalidRequestError
from gpupool.providers.limits import LAMBDA_LIMITS, RUNPOD_LIMITS, LaunchPacedProvider
from gpupool.providers.retry import RetryingProvider, RetryPolicy

PROVIDER_TYPES = ("sim", "lambda", "runpod")
DEFAULT_RETRY = RetryPolicy()

_DEFAULT_ENDPOINTS = {
    "sim": "http://127.0.0.1:8788",
    "lambda": "https://cloud.lambda.ai/api/v1",
    "runpod": "https://api.runpod.io/graphql",
}


def default_endpoint(provider_type: str) -> str:
    try:
        return _DEFAULT_ENDPOINTS[provider_type]
    except KeyError:
        raise InvalidRequestError(
            f"unknown provider type {provider_type!r}; known: {', '.join(PROVIDER_TYPES)}",
            code="unknown-type",
        ) from None


def build_provider(
    provider_type: str,
    endpoint: str | None,
    api_key: str,
    cluster_name: str,
    *,
    name: str | None = None,
    options: Mapping[str, str] | None = None,
    retry: RetryPolicy | None = DEFAULT_RETRY,
    client: httpx.AsyncClient | None = None,
) -> CloudProvider:
    """A provider for one GpuProvider. `name` (default: the type) becomes every offer's provider.

        `options` carries type-specific settings: lambda `sshKeyName` (required by Lambda to launch);
        runpod `image` and `containerDiskGb`. `retry=None` returns the bare provider (tests of the
        clients themselves, without launch pacing; their HTTP requests still pass the account's
    request bucket). An API key is required for every type but `sim`."""
    endpoint = endpoint or default_endpoint(provider_type)
    name = name or provider_type
    opts = dict(options or {})
    if provider_type != "sim" and not api_key:
        raise InvalidRequestError(
            f"provider {name!r} of type {provider_type} needs an API key", code="no-api-key"
        )
    provider: CloudProvider
    if provider_type == "sim":
        from gpupool.providers.sim import SimCloudProvider

        provider = SimCloudProvider(
            name=name, cluster_name=cluster_name, endpoint=endpoint, api_key=api_key, client=client
        )
    elif provider_type == "lambda":
        from gpupool.providers.lambda_cloud import LambdaCloudProvider

        provider = LambdaCloudProvider(
            name=name,
            cluster_name=cluster_name,
            api_key=api_key,
            endpoint=endpoint,
            ssh_key_name=opts.get("sshKeyName", ""),
            client=client,
        )
    elif provider_type == "runpod":
        from gpupool.providers.runpod import DEFAULT_IMAGE, RunPodProvider

        provider = RunPodProvider(
            name=name,
            cluster_name=cluster_name,
            api_key=api_key,
            endpoint=endpoint,
            image=opts.get("image", DEFAULT_IMAGE),
            container_disk_gb=int(opts.get("containerDiskGb", "50")),
            client=client,
        )
    else:
        default_endpoint(provider_type)  # raises the error naming the known types
        raise AssertionError("unreachable")
    if retry is None:
        return provider
    launch_limits = {"lambda": LAMBDA_LIMITS, "runpod": RUNPOD_LIMITS}.get(provider_type)
    if launch_limits is not None and launch_limits.launches:
        provider = LaunchPacedProvider(provider, launch_limits)
    return RetryingProvider(provider, retry)
