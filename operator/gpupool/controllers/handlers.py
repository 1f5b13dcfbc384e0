"""The switchboard: every kopf handler of the operator, each a guard and one delegation.

Read top to bottom, this is the table of contents of what the operator reacts to.
"""

from __future__ import annotations

from typing import Any

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our own finalizer name and annotations prefix, so two operators never fight over objects.
    settings.persistence.finalizer = "gpupool.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="gpupool.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="gpupool.dev")
    settings.posting.level = 20  # events for INFO and above
    settings.watching.server_timeout = 300
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
