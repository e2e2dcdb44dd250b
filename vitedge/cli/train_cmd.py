"""`vitedge train` and `vitedge eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vitedge.cli.common import (
    ArchOpt,
    ClassesOpt,
    EvalNOpt,
    ImgSizeOpt,
    ModelArg,
    NumClassesOpt,
    RandomInitOpt,
    WeightsOpt,
    check_common,
    console,
    load_model_from_cli,
)
from vitedge.cli.main import app
from vitedge.errors import UsageError

DataOpt = Annotated[
    str, typer.Option("--data", help="'synthetic' (built-in shapes10), an image folder, or an IDX data set directory (e.g. /usr/share/datasets/fashion-mnist).")
]


@app.command("train")
def train_command(
    model: Annotated[str, typer.Option("--model", help="Registry name or timm:NAME.")] = "vit-tiny",
    data: DataOpt = "synthetic",
    out: Annotated[Path | None, typer.Option(help="Checkpoint to write (.safetensors).")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.05,
    warmup_epochs: Annotated[float, typer.Option(help="Linear warm-up length.")] = 1.0,
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing.")] = 0.1,
    drop_path: Annotated[float, typer.Option(help="Stochastic depth rate.")] = 0.0,
    augment: Annotated[str, typer.Option(help="auto (none for synthetic, light for folders) | light | none.")] = "auto",
    mixup: Annotated[float, typer.Option(help="Mixup alpha (0 = off).")] = 0.0,
    cutmix: Annotated[float, typer.Option(help="CutMix alpha (0 = off).")] = 0.0,
    num_train: Annotated[int | None, typer.Option(help="Training images (synthetic: how many to draw; an IDX data set: a seeded subset of its training part).")] = None,
    img_size: ImgSizeOpt = None,
    init: Annotated[Path | None, typer.Option(help="Fine-tune from these weights.")] = None,
    seed: Annotated[int, typer.Option(help="Seed (data order, augmentation, init).")] = 0,
    threads: Annotated[int | None, typer.Option(help="torch threads (default: all cores).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run of the same options.")] = False,
    builtin: Annotated[bool, typer.Option(help="Write into the package's built-in weights.")] = False,
) -> None:
    """Train (or fine-tune) a model with a DeiT-style recipe; writes a safetensors checkpoint."""
    from vitedge.models.resolve import builtin_weights_path
    from vitedge.train.trainer import TrainConfig, train

    if builtin:
        if out is not None:
            raise UsageError("--builtin writes the package's weights; do not also pass --out")
        target = builtin_weights_path(model)
        if target is None:
            raise UsageError(f"{model} is not a built-in model")
        out = target
    out = out or Path(f"{model.replace(':', '-')}.safetensors")
    if out.suffix != ".safetensors":
        raise UsageError(f"--out {out}: checkpoints are written as .safetensors")
    cfg = TrainConfig(
        model=model, data=data, out=str(out), epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, warmup_epochs=warmup_epochs, label_smoothing=label_smoothing,
        drop_path=drop_path, augment=augment, mixup=mixup, cutmix=cutmix, num_train=num_train, img_size=img_size,
        init=str(init) if init else None, seed=seed, threads=threads, resume=resume,
    )
    result = train(cfg)
    m = result.card.metrics
    console.print(f"wrote {result.checkpoint} in {result.seconds / 60:.1f} min; "
                  + ", ".join(f"{k} {v:.2%}" for k, v in m.items() if k.endswith(("top1", "top5"))))


@app.command("eval")
def eval_command(
    model: ModelArg,
    data: DataOpt = "synthetic",
    arch: ArchOpt = None,
    weights: WeightsOpt = None,
    classes: ClassesOpt = None,
    random_init: RandomInitOpt = False,
    img_size: ImgSizeOpt = None,
    num_classes: NumClassesOpt = None,
    eval_n: EvalNOpt = None,
) -> None:
    """Top-1 / top-5 accuracy and a confusion summary on labelled data."""
    from vitedge.calib.datasets import eval_data
    from vitedge.train.evaluate import evaluate

    loaded = load_model_from_cli(model, arch, weights, classes, random_init, img_size, num_classes)
    card = loaded.card
    check_common(eval_n, None)
    ds = eval_data(data, card.preprocess, card.classes, eval_n)
    acc = evaluate(loaded.module, ds, card.preprocess)
    console.print(f"[bold]{card.arch}[/] on {ds.description}: top-1 {acc.top1:.2%}  "
                  f"top-5 {acc.top5:.2%}")
    table = Table(title="per class")
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column("top-1", justify="right")
    table.add_column("most often mistaken for")
    per = acc.per_class()
    for i, name in enumerate(card.classes):
        row = acc.confusion[i].copy()
        row[i] = 0
        worst = f"{card.classes[int(row.argmax())]} ({int(row.max())})" if row.max() > 0 else ""
        table.add_row(name, str(int(acc.confusion[i].sum())), f"{per[i]:.1%}", worst)
    if len(card.classes) <= 50:
        console.print(table)
    pairs = acc.most_confused(card.classes, 5)
    if pairs:
        console.print("most confused (true -> predicted): "
                      + "; ".join(f"{t} -> {p}: {n}" for t, p, n in pairs))

