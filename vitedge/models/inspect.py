"""What a model is: parameter count, FLOPs, and the shape of every intermediate tensor.

One forward pass with forward hooks records (module, input shape, output shape, parameters);
FLOPs come from `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions and
attention, counted as 2 x multiply-accumulates).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    depth: int
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    params: int


@dataclass(frozen=True)
class ModelSummary:
    params: int
    trainable: int
    flops: int  # per forward pass at the given batch
    batch: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    layers: list[LayerRow]


def _shape(x: object) -> tuple[int, ...] | None:
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return tuple(x[0].shape)
    return None


@torch.inference_mode()
def summarize(model: torch.nn.Module, input_shape: tuple[int, ...]) -> ModelSummary:
    from torch.utils.flop_counter import FlopCounterMode

    records: dict[str, dict[str, object]] = {}
    handles = []
    for name, mod in model.named_modules():
        if not name:
            continue

        def hook(m: torch.nn.Module, args: tuple, out: object, name: str = name) -> None:
            records.setdefault(name, {"in": _shape(args), "out": _shape(out)})

        handles.append(mod.register_forward_hook(hook))
    x = torch.zeros(input_shape)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            y = model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    layers = [
        LayerRow(
            name=name,
            kind=type(mod).__name__,
            depth=name.count(".") + 1,
            input_shape=records.get(name, {}).get("in"),  # type: ignore[arg-type]
            output_shape=records.get(name, {}).get("out"),  # type: ignore[arg-type]
            params=sum(p.numel() for p in mod.parameters()),
        )
        for name, mod in model.named_modules()
        if name
    ]
    return ModelSummary(
        params=sum(p.numel() for p in model.parameters()),
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        flops=int(counter.get_total_flops()),
        batch=input_shape[0],
        input_shape=tuple(input_shape),
        output_shape=tuple(y.shape),
        layers=layers,
    )
