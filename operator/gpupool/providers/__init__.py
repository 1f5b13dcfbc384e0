"""Cloud providers behind one protocol (see base.py for the contract, errors.py for the failures).

The public face: `CloudProvider`, the data types `LaunchRequest`, `Instance`, `InstanceState`,
`ProviderOffer`, the error classes, the retry wrapper, and `build_provider`, which turns a
GpuProvider's type, endpoint and key into a ready, retrying provider. The cloud modules (`sim`,
`lambda_cloud`, `runpod`) are imported by `build_provider` only when chosen.
"""

from gpupool.providers.base import (
    TAG_CLAIM,
    TAG_CLAIM_UID,
    TAG_CLUSTER,
    TAG_POOL,
    CloudProvider,
    Instance,
    InstanceState,
    LaunchRequest,
    ProviderOffer,
    claim_instance_name,
)
from gpupool.providers.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    NotFoundError,
    ProviderError,
    QuotaError,
    TransientError,
)
from gpupool.providers.registry import PROVIDER_TYPES, build_provider, default_endpoint
from gpupool.providers.retry import RetryingProvider, RetryPolicy, call_with_retry

__all__ = [
    "PROVIDER_TYPES",
    "TAG_CLAIM",
    "TAG_CLAIM_UID",
    "TAG_CLUSTER",
    "TAG_POOL",
    "AuthError",
    "CapacityError",
    "CloudProvider",
    "Instance",
    "InstanceState",
    "InvalidRequestError",
    "LaunchRequest",
    "NotFoundError",
    "ProviderError",
    "ProviderOffer",
    "QuotaError",
    "RetryPolicy",
    "RetryingProvider",
    "TransientError",
    "build_provider",
    "call_with_retry",
    "claim_instance_name",
    "default_endpoint",
]
