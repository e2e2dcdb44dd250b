"""`vitedge pretrain` (self-supervised: MAE) and `vitedge probe` (linear probe of frozen features)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vitedge.cli.common import (
    ArchOpt,
    ImgSizeOpt,
    ModelArg,
    RandomInitOpt,
    WeightsOpt,
    console,
    load_model_from_cli,
)
from vitedge.cli.main import app
from vitedge.errors import UsageError

DataOpt = Annotated[
    str, typer.Option("--data", help="'synthetic' (shapes10), an image folder, or an IDX data set "
                                     "directory (e.g. /usr/share/datasets/fashion-mnist).")
]


@app.command("pretrain")
def pretrain_command(
    method: Annotated[str, typer.Option(help="Self-supervised method: mae.")] = "mae",
    model: Annotated[str, typer.Option("--model", help="A ViT-family registry name (vit-tiny, vit-s16, deit-tiny, ...).")] = "vit-tiny",
    data: DataOpt = "synthetic",
    out: Annotated[Path | None, typer.Option(help="Encoder checkpoint to write (.safetensors).")] = None,
    epochs: Annotated[int, typer.Option(help="Pretraining epochs.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, betas 0.9/0.95).")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.05,
    warmup_epochs: Annotated[float, typer.Option(help="Linear warm-up length.")] = 1.0,
    mask_ratio: Annotated[float, typer.Option(help="Fraction of patches hidden per image.")] = 0.75,
    decoder_dim: Annotated[int, typer.Option(help="Decoder width.")] = 128,
    decoder_depth: Annotated[int, typer.Option(help="Decoder transformer blocks.")] = 2,
    norm_pix_loss: Annotated[bool, typer.Option(help="Per-patch normalised pixel targets.")] = True,
    augment: Annotated[str, typer.Option(help="auto (none for synthetic, flip+shift otherwise) | light | none.")] = "auto",
    num_train: Annotated[int | None, typer.Option(help="Training images (synthetic: how many to draw; others: a seeded subset).")] = None,
    img_size: ImgSizeOpt = None,
    seed: Annotated[int, typer.Option(help="Seed (data order, masks, augmentation, init).")] = 0,
    threads: Annotated[int | None, typer.Option(help="torch threads (default: all cores).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run of the same options.")] = False,
) -> None:
    """Self-supervised pretraining of a ViT encoder (MAE); labels are not used.

    Writes the encoder as a checkpoint that `vitedge train --init` fine-tunes and `vitedge probe`
    measures, plus a picture of reconstructions next to it (<out>.recon.png)."""
    from vitedge.train.mae import PretrainConfig, pretrain

    out = out or Path(f"{model.replace(':', '-')}-{method}.safetensors")
    if out.suffix != ".safetensors":
        raise UsageError(f"--out {out}: checkpoints are written as .safetensors")
    cfg = PretrainConfig(
        model=model, data=data, out=str(out), method=method, epochs=epochs, batch_size=batch_size,
        lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs, mask_ratio=mask_ratio,
        decoder_dim=decoder_dim, decoder_depth=decoder_depth, norm_pix_loss=norm_pix_loss,
        augment=augment, num_train=num_train, img_size=img_size, seed=seed, threads=threads,
        resume=resume,
    )
    result = pretrain(cfg)
    console.print(f"wrote {result.checkpoint} (encoder) and {result.picture} in "
                  f"{result.seconds / 60:.1f} min; masked-patch loss on validation images "
                  f"{result.card.metrics['val_recon_loss']:.4f}")


@app.command("probe")
def probe_command(
    model: ModelArg,
    data: DataOpt = "synthetic",
    features: Annotated[str, typer.Option(help="mean: ViT patch tokens after the final norm, averaged "
                                                "(CNN: its pooled features) | cls: the ViT's CLS token "
                                                "after the final norm (what its head reads).")] = "mean",
    num_train: Annotated[int | None, typer.Option(help="Fit on a seeded subset of N training images.")] = None,
    eval_n: Annotated[int | None, typer.Option("--eval-n", help="Test on a seeded subset of N test images.")] = None,
    seed: Annotated[int, typer.Option(help="Seed (splits and subsets).")] = 0,
    threads: Annotated[int | None, typer.Option(help="torch threads (default: all cores).")] = None,
    arch: ArchOpt = None,
    weights: WeightsOpt = None,
    random_init: RandomInitOpt = False,
    img_size: ImgSizeOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON.")] = None,
) -> None:
    """Linear probe: frozen features + logistic regression, top-1 on the test split."""
    import torch

    from vitedge.train.probe import linear_probe

    if threads:
        torch.set_num_threads(threads)
    loaded = load_model_from_cli(model, arch, weights, None, random_init, img_size, None)
    r = linear_probe(loaded.module, loaded.card.preprocess, data, features, seed, num_train, eval_n)
    console.print(f"[bold]{loaded.card.arch}[/] ({loaded.card.source}) linear probe on {features} "
                  f"features (dim {r.dim}): top-1 {r.top1:.2%}  top-5 {r.top5:.2%} on "
                  f"{r.test_description}; fitted on {r.n_train} images, L2 {r.l2:g} "
                  f"(validation top-1 {r.val_top1:.2%}), {r.seconds:.0f} s")
    if json_out is not None:
        from vitedge.fsutil import atomic_file

        with atomic_file(json_out) as tmp:
            Path(tmp).write_text(json.dumps({"model": str(model), "source": loaded.card.source,
                                             **r.to_dict()}, indent=2) + "\n")
