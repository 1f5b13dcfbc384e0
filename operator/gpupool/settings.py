"""Every knob of the operator process, in one object read from `GPUPOOL_*` environment variables.

The control loop is event-driven: each object is reconciled when something it depends on
changes (its spec, its pods, its node, its claims). The intervals below are only the safety
nets and the genuinely periodic work (price refresh, one cloud listing per provider, garbage
collection, consolidation), so they are tens of seconds, not seconds. A resync reads memory
only: an idle cluster costs the API server nothing however many objects it holds.

Durations are seconds (floats). Each field is read from `GPUPOOL_` + its name in upper case
(e.g. `GPUPOOL_PROVIDER_LIVENESS_SECONDS=30`); the chart passes them through its `env` value,
and docs/install.md lists them.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    """The operator's settings; defaults suit a production cluster."""

    model_config = SettingsConfigDict(
        env_prefix="GPUPOOL_", frozen=True, extra="ignore", populate_by_name=True
    )

    # --- identity --------------------------------------------------------------------
    # Tags every cloud instance, so the garbage collector knows which are this cluster's.
    cluster_name: str = Field(default="gpupool", min_length=1, max_length=40)
    # The only namespace whose Secrets the operator may read (the chart's credentials.namespace).
    credentials_namespace: str = "gpupool-system"

    # --- safety-net resyncs (memory only, no API reads) -----------------------------------
    # A ModelDeployment is looked at again after this long without an event.
    model_resync_seconds: float = Field(default=300.0, gt=0)
    # A GpuPool is looked at again after this long without an event (consolidation and expiry
    # deadlines wake it earlier, at the moment they fall due).
    pool_resync_seconds: float = Field(default=30.0, gt=0)
    # A GpuNodeClaim is looked at again after this long without an event (launch timeouts wake
    # it earlier).
    claim_resync_seconds: float = Field(default=60.0, gt=0)

    # --- periodic work ----------------------------------------------------------------
    # One `list()` per provider per interval feeds every claim's liveness (vanished instances,
    # spot notices) and the garbage collector: never a GET per claim.
    provider_liveness_seconds: float = Field(default=30.0, gt=0)
    # Orphaned instances are looked for on every Nth liveness listing at most this often.
    gc_interval_seconds: float = Field(default=60.0, gt=0)
    # An instance younger than this is never taken for an orphan (its claim may be in flight).
    gc_grace_seconds: float = Field(default=60.0, ge=0)

    # --- provisioning ------------------------------------------------------------------
    # A batch of pending pods closes after this long without a new one...
    batch_idle_seconds: float = Field(default=1.0, gt=0)
    # ...or this long after its first pod, whichever comes first (Karpenter: 1 s / 10 s).
    batch_max_seconds: float = Field(default=10.0, gt=0)
    # When a ModelDeployment's chosen GPU model has no capacity anywhere for this long, it is
    # planned again onto the next one.
    replan_after_seconds: float = Field(default=600.0, gt=0)

    # --- errors ------------------------------------------------------------------------
    # A reconcile that raised is retried after an exponential backoff between these bounds.
    error_backoff_min_seconds: float = Field(default=1.0, gt=0)
    error_backoff_max_seconds: float = Field(default=60.0, gt=0)

    # --- leader election (several replicas; only the holder of the Lease acts) -----------
    leader_elect: bool = False
    lease_name: str = "gpupool-operator"
    lease_namespace: str = "gpupool-system"
    # As client-go's defaults: a standby takes over at most lease_duration after a leader dies;
    # a leader that cannot renew within renew_deadline stops acting before its lease runs out.
    lease_duration_seconds: float = Field(default=15.0, gt=0)
    renew_deadline_seconds: float = Field(default=10.0, gt=0)
    lease_retry_seconds: float = Field(default=2.0, gt=0)

    # --- Hugging Face Hub (a model's config.json and safetensors headers: modelhub.py) -------
    # The Hub asked; a mirror or a test server can stand in. HF_ENDPOINT, the variable
    # huggingface_hub itself reads, is honoured when GPUPOOL_HF_ENDPOINT is not set; "off" asks no
    # Hub at all (air-gapped clusters): models then come from the built-in table or spec.architecture.
    hf_endpoint: str = Field(
        default="https://huggingface.co",
        min_length=1,
        validation_alias=AliasChoices("GPUPOOL_HF_ENDPOINT", "HF_ENDPOINT", "hf_endpoint"),
    )
    # A resolved model is asked of the Hub again after this long (a new commit on its branch
    # shows then); a pinned revision never changes, so this is only the memory's bound.
    hub_cache_seconds: float = Field(default=3600.0, gt=0)
    # A model that could not be resolved is asked again only after this long, so a broken spec
    # costs one round of Hub calls a minute, never a hot loop.
    hub_failure_cache_seconds: float = Field(default=60.0, gt=0)
    # Each HTTP request to the Hub gives up after this long...
    hub_request_timeout_seconds: float = Field(default=10.0, gt=0)
    # ...and a whole resolution (model info, config files, every shard's header) after this long.
    hub_resolve_timeout_seconds: float = Field(default=60.0, gt=0)
    # Resolutions kept at once (successes and failures; the least recently used go first).
    hub_cache_entries: int = Field(default=512, gt=0)
