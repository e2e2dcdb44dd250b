"""Masked-autoencoder pretraining (He et al., 2022, "Masked Autoencoders Are Scalable Vision
Learners") for the ViT family, sized for a 2-core CPU.

The model, its masks and the reconstruction picture are in vitedge.train.mae_model.

The trainer's guarantees hold: all randomness of an epoch (data order, augmentation, masks) is
derived from (seed, epoch); a resume state is written after every epoch and loads with
`torch.load(weights_only=True)`; the checkpoint is written atomically at the end. The checkpoint
holds the encoder as a complete model of the same architecture (its classification head is
untrained), with a model card, so `vitedge train --init CKPT` fine-tunes it and `vitedge probe
CKPT` measures it. A picture of reconstructions (original / masked / reconstructed rows) is
written next to it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vitedge.card import ModelCard
from vitedge.errors import UsageError
from vitedge.fsutil import atomic_file
from vitedge.train.mae_model import (
    MaskedAutoencoder,
    check_encoder,
    save_reconstructions,
    sincos_pos_embed,
)
from vitedge.train.trainer import param_groups, resume_state

METHODS = ("mae",)


# -- training -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PretrainConfig:
    model: str = "vit-tiny"
    data: str = "synthetic"
    out: str = "vit-tiny-mae.safetensors"
    method: str = "mae"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    mask_ratio: float = 0.75
    decoder_dim: int = 128
    decoder_depth: int = 2
    norm_pix_loss: bool = True
    # auto: none for shapes10 (its generator already randomises position, scale, colour),
    # light (h-flip + up to 4 px translation) for everything else.
    augment: str = "auto"
    num_train: int | None = None
    img_size: int | None = None
    seed: int = 0
    threads: int | None = None
    resume: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"--method {self.method}: unknown; available: {', '.join(METHODS)}")
        if self.epochs < 1:
            raise UsageError("--epochs must be >= 1")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be >= 1")
        if self.lr <= 0:
            raise UsageError("--lr must be > 0")
        if not 0.0 < self.mask_ratio < 1.0:
            raise UsageError("--mask-ratio must be between 0 and 1")
        if self.decoder_dim < 4 or self.decoder_depth < 1:
            raise UsageError("--decoder-dim must be >= 4 and --decoder-depth >= 1")
        if self.augment not in ("auto", "light", "none"):
            raise UsageError("--augment must be auto, light or none")

    @property
    def light_augment(self) -> bool:
        return self.augment == "light" or (self.augment == "auto" and self.data != "synthetic")


@dataclass
class PretrainResult:
    checkpoint: Path
    picture: Path
    card: ModelCard
    history: list[dict[str, float]]
    seconds: float


def _lr_at(step: int, total: int, warmup: int, cfg: PretrainConfig) -> float:
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """h-flip + up to 4 px reflect-padded translation, per image, from generator `g`."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    p = 4
    padded = F.pad(x, (p, p, p, p), mode="reflect")
    dx = torch.randint(0, 2 * p + 1, (b,), generator=g)
    dy = torch.randint(0, 2 * p + 1, (b,), generator=g)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])


def build(cfg: PretrainConfig, classes: tuple[str, ...]) -> tuple[MaskedAutoencoder, ModelCard]:
    """The encoder (a fresh `cfg.model` with a head for `classes`) wrapped in an MAE."""
    from vitedge.models.resolve import new_card

    overrides = dict(cfg.overrides)
    overrides["num_classes"] = len(classes)
    if cfg.img_size is not None:
        overrides["img_size"] = cfg.img_size
    encoder: Any
    encoder, card = new_card(cfg.model, overrides, classes, source="vitedge pretrain (mae)")
    check_encoder(encoder, cfg.model)
    h, w = card.preprocess.input_size
    if h != w:
        raise UsageError(f"{cfg.model}: MAE pretraining here needs square inputs, not {h}x{w}")
    mae = MaskedAutoencoder(encoder, h, cfg.decoder_dim, cfg.decoder_depth, None,
                            cfg.mask_ratio, cfg.norm_pix_loss)
    if encoder.pos_embed.requires_grad:
        # Start the (learned) encoder position embedding at the paper's fixed sin-cos values:
        # with only a quarter of the patches visible, position is the encoder's main cue, and
        # a structured start converges much faster than trunc-normal noise on a short budget.
        with torch.no_grad():
            encoder.pos_embed.copy_(sincos_pos_embed(encoder.pos_embed.shape[-1], mae.grid))
    return mae, card


@torch.inference_mode()
def reconstruction_loss(mae: MaskedAutoencoder, x: torch.Tensor, seed: int, batch: int = 256) -> float:
    """Mean masked loss on `x` under fixed (seeded) masks: comparable across epochs and runs."""
    was = mae.training
    mae.eval()
    g = torch.Generator().manual_seed(seed)
    total, n = 0.0, 0
    for i in range(0, len(x), batch):
        loss, _, _ = mae(x[i : i + batch], g)
        total += float(loss) * len(x[i : i + batch])
        n += len(x[i : i + batch])
    mae.train(was)
    return total / max(n, 1)


def pretrain(cfg: PretrainConfig) -> PretrainResult:
    from rich.progress import TextColumn

    from vitedge.calib.datasets import train_val_data
    from vitedge.models import checkpoint
    from vitedge.models.resolve import preprocess_for
    from vitedge.progress import make_progress, stderr_console

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    spec = preprocess_for(cfg.model, {"img_size": cfg.img_size} if cfg.img_size else {})
    train_set, val_set = train_val_data(cfg.data, spec, cfg.seed, cfg.num_train)  # labels unused
    mae, card = build(cfg, train_set.classes)
    x_train = torch.from_numpy(train_set.as_inputs(spec))
    # A fixed slice of the validation images, for a comparable reconstruction loss per epoch.
    x_val = torch.from_numpy(val_set.subset(np.arange(min(len(val_set), 1000))).as_inputs(spec))

    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    opt = torch.optim.AdamW(param_groups(mae, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95))
    out = Path(cfg.out)
    state_path = out.with_name(out.name + ".pretrain-state.pt")
    start_epoch, history, elapsed = 0, [], 0.0
    if cfg.resume:
        start_epoch, history, elapsed = resume_state(state_path, _config_key(cfg), mae, opt, "pretraining")
        stderr_console.print(f"resuming {out} at epoch {start_epoch + 1}/{cfg.epochs}")

    t0 = time.perf_counter()
    with make_progress(TextColumn("loss {task.fields[loss]:.3f}")) as progress:
        for epoch in range(start_epoch, cfg.epochs):
            # All randomness of an epoch (order, augmentation, masks) comes from (seed, epoch).
            g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            torch.manual_seed(cfg.seed * 100_003 + epoch)
            perm = torch.randperm(len(x_train), generator=g)
            task = progress.add_task(f"mae epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch,
                                     loss=float("nan"))
            mae.train()
            seen, loss_sum = 0, 0.0
            for i in range(steps_per_epoch):
                step = epoch * steps_per_epoch + i
                for group in opt.param_groups:
                    group["lr"] = _lr_at(step, total, warmup, cfg)
                x = x_train[perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]]
                if cfg.light_augment:
                    x = _augment(x, g)
                loss, _, _ = mae(x, g)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += len(x)
                loss_sum += loss.item() * len(x)
                progress.update(task, advance=1, loss=loss_sum / seen)
            val_loss = reconstruction_loss(mae, x_val, cfg.seed)
            history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "val_loss": val_loss})
            progress.update(task, description=f"mae epoch {epoch + 1}/{cfg.epochs} val {val_loss:.3f}")
            if not progress.console.is_terminal:  # logs (CI) get one line per epoch
                progress.console.print(f"mae epoch {epoch + 1}/{cfg.epochs}: loss {loss_sum / seen:.4f} "
                                       f"val {val_loss:.4f}")
            _save_state(state_path, mae, opt, epoch + 1, history,
                        elapsed + time.perf_counter() - t0, cfg)
    seconds = elapsed + time.perf_counter() - t0

    recipe = {k: v for k, v in asdict(cfg).items() if k not in ("out", "resume", "threads")}
    card = card.with_(
        metrics={"val_recon_loss": history[-1]["val_loss"], "train_seconds": round(seconds, 1),
                 "threads": torch.get_num_threads()},
        training={"method": "mae", "recipe": recipe, "history": history, "data": train_set.description,
                  "head": "untrained: MAE trains the encoder only; fine-tune with "
                          "`vitedge train --init` or measure with `vitedge probe`"},
    )
    picture = out.with_name(out.stem + ".recon.png")
    save_reconstructions(mae, val_set.images[:8], spec, picture, cfg.seed)
    checkpoint.save_checkpoint(out, mae.encoder.eval(), card)
    state_path.unlink(missing_ok=True)
    return PretrainResult(out, picture, card, history, seconds)


def _config_key(cfg: PretrainConfig) -> str:
    d = {k: v for k, v in asdict(cfg).items() if k not in ("resume", "threads")}
    return json.dumps(d, sort_keys=True, default=str)


def _save_state(path: Path, mae: nn.Module, opt: torch.optim.Optimizer, epoch: int,
                history: list[dict[str, float]], seconds: float, cfg: PretrainConfig) -> None:
    with atomic_file(path) as tmp:
        torch.save({"model": mae.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                    "history": history, "seconds": seconds, "config": _config_key(cfg)}, tmp)
