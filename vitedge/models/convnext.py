"""ConvNeXt (Liu et al., 2022) and ConvNeXt V2 with Global Response Normalization (Woo et al., 2023).

stem: conv 4x4/4 + LayerNorm -> 4 stages of blocks, stages joined by LayerNorm + conv 2x2/2 ->
global average pool -> LayerNorm -> linear head. A block is: depthwise conv 7x7 -> channels-last
LayerNorm -> Linear 4x -> GELU -> [GRN, V2] -> Linear -> [layer scale, V1] -> stochastic depth,
added to the input. The built-in small-input variant (`convnext-zepto`: dims 32-256, 1.9M
parameters, for 32-64 px) keeps the 4x4 stem: at 64 px its stages run at 16, 8, 4 and 2 px.
A 2x2 stem (`stem_patch=2`) keeps twice the resolution in every stage but trained 5.7x slower
on 2 CPU cores (97 vs 552 images/s), too slow for the built-in's minutes-long training budget.
Shapes below are for `convnext-zepto` at 64 px.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vitedge.calib.preprocess import PreprocessSpec
from vitedge.models.layers import DropPath
from vitedge.models.registry import register_model


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an NCHW tensor (permute to channels-last and back)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GRN(nn.Module):
    """Global Response Normalization on channels-last input (N, H, W, C)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)  # (N, 1, 1, C)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + self.eps)
        return self.gamma * (x * nx) + self.beta + x


class Block(nn.Module):
    def __init__(self, dim: int, drop_path: float, layer_scale_init: float, grn: bool):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN(4 * dim) if grn else nn.Identity()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = (
            nn.Parameter(layer_scale_init * torch.ones(dim)) if layer_scale_init > 0 else None
        )
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 32, 16, 16)
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)  # (N, 16, 16, 32) channels-last
        x = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(x)))))  # (N, 16, 16, 32)
        if self.gamma is not None:
            x = self.gamma * x
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))


class ConvNeXt(nn.Module):
    def __init__(
        self,
        img_size: int = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        stem_patch: int = 4,
        drop_path_rate: float = 0.0,
        layer_scale_init: float = 1e-6,
        grn: bool = False,
    ):
        super().__init__()
        from vitedge.errors import UsageError

        if img_size % (stem_patch * 8) != 0:
            raise UsageError(
                f"ConvNeXt needs an image size divisible by {stem_patch * 8} "
                f"(stem {stem_patch} x three 2x downsamplings), got {img_size}"
            )
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], kernel_size=stem_patch, stride=stem_patch),
            LayerNorm2d(dims[0], eps=1e-6),
        )
        self.downsample = nn.ModuleList(
            nn.Sequential(LayerNorm2d(dims[i], eps=1e-6), nn.Conv2d(dims[i], dims[i + 1], 2, 2))
            for i in range(len(dims) - 1)
        )
        n = sum(depths)
        rates = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]
        self.stages = nn.ModuleList()
        k = 0
        for depth, dim in zip(depths, dims, strict=True):
            self.stages.append(
                nn.Sequential(*[Block(dim, rates[k + j], layer_scale_init, grn) for j in range(depth)])
            )
            k += depth
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, 64, 64)
        x = self.stages[0](self.stem(x))  # (N, 32, 16, 16)
        for down, stage in zip(self.downsample, self.stages[1:], strict=True):
            x = stage(down(x))  # (N, 64, 8, 8) -> (N, 128, 4, 4) -> (N, 256, 2, 2)
        x = self.norm(x.mean(dim=(2, 3)))  # (N, 256)
        return self.head(x)  # (N, 10)


_IMAGENET = PreprocessSpec(
    (224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 0.875
)
_SMALL = PreprocessSpec((64, 64), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear", 1.0)

_SIZES = {
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "pico": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
}


def convnext(**config: object) -> ConvNeXt:
    return ConvNeXt(**config)  # type: ignore[arg-type]


for _size, (_depths, _dims) in _SIZES.items():
    register_model(
        f"convnext-{_size}", family="convnext", preprocess=_IMAGENET,
        description=f"ConvNeXt-{_size} at 224, dims {_dims[0]}-{_dims[-1]}",
        img_size=224, num_classes=1000, depths=_depths, dims=_dims, stem_patch=4,
        drop_path_rate=0.0, layer_scale_init=1e-6, grn=False,
    )(convnext)
    register_model(
        f"convnextv2-{_size}", family="convnext", preprocess=_IMAGENET,
        description=f"ConvNeXt V2-{_size} (GRN, no layer scale) at 224",
        img_size=224, num_classes=1000, depths=_depths, dims=_dims, stem_patch=4,
        drop_path_rate=0.0, layer_scale_init=0.0, grn=True,
    )(convnext)

register_model(
    "convnext-zepto", family="convnext", preprocess=_SMALL,
    description="small-input ConvNeXt for 32-64 px: dims 32-256, depths 2-2-4-2 (~1.9M params); built-in",
    builtin_weights="convnext-zepto.safetensors",
    img_size=64, num_classes=10, depths=(2, 2, 4, 2), dims=(32, 64, 128, 256), stem_patch=4,
    drop_path_rate=0.0, layer_scale_init=1e-6, grn=False,
)(convnext)
