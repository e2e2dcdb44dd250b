"""Linear probing: how linearly separable a frozen model's features are (top-1 on a test split).

Features (`kind`):
- "mean" (default) - for a ViT the patch tokens after the final LayerNorm, averaged (the CLS
           token left out); for a CNN (ConvNeXt, ResNet) its globally average-pooled features,
           which is what its head reads. MAE's loss never reads the CLS token directly, and on
           shapes10 a short MAE run lifts mean-pooled features well above a random-init encoder
           while its CLS token stays near the random-init level (numbers in the report), so the
           mean is the default view of a pretrained encoder.
- "cls"  - ViT only: the CLS token after the final LayerNorm, exactly what the classification
           head reads (taken with a forward pre-hook on the head).

Classifier: multinomial logistic regression on standardised features, fitted full-batch with
L-BFGS in float64 (a convex problem, so the optimum is unique and the result deterministic, with
no learning rate or epoch count to tune), its L2 strength chosen on a validation split from a
small grid. Chosen over closed-form ridge regression on one-hot targets, which is just as cheap
at these feature widths but optimises squared error rather than the classification likelihood
and typically lands a few points lower, understating the features.

Splits: the test split is never used for fitting or choosing: shapes10 train/val/test; an IDX
data set's training split (90/10 fit/select) and its test split; a folder with DIR/train and
DIR/test (DIR/val, if present, selects; otherwise 10% of DIR/train); a flat class folder is split
70/10/20 under the seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vitedge.calib.datasets import LabelledImages
from vitedge.calib.preprocess import PreprocessSpec
from vitedge.errors import UsageError

FEATURES = ("mean", "cls")
L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2)


@dataclass
class ProbeResult:
    top1: float
    top5: float
    features: str
    dim: int
    l2: float
    val_top1: float
    n_train: int
    n_test: int
    train_description: str
    test_description: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _classifier(module: Any) -> nn.Module:
    if hasattr(module, "get_classifier"):  # timm
        return module.get_classifier()
    for name in ("head", "fc", "classifier"):
        m = getattr(module, name, None)
        if isinstance(m, nn.Module):
            return m
    raise UsageError(f"{type(module).__name__}: no classification head to read features from")


@torch.inference_mode()
def extract_features(module: Any, x: np.ndarray, kind: str = "mean", batch_size: int = 256) -> np.ndarray:
    """(N, 3, H, W) float32 -> (N, D) float32 frozen features (module in eval mode)."""
    if kind not in FEATURES:
        raise UsageError(f"--features {kind}: use one of {', '.join(FEATURES)}")
    module.eval()
    captured: list[torch.Tensor] = []
    is_vit = all(getattr(module, a, None) is not None for a in ("blocks", "norm", "cls_token"))
    if kind == "cls" and not is_vit:
        raise UsageError("--features cls needs a ViT (a CLS token); use --features mean for CNNs")
    if kind == "mean" and is_vit:
        prefix = int(getattr(module, "num_prefix_tokens", 1))

        def grab(m: nn.Module, args: Any, out: torch.Tensor) -> None:
            captured.append(module.norm(out)[:, prefix:].mean(dim=1))

        hook = module.blocks.register_forward_hook(grab)
    else:
        # The head's input: the ViT's normed CLS token, or a CNN's pooled features.
        hook = _classifier(module).register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    run = module
    try:
        out = []
        for i in range(0, len(x), batch_size):
            captured.clear()
            run(torch.from_numpy(x[i : i + batch_size]))
            feats = captured[-1]
            out.append(feats.reshape(len(feats), -1).float().numpy())
    finally:
        hook.remove()
    return np.concatenate(out)


def fit_logistic(feats: np.ndarray, labels: np.ndarray, n_cls: int, l2: float,
                 max_iter: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression, full-batch L-BFGS (float64): weights (D, C), bias (C,)."""
    x = torch.from_numpy(feats).double()
    y = torch.from_numpy(np.array(labels, np.int64))  # a writable copy
    w = torch.zeros(x.shape[1], n_cls, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_cls, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(x @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def _logits(feats: np.ndarray, w: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return (torch.from_numpy(feats).double() @ w + b).numpy()


def probe_splits(data: str, spec: PreprocessSpec, seed: int = 0, num_train: int | None = None,
                 n_test: int | None = None) -> tuple[LabelledImages, LabelledImages, LabelledImages]:
    """(fit, select, test) labelled sets; the test split is disjoint from the other two."""
    from vitedge.calib import idx as idx_format
    from vitedge.calib.datasets import SYNTHETIC, eval_data, folder_images, train_val_data
    from vitedge.calib.folder import scan_folder

    if data == SYNTHETIC or idx_format.is_idx_dir(data):
        fit, select = train_val_data(data, spec, seed, num_train)
        return fit, select, eval_data(data, spec, fit.classes, n_test, seed)
    root = Path(data)
    rng = np.random.default_rng(seed)
    if (root / "train").is_dir() and (root / "test").is_dir():
        train = folder_images(scan_folder(root / "train", labelled=True), spec)
        test = folder_images(scan_folder(root / "test", labelled=True), spec, train.classes)
        if (root / "val").is_dir():
            select = folder_images(scan_folder(root / "val", labelled=True), spec, train.classes)
            fit = train
        else:
            perm = rng.permutation(len(train))
            n_sel = max(1, len(train) // 10)
            fit, select = train.subset(np.sort(perm[n_sel:]), " [fit 90%]"), train.subset(np.sort(perm[:n_sel]), " [select 10%]")
    else:
        everything = folder_images(scan_folder(root, labelled=True), spec)
        if len(everything) < 20:
            raise UsageError(f"{root}: {len(everything)} images are too few to probe (need >= 20)")
        perm = rng.permutation(len(everything))
        n_test_, n_sel = len(everything) // 5, max(1, len(everything) // 10)
        test = everything.subset(np.sort(perm[:n_test_]), " [test 20%]")
        select = everything.subset(np.sort(perm[n_test_ : n_test_ + n_sel]), " [select 10%]")
        fit = everything.subset(np.sort(perm[n_test_ + n_sel :]), " [fit 70%]")
    if num_train is not None and num_train < len(fit):
        fit = fit.subset(np.sort(rng.permutation(len(fit))[:num_train]))
    if n_test is not None and n_test < len(test):
        test = test.subset(np.sort(rng.permutation(len(test))[:n_test]))
    return fit, select, test


def linear_probe(module: nn.Module, spec: PreprocessSpec, data: str, kind: str = "mean",
                 seed: int = 0, num_train: int | None = None, n_test: int | None = None,
                 l2_grid: tuple[float, ...] = L2_GRID) -> ProbeResult:
    from vitedge.verify.metrics import accuracy

    if kind not in FEATURES:  # before any data is read
        raise UsageError(f"--features {kind}: use one of {', '.join(FEATURES)}")
    t0 = time.perf_counter()
    fit, select, test = probe_splits(data, spec, seed, num_train, n_test)
    f_fit, f_sel, f_test = (extract_features(module, s.as_inputs(spec), kind) for s in (fit, select, test))
    # Standardise with the fitting split's statistics: L-BFGS converges in far fewer steps and
    # one L2 grid suits every model, whatever the scale of its features.
    mu, sd = f_fit.mean(0), f_fit.std(0) + 1e-6
    f_fit, f_sel, f_test = ((f - mu) / sd for f in (f_fit, f_sel, f_test))
    n_cls = len(fit.classes)
    best: tuple[float, float, tuple[torch.Tensor, torch.Tensor]] | None = None
    for l2 in l2_grid:
        wb = fit_logistic(f_fit, fit.labels, n_cls, l2)
        val = float((_logits(f_sel, *wb).argmax(1) == select.labels).mean())
        if best is None or val > best[0]:
            best = (val, l2, wb)
    assert best is not None
    val_top1, l2, wb = best
    acc = accuracy(_logits(f_test, *wb).astype(np.float32), test.labels)
    return ProbeResult(acc.top1, acc.top5, kind, f_fit.shape[1], l2, val_top1, len(fit), len(test),
                       fit.description, test.description, time.perf_counter() - t0)
