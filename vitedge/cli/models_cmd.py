"""`vitedge models` and `vitedge inspect`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from vitedge.cli.common import (
    ArchOpt,
    ClassesOpt,
    ImgSizeOpt,
    ModelArg,
    NumClassesOpt,
    RandomInitOpt,
    WeightsOpt,
    console,
    human,
    load_model_from_cli,
)
from vitedge.cli.main import app


@app.command("models")
def models_command(
    family: Annotated[str | None, typer.Option(help="Only this family: vit | convnext.")] = None,
) -> None:
    """List the model registry (built-in models have trained weights in the package)."""
    from vitedge.models.registry import get_entry, list_models

    table = Table(title="vitedge models")
    for col in ("name", "family", "input", "built-in", "description"):
        table.add_column(col)
    for name in list_models(family):
        e = get_entry(name)
        h, w = e.preprocess.input_size
        table.add_row(name, e.family, f"{h}x{w}", "yes" if e.builtin_weights else "", e.description)
    console.print(table)
    console.print("timm models: timm:NAME for any timm image classifier (ViT, DeiT, EVA02, Swin, BEiT, "
                  "ConvNeXt, ResNet, ...); weights from a local file via --weights, or --random-init.")


@app.command("inspect")
def inspect_command(
    model: ModelArg,
    arch: ArchOpt = None,
    weights: WeightsOpt = None,
    classes: ClassesOpt = None,
    random_init: RandomInitOpt = False,
    img_size: ImgSizeOpt = None,
    num_classes: NumClassesOpt = None,
    batch: Annotated[int, typer.Option(help="Batch size N of the traced forward pass.")] = 1,
    depth: Annotated[int, typer.Option(help="Show modules down to this nesting depth.")] = 2,
) -> None:
    """Parameters, FLOPs, preprocessing and the shape of every intermediate tensor."""
    from vitedge.models.inspect import summarize

    if batch < 1:
        from vitedge.errors import UsageError

        raise UsageError("--batch must be >= 1")
    loaded = load_model_from_cli(model, arch, weights, classes, random_init, img_size, num_classes)
    card = loaded.card
    h, w = card.preprocess.input_size
    s = summarize(loaded.module, (batch, 3, h, w))
    p = card.preprocess
    console.print(f"[bold]{card.arch}[/]  from {card.source}")
    console.print(f"parameters {s.params:,} ({human(s.params)})   FLOPs {human(s.flops)} per forward "
                  f"at batch {batch} ({human(s.flops / batch)} per image)")
    console.print(f"input {s.input_shape} float32 NCHW -> output {s.output_shape}")
    console.print(f"preprocess: {p.describe()}")
    console.print(f"classes ({len(card.classes)}): {', '.join(card.classes[:12])}"
                  f"{', ...' if len(card.classes) > 12 else ''}")
    if card.metrics:
        console.print("metrics: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in card.metrics.items()))
    table = Table(title="intermediate tensors (one forward pass)")
    for col in ("module", "type", "input", "output", "params"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for row in s.layers:
        if row.depth <= depth:
            table.add_row("  " * (row.depth - 1) + row.name, row.kind, str(row.input_shape),
                          str(row.output_shape), f"{row.params:,}")
    console.print(table)
