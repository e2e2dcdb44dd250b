"""The seed Vision Transformer (Dosovitskiy et al., 2020), exactly as the lesson defines it.

PatchEmbedding (one Conv2d, kernel = stride = patch) -> prepend a learned [CLS] token -> add a
learned position embedding -> pre-LN blocks `x = x + MSA(LN(x)); x = x + MLP(LN(x))` built on
`nn.MultiheadAttention(batch_first=True)` -> LayerNorm on the CLS output -> linear head.
Shapes below are for the lesson's tiny configuration (64 px, patch 16, dim 192, 10 classes).

DeiT (Touvron et al., 2021) is the same architecture with a different training recipe, so the
DeiT entries are configurations of this module.
"""

from __future__ import annotations

import torch
from torch import nn

from vitedge.calib.preprocess import PreprocessSpec
from vitedge.errors import UsageError
from vitedge.models.layers import DropPath
from vitedge.models.registry import register_model


class PatchEmbedding(nn.Module):
    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        if img_size % patch_size != 0:
            raise UsageError(
                f"image size {img_size} is not divisible by patch size {patch_size}; "
                f"use an image size that is a multiple of {patch_size}"
            )
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (N, 192, 4, 4)
        return x.flatten(2).transpose(1, 2)  # (N, 16, 192)


class Block(nn.Module):
    """Pre-LN transformer encoder block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 17, 192)
        y = self.norm1(x)
        x = x + self.drop_path(self.attn(y, y, y, need_weights=False)[0])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    def __init__(
        self,
        img_size: int = 64,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 10,
        embed_dim: int = 192,
        depth: int = 6,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise UsageError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.patch_embed = PatchEmbedding(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(
            *[Block(embed_dim, num_heads, mlp_ratio, rates[i]) for i in range(depth)]
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_linear)

    @staticmethod
    def _init_linear(m: nn.Module) -> None:
        # timm's ViT init (truncated normal, std 0.02, zero bias): trains markedly faster than
        # PyTorch's default Kaiming-uniform for transformers trained from scratch.
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, 64, 64)
        x = self.patch_embed(x)  # (N, 16, 192)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (N, 1, 192)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (N, 17, 192)
        x = self.blocks(x)  # (N, 17, 192)
        x = self.norm(x[:, 0])  # (N, 192)
        return self.head(x)  # (N, 10)


_SMALL = PreprocessSpec((64, 64), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear", 1.0)
_IMAGENET = PreprocessSpec((224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.9)
_DEIT = PreprocessSpec(
    (224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 0.875
)


@register_model(
    "vit-tiny",
    family="vit",
    preprocess=_SMALL,
    description="the seed ViT: 64 px, patch 16, dim 192, depth 6, 3 heads (~2.8M params); built-in",
    builtin_weights="vit-tiny.safetensors",
    img_size=64, patch_size=16, num_classes=10, embed_dim=192, depth=6, num_heads=3,
    drop_path_rate=0.0,
)
@register_model(
    "vit-s16", family="vit", preprocess=_IMAGENET, description="ViT-S/16 at 224 (~22M params)",
    img_size=224, patch_size=16, num_classes=1000, embed_dim=384, depth=12, num_heads=6,
    drop_path_rate=0.0,
)
@register_model(
    "vit-b16", family="vit", preprocess=_IMAGENET, description="ViT-B/16 at 224 (~86M params)",
    img_size=224, patch_size=16, num_classes=1000, embed_dim=768, depth=12, num_heads=12,
    drop_path_rate=0.0,
)
@register_model(
    "deit-tiny", family="vit", preprocess=_DEIT, description="DeiT-Ti/16 at 224 (~5.7M params)",
    img_size=224, patch_size=16, num_classes=1000, embed_dim=192, depth=12, num_heads=3,
    drop_path_rate=0.0,
)
@register_model(
    "deit-small", family="vit", preprocess=_DEIT, description="DeiT-S/16 at 224 (~22M params)",
    img_size=224, patch_size=16, num_classes=1000, embed_dim=384, depth=12, num_heads=6,
    drop_path_rate=0.0,
)
def vision_transformer(**config: object) -> VisionTransformer:
    return VisionTransformer(**config)  # type: ignore[arg-type]
