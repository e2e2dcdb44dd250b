"""Options shared by several commands, and the console they print to."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

# Logs and pipes get 120 columns (rich's 80-column default for non-terminals squeezes the tables).
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)

ModelArg = Annotated[
    str,
    typer.Argument(
        help="Built-in name (vit-tiny, convnext-zepto), registry/timm name (timm:NAME) with "
        "--weights or --random-init, or a checkpoint file.",
        show_default=False,
    ),
]
ArchOpt = Annotated[
    str | None, typer.Option("--arch", help="Architecture of a plain state-dict checkpoint.")
]
WeightsOpt = Annotated[
    Path | None, typer.Option("--weights", help="State dict (.safetensors/.pth) for MODEL.")
]
ClassesOpt = Annotated[
    Path | None, typer.Option("--classes", help="Class names: text file (one per line) or JSON list.")
]
RandomInitOpt = Annotated[
    bool, typer.Option("--random-init", help="Untrained weights (for benchmarking only).")
]
ImgSizeOpt = Annotated[
    int | None, typer.Option("--img-size", help="Input size for --random-init / --weights models.")
]
NumClassesOpt = Annotated[
    int | None, typer.Option("--num-classes", help="Classes for --random-init / --weights models.")
]


def load_model_from_cli(
    model: str,
    arch: str | None = None,
    weights: Path | None = None,
    classes: Path | None = None,
    random_init: bool = False,
    img_size: int | None = None,
    num_classes: int | None = None,
) -> Any:
    from vitedge.models.resolve import load_model, read_class_names

    overrides: dict[str, Any] = {}
    if img_size is not None:
        if img_size < 8:
            from vitedge.errors import UsageError

            raise UsageError(f"--img-size {img_size} is too small (need >= 8)")
        overrides["img_size"] = img_size
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    names = read_class_names(classes) if classes else None
    return load_model(
        model, arch=arch, weights=weights, classes=names, random_init=random_init,
        overrides=overrides,
    )


def human(n: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g}{suffix}{unit}" if suffix else f"{n:.0f}{unit}"
        n /= 1000
    return f"{n:.3g}P{unit}"
