"""Runners, one file per runtime, all speaking `vitedge.runtimes.base.Runner`.

`RUNNERS` maps the runtime name written in a bundle manifest to its runner class, imported
lazily so that a device with only onnxruntime (or only openvino) never imports the others.
"""

from __future__ import annotations

import importlib
from typing import Any

RUNNERS = {
    "onnxruntime": "vitedge.runtimes.ort_runner:OrtRunner",
    "openvino": "vitedge.runtimes.openvino_runner:OpenVinoRunner",
    "tensorrt": "vitedge.runtimes.tensorrt_runner:TensorRTRunner",
    "torch": "vitedge.runtimes.torch_runner:TorchRunner",
    "torchao": "vitedge.runtimes.torchao_runner:TorchaoRunner",
}


def runner_class(runtime: str) -> Any:
    if runtime not in RUNNERS:
        from vitedge.errors import UsageError

        raise UsageError(f"unknown runtime {runtime!r}; known: {', '.join(RUNNERS)}")
    module, cls = RUNNERS[runtime].split(":")
    return getattr(importlib.import_module(module), cls)
