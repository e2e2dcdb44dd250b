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
        "--weights or --random-init, a checkpoint file, or a Hugging Face folder (DIR or hf:DIR: "
        "transformers save_pretrained or a timm hub folder).",
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
EvalOpt = Annotated[str | None, typer.Option(
    "--eval", help="Images that judge parity: a labelled folder (ROOT/<class>/<image>: accuracy too), a flat folder "
    "or .npy/.npz (parity only), an IDX data-set directory, or 'synthetic'. Default: the images of --calib that "
    "calibration did not use, else the model's own data set (shapes10 built-ins).", show_default=False)]
EvalNOpt = Annotated[int | None, typer.Option("--eval-n", help="Use a seeded subset of N eval images.")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="Threads for every runner (default: all cores).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for random parity inputs and subsets.")]
CalibOpt = Annotated[str | None, typer.Option(
    "--calib", help="Calibration data for INT8 targets: 'synthetic', an image folder, an IDX data-set directory "
    "(its train split), or FILE.npy/.npz (default synthetic for models trained on it).",
    rich_help_panel="Quantisation")]
NumCalibOpt = Annotated[int, typer.Option("--num-calib", help="Calibration samples (seeded subset).",
                                          rich_help_panel="Quantisation")]
OptionOpt = Annotated[list[str] | None, typer.Option(
    "--option", "-O", help="Target option KEY=VALUE (repeatable), the same as its flag --KEY VALUE; "
    "`vitedge targets --options TARGET` lists them.", rich_help_panel="Target options")]


def check_common(eval_n: int | None, threads: int | None) -> None:
    from vitedge.errors import UsageError

    if eval_n is not None and eval_n < 1:
        raise UsageError("--eval-n must be >= 1")
    if threads is not None and threads < 1:
        raise UsageError("--threads must be >= 1")


def load_model_from_cli(
    model: str,
    arch: str | None = None,
    weights: Path | None = None,
    classes: Path | None = None,
    random_init: bool = False,
    img_size: int | None = None,
    num_classes: int | None = None,
    dynamic_size: bool = False,
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
    loaded = load_model(model, arch=arch, weights=weights, classes=names, random_init=random_init,
                        overrides=overrides)
    if dynamic_size:
        support = loaded.card.spatial_size
        if support == "dynamic_img_size" and not loaded.card.config.get("dynamic_img_size"):
            # timm resamples the position table inside the graph when built this way
            loaded = load_model(model, arch=arch, weights=weights, classes=names, random_init=random_init,
                                overrides={**overrides, "dynamic_img_size": True})
        elif support == "fixed":
            from vitedge.errors import UsageError

            raise UsageError(f"--dynamic-size: {loaded.card.arch} has fixed-size position tables or windows; "
                             "export one bundle per --img-size instead")
    return loaded


def human(n: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g}{suffix}{unit}" if suffix else f"{n:.0f}{unit}"
        n /= 1000
    return f"{n:.3g}P{unit}"
