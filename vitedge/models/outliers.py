"""Function-preserving activation-outlier injection, to stress-test quantisation.

Real large ViTs carry a few activation channels far larger than the rest (LayerNorm-scale
outliers feeding the MLP, outlier dimensions in queries/keys). They break per-tensor INT8
activation quantisation: the scale is set by the outlier and every other channel loses its
resolution. These transforms plant such outliers in a trained seed ViT *without changing its
fp32 function* (up to float rounding), so a checkpoint can be made that genuinely needs
accuracy-aware fallback while its reference accuracy is unchanged:

- `mlp`: in block b, LayerNorm-2's gain and bias for channels C are multiplied by `scale` and
  the first MLP Linear's input columns C divided by it: fc1's input gets outlier channels.
- `qk`: in block b, the query projection rows for channels C are multiplied by `scale` and the
  key rows divided by it: q.k is unchanged, but the attention's query input gets outliers and the
  key input tiny channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vitedge.models.vit import VisionTransformer


@torch.no_grad()
def inject_mlp_outliers(model: VisionTransformer, block: int, channels: Sequence[int], scale: float) -> None:
    blk = model.blocks[block]
    idx = torch.as_tensor(list(channels))
    blk.norm2.weight[idx] *= scale
    blk.norm2.bias[idx] *= scale
    blk.mlp[0].weight[:, idx] /= scale


@torch.no_grad()
def inject_qk_outliers(model: VisionTransformer, block: int, channels: Sequence[int], scale: float) -> None:
    attn = model.blocks[block].attn
    d = attn.embed_dim
    idx = torch.as_tensor(list(channels))
    attn.in_proj_weight[idx] *= scale  # query rows
    attn.in_proj_bias[idx] *= scale
    attn.in_proj_weight[d + idx] /= scale  # key rows
    attn.in_proj_bias[d + idx] /= scale


def inject_outliers(model: VisionTransformer, spec: Sequence[tuple[str, int, Sequence[int], float]]) -> None:
    """Apply (kind, block, channels, scale) injections, kind in {"mlp", "qk"}."""
    for kind, block, channels, scale in spec:
        if kind == "mlp":
            inject_mlp_outliers(model, block, channels, scale)
        elif kind == "qk":
            inject_qk_outliers(model, block, channels, scale)
        else:
            raise ValueError(f"unknown outlier kind {kind!r}")
