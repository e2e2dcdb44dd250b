"""Runners, one file per runtime, all speaking `vitedge.runtimes.base.Runner`.

Each `<name>_runner.py` declares its `RUNTIME` (vitedge.runtimes.registry): the files it opens,
thread safety, what a device needs. `vitedge.runtimes.open.open_runner` is the one way to open
an artifact; runner modules are imported lazily, so a device with only onnxruntime (or only
openvino) never imports the others.
"""

from __future__ import annotations

from typing import Any


def runner_class(runtime: str) -> Any:
    from vitedge.runtimes.registry import get_runtime

    return get_runtime(runtime).runner_class()
