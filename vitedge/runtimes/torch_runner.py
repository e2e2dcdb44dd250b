"""The PyTorch reference runner (eager `nn.Module`, or a torchao-quantised one).

torch's thread count is process-wide; the runner sets it on activation only when asked to and
reports the value in effect, so reference and artifact timings state the threads they used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vitedge.runtimes.base import Runner, TensorSpec
from vitedge.runtimes.registry import RuntimeSpec

# The PyTorch reference: it runs an in-memory nn.Module, never a bundle file (opens nothing).
RUNTIME = RuntimeSpec(name="torch", runner="vitedge.runtimes.torch_runner:TorchRunner", module="torch",
                      packages=("torch",), needs_torch=True, label="PyTorch", install="pip install torch==2.13.0")


class TorchRunner(Runner):
    runtime = "torch"

    def __init__(
        self,
        module: Any,  # torch.nn.Module (torch is imported by whoever built it)
        input_shape: tuple[int, int, int],
        input_name: str = "input",
        output_name: str = "logits",
        threads: int | None = None,
        name: str | None = None,
    ):
        super().__init__(name or "torch")
        self.module = module.eval()
        self.input_shape = tuple(input_shape)
        self.input_name = input_name
        self.output_name = output_name
        self.threads = threads

    def _activate(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)

    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(self.input_name, "float32", ("batch", *self.input_shape))]

    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec(self.output_name, "float32", ("batch", None))]

    def info(self) -> dict[str, Any]:
        import torch

        return {"runtime": self.runtime, "version": torch.__version__, "device": "cpu",
                "threads": torch.get_num_threads(), "mode": "eager, inference_mode"}

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            y = self.module(torch.from_numpy(feed[self.input_name]))
        return {self.output_name: y.float().numpy().copy()}
