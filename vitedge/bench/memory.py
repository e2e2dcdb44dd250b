"""Memory and import phases of the process this runs in (vitedge.bench.profile measures with
these, inside the isolated timing's worker: vitedge.bench.isolated)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from vitedge.kit_common.device_profile import proc_status_mb, reset_peak  # one reader for both


class Phases:
    """Peak and resident memory of this process above its baseline (the RSS at construction)."""

    def __init__(self) -> None:
        status = proc_status_mb()
        self.baseline = status[0] if status else None
        self.resettable = reset_peak()

    @property
    def baseline_mb(self) -> float | None:
        return None if self.baseline is None else round(self.baseline, 1)

    def start(self) -> None:
        """A new phase: the high-water mark back to the current RSS."""
        if self.resettable:
            reset_peak()

    def peak(self) -> float | None:
        status = proc_status_mb()
        if status is None or self.baseline is None or not self.resettable:
            return None
        return round(status[1] - self.baseline, 1)

    def rss(self) -> float | None:
        status = proc_status_mb()
        return None if status is None or self.baseline is None else round(status[0] - self.baseline, 1)


def import_runtime(contestant: Any) -> None:
    """Import the runtime a contestant opens with (nothing for a factory or torch contestant,
    which import theirs when opened), so that its cost is a phase of its own."""
    from vitedge.runtimes.registry import get_runtime, runtime_for_file

    if contestant.factory or contestant.torch:
        return
    path = Path(contestant.path)
    if contestant.runtime:
        spec = get_runtime(contestant.runtime)
    elif path.is_dir():
        from vitedge.bundle.manifest import read_manifest

        spec = get_runtime(read_manifest(path).runtime)
    else:
        spec = runtime_for_file(path)
    importlib.import_module(spec.module)
    spec.runner_class()
