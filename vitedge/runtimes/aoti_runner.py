"""Runs an AOTInductor package (.pt2) with `torch._inductor.aoti_load_package`.

The package holds a compiled shared library with the weights baked in; loading it needs libtorch
(the torch wheel, same version as the build: the .pt2 calls torch's C shim and oneDNN kernels),
not the model's Python code. Loading dlopens that library, so a .pt2 is native code: open only
bundles you trust (the bundle's checksums show it is the file that was built, not who built it).

Threads: AOTI kernels run on torch's OpenMP pool, whose size (`torch.set_num_threads`) is
process-wide; the runner sets it on activation when given `threads` and reports the value in
effect. Concurrency: the loaded model's `run` takes a runner from an internal pool under a mutex
(`AOTInductorModelContainer::run`), so concurrent `infer` calls are safe; with the default
`num_runners=1` they are served one at a time.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.errors import InputError, MissingDependencyError
from vitedge.quiet import quiet
from vitedge.runtimes.base import Runner, TensorSpec
from vitedge.runtimes.registry import RuntimeSpec

RUNTIME = RuntimeSpec(name="aoti", runner="vitedge.runtimes.aoti_runner:AotiRunner", module="torch",
                      packages=("torch",), opens=(".pt2",), thread_safe=True, needs_torch=True,
                      install="pip install torch==<the version the bundle records> (CPU wheel)")

META_FORMAT = "vitedge-aoti"


def read_metadata(path: Path) -> dict[str, str]:
    """vitedge's metadata from a .pt2 without loading it (AOTI writes the `aot_inductor.metadata`
    dict next to the compiled library as *_metadata.json); {} if there is none."""
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if name.endswith("wrapper_metadata.json"):
                    meta = json.loads(z.read(name))
                    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
    except (zipfile.BadZipFile, OSError, ValueError):
        return {}
    return {}


def _release(version: str) -> str:
    """2.14.1+cu130 -> 2.14.1: CPU kernels are the same in the CPU and CUDA wheels of one release."""
    return version.split("+")[0]


class AotiRunner(Runner):
    runtime = "aoti"

    def __init__(self, path: str | Path, threads: int | None = None, num_runners: int = 1,
                 name: str | None = None):
        super().__init__(name)
        self.path = Path(path)
        self.threads = threads
        self.num_runners = num_runners
        self.model: Any = None
        self.meta: dict[str, str] = {}

    def _activate(self) -> None:
        try:
            import torch
            from torch._inductor.package import load_package  # aoti_load_package, with num_runners
        except ImportError:
            raise MissingDependencyError(f"this bundle runs on AOTInductor; {RUNTIME.install}") from None
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such AOTInductor package")
        # Checked before dlopen: a package from another torch fails in the loader with an ABI or
        # missing-symbol error, or worse, loads and misbehaves.
        meta = read_metadata(self.path)
        if meta.get("format") != META_FORMAT:
            raise InputError(f"{self.path}: not an AOTInductor package built by vitedge (no vitedge metadata)")
        if _release(meta.get("torch", "")) != _release(torch.__version__):
            raise MissingDependencyError(f"{self.path} was compiled with torch {meta.get('torch')}, this is "
                                         f"torch {torch.__version__}; a .pt2 runs only on the torch that built it")
        if self.threads:
            torch.set_num_threads(self.threads)  # process-wide: torch has one intra-op pool
        try:
            with quiet():  # cpp_extension warns about a missing CUDA runtime on CPU hosts
                self.model = load_package(str(self.path), "model", num_runners=self.num_runners)
            self.meta = {**meta, **dict(self.model.get_metadata())}
        except Exception as e:  # RuntimeError from the C++ loader (bad zip, ABI, missing symbols)
            raise InputError(f"{self.path}: AOTInductor cannot load it ({str(e).splitlines()[0][:200]})") from None
        self._torch = torch
        self._boxed_run = getattr(getattr(self.model, "loader", None), "boxed_run", None)

    def _deactivate(self) -> None:
        self.model = None

    def _shape(self) -> tuple[int | str, ...]:
        dims = [int(d) for d in self.meta["input_shape"].split(",")]
        return tuple("batch" if d < 0 else d for d in dims)

    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(self.meta.get("input", "input"), "float32", self._shape())]

    def outputs(self) -> list[TensorSpec]:
        first = self._shape()[0]
        return [TensorSpec(self.meta.get("output", "logits"), "float32", (first, int(self.meta["num_classes"])))]

    def info(self) -> dict[str, Any]:
        import torch

        return {"runtime": self.runtime, "version": torch.__version__, "device": "cpu",
                "threads": torch.get_num_threads(), "threads_scope": "process-wide (torch.set_num_threads)",
                "num_runners": self.num_runners, "precision": self.meta.get("precision"),
                "built_with_torch": self.meta.get("torch")}

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(feed[self.meta.get("input", "input")]))
        with torch.inference_mode():
            # The loader's flat call skips AOTICompiledModel.__call__'s per-call pytree work
            # (~50 us of a ~1.6 ms vit-tiny call); same C++ run, same container lock.
            y = self._boxed_run([x])[0] if self._boxed_run else self.model(x)
        if isinstance(y, (list, tuple)):
            y = y[0]
        return {self.meta.get("output", "logits"): y.float().numpy().copy()}
