"""Runs a torchao artifact: rebuild the model from its card, quantise the skeleton the same way,
load the saved int8 state dict (weights_only), and run it eagerly like the torch reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.errors import InputError
from vitedge.runtimes.base import Runner, TensorSpec
from vitedge.runtimes.registry import RuntimeSpec
from vitedge.runtimes.torch_runner import TorchRunner

RUNTIME = RuntimeSpec(name="torchao", runner="vitedge.runtimes.torchao_runner:TorchaoRunner", module="torchao",
                      packages=("torch", "torchao"), opens=(".torchao.pt",), needs_torch=True,
                      label="torchao", install="pip install 'vitedge[torchao]' (with torch==2.13.0)")


# The artifact's `mode` -> torchao's config class. Here, on the device side, because loading
# quantises a fresh skeleton the same way before the saved int8 state dict goes in; the build
# (targets/torchao_target.py) reads it from here.
MODES = {
    "int8-dynamic": "Int8DynamicActivationInt8WeightConfig",
    "int8-weight-only": "Int8WeightOnlyConfig",
}


def torchao_config(mode: str) -> Any:
    import torchao.quantization as tq

    return getattr(tq, MODES[mode])()


def load_torchao_module(path: Path) -> tuple[Any, Any, str]:
    """(quantised nn.Module, its ModelCard, mode) from a vitedge torchao artifact."""
    from vitedge.quiet import quiet

    try:
        import torch

        with quiet():
            import torchao  # noqa: F401  (registers its tensor subclasses for weights_only loading)
            from torchao.quantization import quantize_
    except ImportError:
        raise RUNTIME.missing_error() from None
    from vitedge.card import ModelCard
    from vitedge.models.resolve import build_from_card

    if not path.is_file():
        raise InputError(f"{path}: no such torchao artifact")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"{path}: not a loadable torchao artifact ({str(e)[:160]})") from None
    if not isinstance(blob, dict) or blob.get("format") != "vitedge-torchao":
        raise InputError(f"{path}: not a vitedge torchao artifact")
    card = ModelCard.from_dict(json.loads(blob["card"]))
    module = build_from_card(card).eval()
    with quiet():
        quantize_(module, torchao_config(blob["mode"]))
    module.load_state_dict(blob["state_dict"], assign=True)
    return module, card, str(blob["mode"])


class TorchaoRunner(Runner):
    runtime = "torchao"

    def __init__(self, path: str | Path, threads: int | None = None, name: str | None = None):
        super().__init__(name)
        self.path = Path(path)
        self.threads = threads
        self.mode = "?"
        self._torch: TorchRunner | None = None

    def _activate(self) -> None:
        module, card, self.mode = load_torchao_module(self.path)
        self._torch = TorchRunner(module, (3, *card.preprocess.input_size), threads=self.threads,
                                  name=self.name).activate()  # type: ignore[assignment]

    def _deactivate(self) -> None:
        self._torch = None

    def inputs(self) -> list[TensorSpec]:
        assert self._torch is not None
        return self._torch.inputs()

    def outputs(self) -> list[TensorSpec]:
        assert self._torch is not None
        return self._torch.outputs()

    def info(self) -> dict[str, Any]:
        import torchao

        base = self._torch.info() if self._torch else {}
        return {**base, "runtime": self.runtime, "torchao": torchao.__version__, "mode": self.mode}

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._torch is not None
        return self._torch._infer(feed)
