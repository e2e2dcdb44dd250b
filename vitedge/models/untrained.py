"""Random-init models whose logits do not depend on the image, given the statistics training would.

transformers' `from_config` init of some BatchNorm models says nothing: LeViT's BatchNorm keeps
running statistics (0, 1) that do not match its activations, and MobileViT/MobileViTV2 draw the
BatchNorm scales from N(0, 0.02), so thirty layers shrink every activation to zero. Measured on
the zoo's configs, the logits' spread across 16 random images was 7.7e-10 (LeViT) and exactly 0
(MobileViT, MobileViTV2), against 1e-2..2e-1 for every other family. An INT8 or FP16 artifact of
such a model is rounding of nothing: its zoo cells failed on noise (SQNR 0, cosine 0.58), which
says nothing about the target. A trained network's BatchNorm holds the statistics of its own
activations, so that is what a random-init benchmark model gets here, only when its logits carry
no signal: each BatchNorm back to identity scale/shift, its running statistics measured on
seeded synthetic images preprocessed as the model's own processor says. Models with signal are
left as they are (their measured numbers stay comparable); the card and report say when this was
done. Their INT8 artifacts then miss the untrained gate in every runtime alike (docs/zoo.md).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from vitedge.calib.preprocess import PreprocessSpec

SIGNAL_MIN = 1e-3  # std across images of the logits (centred per class); see the module docstring
STAT_IMAGES, STAT_BATCH = 128, 32


def statistics_images(spec: PreprocessSpec) -> torch.Tensor:
    """The statistics' images: vitedge's synthetic shapes10 train split (seeded), preprocessed as
    the model's own processor says: the kind of image that judges a random-init export by default
    (the test split, disjoint). Measured with N(0,1) noise instead, LeViT's statistics missed those
    images: a channel with a variance of 2e-4 on noise amplified fp32 rounding to 1e-3 on them."""
    from vitedge.calib.source import load_calibration

    return torch.from_numpy(load_calibration("synthetic", spec, STAT_IMAGES, seed=0).inputs)


def logit_spread(module: torch.nn.Module, images: torch.Tensor) -> float:
    """Std across images of each class's logit (0: the output ignores the image)."""
    with torch.no_grad():
        logits = torch.cat([module(images[i:i + STAT_BATCH]) for i in range(0, len(images), STAT_BATCH)])
    return float((logits - logits.mean(0)).std())


def give_signal(module: torch.nn.Module, spec: PreprocessSpec) -> dict[str, Any] | None:
    """Fix a signal-less random-init BatchNorm model in place (module docstring), leaving it in
    eval mode; what was done, for the card, or None when the model has signal or no BatchNorm to fix."""
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        return None
    images = statistics_images(spec)
    before = logit_spread(module, images)
    if before >= SIGNAL_MIN:
        return None
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over every batch below, not an EMA
        if bn.affine:
            torch.nn.init.ones_(bn.weight)
            torch.nn.init.zeros_(bn.bias)
    module.eval()  # dropout and the rest stay in inference mode; only the statistics update
    for bn in norms:
        bn.train()
    with torch.no_grad():
        for i in range(0, len(images), STAT_BATCH):
            module(images[i:i + STAT_BATCH])
    for bn, momentum in zip(norms, momenta, strict=True):
        bn.momentum = momentum  # the layer's own, for anyone who trains it further
    module.eval()
    after = logit_spread(module, images)
    return {"logit_spread_before": before, "logit_spread_after": after, "batchnorm_layers": len(norms),
            "what": f"the random init's logits did not depend on the image (spread {before:.1e}); its "
                    f"{len(norms)} BatchNorm layers were set to identity scale/shift and their statistics "
                    f"measured on {STAT_IMAGES} synthetic shapes10 train images, as training leaves them "
                    f"(spread now {after:.2g})"}
