"""Training with a DeiT-style recipe (Touvron et al., 2021), sized for a 2-core CPU.

AdamW + linear warm-up + cosine decay, label smoothing, stochastic depth, light augmentation
(flips, pad-and-crop translation), optional mixup/cutmix. Deterministic under a seed and
resumable: every epoch's randomness is derived from (seed, epoch), and a resume state (model,
optimiser, epoch, history) is written after each epoch with torch tensors and plain Python
only, so it reloads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vitedge.calib.datasets import train_val_data
from vitedge.card import ModelCard
from vitedge.errors import InputError, UsageError
from vitedge.fsutil import atomic_file
from vitedge.models import checkpoint, timm_models
from vitedge.models.resolve import LoadedModel, new_card, preprocess_for
from vitedge.train.evaluate import evaluate


@dataclass(frozen=True)
class TrainConfig:
    model: str = "vit-tiny"
    data: str = "synthetic"
    out: str = "vit-tiny.safetensors"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    drop_path: float = 0.0
    mixup: float = 0.0  # Beta(a, a) mixing; 0 = off
    cutmix: float = 0.0
    # "auto": none for the synthetic set (its generator already randomises position, scale,
    # rotation and colour, and extra augmentation only slowed convergence in our runs),
    # light (flip + 4 px translation) for image folders.
    augment: str = "auto"  # auto | light | none
    num_train: int | None = None  # synthetic: images drawn; IDX: a seeded subset of the training part
    img_size: int | None = None
    init: str | None = None  # fine-tune from these weights (timm or vitedge checkpoint)
    seed: int = 0
    threads: int | None = None
    resume: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UsageError("--epochs must be >= 1")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be >= 1")
        if self.lr <= 0:
            raise UsageError("--lr must be > 0")
        if self.augment not in ("auto", "light", "none"):
            raise UsageError("--augment must be auto, light or none")

    @property
    def light_augment(self) -> bool:
        return self.augment == "light" or (self.augment == "auto" and self.data != "synthetic")


@dataclass
class TrainResult:
    checkpoint: Path
    card: ModelCard
    history: list[dict[str, float]]
    seconds: float


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # No decay on norms, biases, position embeddings and tokens (the DeiT / MAE convention).
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith((".bias", "pos_embed", "cls_token", "dist_token", "mask_token"))
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step: int, total: int, warmup: int, cfg: TrainConfig) -> float:
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def _augment(x: torch.Tensor, cfg: TrainConfig, g: torch.Generator) -> torch.Tensor:
    """x: (B, 3, H, W) float normalised. Light augmentation: h-flip and up to 4 px translation."""
    if not cfg.light_augment:
        return x
    b = x.shape[0]
    flip = torch.rand(b, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    p = 4
    h, w = x.shape[2:]
    padded = F.pad(x, (p, p, p, p), mode="reflect")
    dx = torch.randint(0, 2 * p + 1, (b,), generator=g)
    dy = torch.randint(0, 2 * p + 1, (b,), generator=g)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])


def _mix(x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, g: torch.Generator, n_cls: int):
    """Mixup (alpha=cfg.mixup) or CutMix (alpha=cfg.cutmix), one per batch, soft targets out."""
    target = F.one_hot(y, n_cls).float()
    use_cutmix = cfg.cutmix > 0 and (cfg.mixup == 0 or torch.rand(1, generator=g).item() < 0.5)
    alpha = cfg.cutmix if use_cutmix else cfg.mixup
    if alpha <= 0:
        return x, target
    lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=g))).beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=g)
    if use_cutmix:
        h, w = x.shape[2:]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(torch.randint(0, h, (1,), generator=g)), int(torch.randint(0, w, (1,), generator=g))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * target + (1 - lam) * target[perm]


def _prepare_model(cfg: TrainConfig, classes: tuple[str, ...]) -> LoadedModel:
    """A fresh model (or one initialised from cfg.init) with a head for `classes`."""
    overrides = dict(cfg.overrides)
    overrides["num_classes"] = len(classes)
    if cfg.img_size is not None:
        overrides["img_size"] = cfg.img_size
    overrides.setdefault("drop_path_rate", cfg.drop_path)
    module, card = new_card(cfg.model, overrides, classes, source="vitedge train")
    if cfg.init:
        init = Path(cfg.init)
        own_card = checkpoint.read_card(init) if init.suffix == ".safetensors" else None
        state = checkpoint.read_state_dict(init)
        if cfg.model.startswith(timm_models.PREFIX):
            state = timm_models.adapt_state_dict(state, module, drop_head=True)
        else:
            own = module.state_dict()
            # Fine-tuning onto different classes: keep the fresh head where shapes differ.
            state = {k: (own[k] if k in own and v.shape != own[k].shape and k.startswith("head.") else v)
                     for k, v in state.items()}
        if own_card is not None and own_card.arch != cfg.model:
            raise UsageError(f"--init {init} is a {own_card.arch} checkpoint, not {cfg.model}")
        checkpoint.load_weights(module, state, init)
        card = card.with_(source=f"vitedge train (init {init.name})")
    return LoadedModel(module, card)


def resume_state(state_path: Path, config_key: Any, model: torch.nn.Module, opt: torch.optim.Optimizer,
                 what: str) -> tuple[int, list[Any], float]:
    """Load a per-epoch resume state into `model` and `opt`: (next epoch, history, seconds so
    far). Refused when it was written with other options (the run would not be the same run)."""
    if not state_path.exists():
        raise InputError(f"{state_path}: no {what} state to resume from (drop --resume)")
    saved = torch.load(state_path, map_location="cpu", weights_only=True)
    if saved["config"] != config_key:
        raise UsageError(f"{state_path}: was written with different {what} options; "
                         "resume with the same options or drop --resume")
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    return saved["epoch"], saved["history"], saved["seconds"]


def train(cfg: TrainConfig) -> TrainResult:
    from rich.progress import TextColumn

    from vitedge.progress import make_progress, stderr_console

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    spec = preprocess_for(cfg.model, {"img_size": cfg.img_size} if cfg.img_size else {})
    train_set, val_set = train_val_data(cfg.data, spec, cfg.seed, cfg.num_train)
    loaded = _prepare_model(cfg, train_set.classes)
    model, card = loaded.module, loaded.card
    x_train = torch.from_numpy(train_set.as_inputs(spec))  # (N, 3, H, W), a fresh array
    y_train = torch.from_numpy(np.array(train_set.labels))

    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    out = Path(cfg.out)
    state_path = out.with_name(out.name + ".train-state.pt")
    start_epoch, history, elapsed = 0, [], 0.0
    if cfg.resume:
        start_epoch, history, elapsed = resume_state(state_path, _config_key(cfg), model, opt, "training")
        stderr_console.print(f"resuming {out} at epoch {start_epoch + 1}/{cfg.epochs}")

    n_cls = len(train_set.classes)
    columns = (TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("acc {task.fields[acc]:.1%}"))
    t0 = time.perf_counter()
    with make_progress(*columns) as progress:
        for epoch in range(start_epoch, cfg.epochs):
            # All randomness of an epoch comes from (seed, epoch): resuming replays it exactly.
            g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            torch.manual_seed(cfg.seed * 100_003 + epoch)
            perm = torch.randperm(len(train_set), generator=g)
            task = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch,
                                     loss=float("nan"), acc=0.0)
            model.train()
            seen, correct, loss_sum = 0, 0, 0.0
            for i in range(steps_per_epoch):
                step = epoch * steps_per_epoch + i
                for group in opt.param_groups:
                    group["lr"] = _lr_at(step, total, warmup, cfg)
                idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
                x, y = _augment(x_train[idx], cfg, g), y_train[idx]
                x, target = _mix(x, y, cfg, g, n_cls)
                logits = model(x)
                loss = F.cross_entropy(logits, target, label_smoothing=cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += len(y)
                correct += int((logits.argmax(1) == y).sum())
                loss_sum += loss.item() * len(y)
                progress.update(task, advance=1, loss=loss_sum / seen, acc=correct / seen)
            val = evaluate(model, val_set, spec)
            history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen,
                            "train_acc": correct / seen, "val_top1": val.top1})
            progress.update(task, description=f"epoch {epoch + 1}/{cfg.epochs} val {val.top1:.1%}")
            if not progress.console.is_terminal:  # logs (CI) get one line per epoch
                progress.console.print(
                    f"epoch {epoch + 1}/{cfg.epochs}: loss {loss_sum / seen:.3f} "
                    f"train {correct / seen:.1%} val {val.top1:.1%}")
            _save_state(state_path, model, opt, epoch + 1, history,
                        elapsed + time.perf_counter() - t0, cfg)
    seconds = elapsed + time.perf_counter() - t0

    metrics: dict[str, Any] = {"val_top1": history[-1]["val_top1"] if history else None,
                               "train_seconds": round(seconds, 1),
                               "threads": torch.get_num_threads()}
    from vitedge.calib import idx as idx_format

    if str(cfg.data) == "synthetic" or idx_format.is_idx_dir(cfg.data):  # data sets with a test split
        from vitedge.calib.datasets import eval_data

        test = evaluate(model, eval_data(str(cfg.data), spec, train_set.classes, seed=cfg.seed), spec)
        metrics.update(test_top1=test.top1, test_top5=test.top5)
    recipe = {k: v for k, v in asdict(cfg).items() if k not in ("out", "resume", "threads")}
    card = card.with_(metrics=metrics, training={"recipe": recipe, "history": history,
                                                 "data": train_set.description})
    checkpoint.save_checkpoint(out, model.eval(), card)
    state_path.unlink(missing_ok=True)
    return TrainResult(out, card, history, seconds)


def _config_key(cfg: TrainConfig) -> str:
    import json

    d = {k: v for k, v in asdict(cfg).items() if k not in ("resume", "threads")}
    return json.dumps(d, sort_keys=True, default=str)


def _save_state(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, epoch: int,
                history: list[dict[str, float]], seconds: float, cfg: TrainConfig) -> None:
    with atomic_file(path) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                    "history": history, "seconds": seconds, "config": _config_key(cfg)}, tmp)

