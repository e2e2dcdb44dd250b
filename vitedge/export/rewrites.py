"""Module rewrites applied before an export: the same maths in a form a runtime takes or runs faster.

A target asks for them by name (`Target.export_rewrites`); ALWAYS are applied for every target.
The ONNX export copies the module, swaps the layers a rewrite knows, and records what it changed
(`ExportInfo.rewrites`); the module-based builds (ExecuTorch, LiteRT, Core ML, AOTInductor)
convert `BuildContext.network()`, the same copy, and their report names the rewrites. The
original module stays the reference every artifact is verified against, so a rewrite that
changed the maths would fail parity, not ship. Each rewrite's reason is at its function:
`patch-fold-as-reshape`, `implicit-broadcast`, `constant-position-index` (transformers layers
the converters rejected), `split-large-depthwise` (XNNPACK's missing large depthwise kernel),
and `convnext-channels-first`:

ConvNeXt blocks compute LayerNorm and the MLP channels-last
(permute to NHWC -> LayerNorm -> Linear -> GELU -> Linear -> permute back), and
`LayerNorm2d` permutes around its LayerNorm. In an NCHW graph every permute is a Transpose,
and OpenVINO's CPU plugin adds a Reorder to and from its blocked layout around each one.
Rewritten channels-first (LayerNorm over dim 1 as mean/variance reductions, the Linears as 1x1
convolutions with the same weights) the graph has no Transpose left. Measured, timm
convnext_tiny at 224 px, batch 1, 2 threads, each in its own process: NNCF INT8 IR 13.4 / 14.8
-> 8.7 / 9.4 ms (two runs), OpenVINO bf16 15.1 -> 11.1 ms; runtime layers: 26 Transposes and 44
Reorders -> 0 and 2. Not for ONNX Runtime's INT8 QDQ (25.9 -> 28.8 ms: its int8 1x1 Conv is
slower than its int8 MatMul), so only the OpenVINO targets ask for it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor without a permute (same weight, bias, eps)."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, float(norm.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(1, keepdim=True)
        var = (centred * centred).mean(1, keepdim=True)
        return centred / torch.sqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


def _conv1x1(linear: nn.Linear) -> nn.Conv2d:
    conv = nn.Conv2d(linear.in_features, linear.out_features, 1, bias=linear.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(linear.weight[:, :, None, None])
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


class _ChannelsFirstMlp(nn.Module):
    """timm's Mlp on NCHW: fc1/fc2 as 1x1 convs, keeping the submodule names (fc1, act, fc2) so
    layer names in reports and keep-float options stay those of the original model."""

    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.fc1, self.act, self.fc2 = _conv1x1(mlp.fc1), mlp.act, _conv1x1(mlp.fc2)
        self.drop1, self.norm, self.drop2 = mlp.drop1, mlp.norm, mlp.drop2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))


class _TimmBlock(nn.Module):
    """timm ConvNeXtBlock (conv_mlp=False), channels-first."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv_dw, self.shortcut, self.drop_path, self.gamma = (block.conv_dw, block.shortcut, block.drop_path,
                                                                   block.gamma)
        self.norm, self.mlp = ChannelsFirstLayerNorm(block.norm), _ChannelsFirstMlp(block.mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.conv_dw(x)))
        if self.gamma is not None:
            y = y.mul(self.gamma.reshape(1, -1, 1, 1))
        return self.drop_path(y) + self.shortcut(x)


class _ChannelsFirstGRN(nn.Module):
    """vitedge.models.convnext.GRN on NCHW (same gamma, beta, eps)."""

    def __init__(self, grn: nn.Module):
        super().__init__()
        self.gamma, self.beta, self.eps = grn.gamma, grn.beta, grn.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
        nx = gx / (gx.mean(dim=1, keepdim=True) + self.eps)
        gamma, beta = self.gamma.permute(0, 3, 1, 2), self.beta.permute(0, 3, 1, 2)
        return gamma * (x * nx) + beta + x


class _VitedgeBlock(nn.Module):
    """vitedge's ConvNeXt block (vitedge.models.convnext.Block, V1 or V2 with GRN), channels-first."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.dwconv, self.act, self.drop_path, self.gamma = block.dwconv, block.act, block.drop_path, block.gamma
        self.norm = ChannelsFirstLayerNorm(block.norm)
        self.grn = block.grn if isinstance(block.grn, nn.Identity) else _ChannelsFirstGRN(block.grn)
        self.pwconv1, self.pwconv2 = _conv1x1(block.pwconv1), _conv1x1(block.pwconv2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(self.dwconv(x))))))
        if self.gamma is not None:
            y = self.gamma[:, None, None] * y
        return x + self.drop_path(y)


def _convnext_swap(child: nn.Module) -> Callable[[nn.Module], nn.Module] | None:
    """How to build the channels-first replacement of one layer, or None if this rewrite does not
    know it (asked before anything is copied: most models have nothing to swap)."""
    from vitedge.models import convnext as own

    if isinstance(child, own.Block) and isinstance(child.grn, (nn.Identity, own.GRN)):
        return _VitedgeBlock
    if type(child) is own.LayerNorm2d:
        return ChannelsFirstLayerNorm
    try:
        from timm.layers import LayerNorm as TimmLayerNorm
        from timm.layers import LayerNorm2d as TimmLayerNorm2d
        from timm.layers import Mlp
        from timm.models.convnext import ConvNeXtBlock
    except ImportError:  # timm is the `timm` extra; vitedge's own ConvNeXt needs none of it
        return None
    # (timm's LayerNorm is nn.LayerNorm's maths, optionally through its fused kernel)
    if isinstance(child, ConvNeXtBlock) and not child.use_conv_mlp \
            and type(child.norm) in (nn.LayerNorm, TimmLayerNorm) and len(child.norm.normalized_shape) == 1 \
            and isinstance(child.mlp, Mlp) and isinstance(child.mlp.fc1, nn.Linear) \
            and isinstance(child.mlp.norm, nn.Identity):
        return _TimmBlock
    if type(child) is TimmLayerNorm2d:
        return ChannelsFirstLayerNorm
    return None


def _unfold(self: nn.Module, feature_map: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """F.unfold with kernel == stride (non-overlapping patches) as a reshape: (B, C, H, W) ->
    (B, C, ph*pw, nh*nw), pixel-in-patch major then patch row-major, exactly unfold's order."""
    b, c, h, w = feature_map.shape
    ph, pw = self.patch_height, self.patch_width
    if h % ph or w % pw:  # unfold drops the remainder: keep the layer's own method there
        return type(self).unfolding(self, feature_map)
    x = feature_map.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c, ph * pw, (h // ph) * (w // pw)), (h, w)


def _fold(self: nn.Module, patches: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
    """F.fold with kernel == stride as a reshape: the inverse of `_unfold`."""
    b, c, _, _ = patches.shape
    (h, w), ph, pw = output_size, self.patch_height, self.patch_width
    if h % ph or w % pw:
        return type(self).folding(self, patches, output_size)
    x = patches.reshape(b, c, ph, pw, h // ph, w // pw).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c, h, w)


def _with_reshape_folding(layer: nn.Module) -> nn.Module:
    return _with_method("folding", _fold)(_with_method("unfolding", _unfold)(layer))


def _patch_fold_swap(child: nn.Module) -> Callable[[nn.Module], nn.Module] | None:
    """transformers' MobileViTV2Layer cuts its feature map into patches with F.unfold and puts
    them back with F.fold (kernel == stride). The ONNX exporter writes F.fold as Col2Im, which
    TensorRT's ONNX parser does not take (the transformers zoo's MobileViTV2 TRT rows failed the
    lint on it); for non-overlapping patches both are a reshape and a transpose (ALWAYS: every
    export, so the TensorRT targets keep sharing onnx-fp32's export; LiteRT's converter turned
    F.fold into a STABLEHLO_SCATTER its interpreter does not run). MobileViT (V1) and
    timm's MobileViTs already reshape."""
    if _from_transformers(child, "MobileViTV2Layer") and hasattr(child, "patch_height") \
            and hasattr(child, "folding"):
        return _with_reshape_folding
    return None


# XNNPACK's depthwise microkernels cover up to 25 taps in one pass; a larger depthwise kernel
# (ConvNeXt's 7x7) runs as a grouped IGEMM with one channel per group (measured by ExecuTorch's
# ETDump: "Convolution (NHWC, F32) IGEMM", 34 of 58.5 ms in timm convnext_tiny et-int8).
DWCONV_TAPS = 25


class SplitDepthwise(nn.Module):
    """A "same"-padded, stride-1 depthwise Conv2d as a sum of depthwise convolutions over column
    bands of its kernel (7x7: 7x3 + 7x3 + 7x1, each <= DWCONV_TAPS taps). The same sums in
    another order (fp32 rounding only). Measured before -> after, side by side
    (benchmarks/split_depthwise.py, 2 threads, RESULTS.md): timm convnext_tiny at 224 px et-fp32
    88.8 -> 59.6 ms, litert-fp32 76.9 -> 49.9, et-int8 (the bands kept float) 58.5 -> 29.8.
    Two layouts of the same maths, because the two converters differ in what they make fast
    (convnext-zepto, one busy afternoon, each pair side by side):
    - `pad_input=False` (ExecuTorch): each band convolves the input with the layer's own padding
      and its output is sliced; et-fp32 2.15 -> 1.35 ms. The padded-input form failed XNNPACK's
      compile between et-int8's quantised regions ("XNNCompiler::compileModel failed").
    - `pad_input=True` (LiteRT): the input is padded once and each band reads its slice with no
      padding of its own; litert-fp32 2.59 -> 0.95 ms, where the sliced-output form gave only
      2.56 -> 2.44."""

    def __init__(self, conv: nn.Conv2d, pad_input: bool = False):
        super().__init__()
        kh, kw = conv.kernel_size
        band = max(DWCONV_TAPS // kh, 1)
        self.pad_input, self.pad_w = pad_input, kw // 2
        self.bands: list[tuple[int, int]] = [(j, min(band, kw - j)) for j in range(0, kw, band)]
        self.parts = nn.ModuleList()
        for j, width in self.bands:
            part = nn.Conv2d(conv.in_channels, conv.out_channels, (kh, width),
                             padding=(kh // 2, 0 if pad_input else kw // 2),
                             groups=conv.groups, bias=conv.bias is not None and j == 0)
            with torch.no_grad():
                part.weight.copy_(conv.weight[..., j:j + width])
                if part.bias is not None:
                    part.bias.copy_(conv.bias)
            self.parts.append(part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[-1]
        padded = torch.nn.functional.pad(x, (self.pad_w, self.pad_w, 0, 0)) if self.pad_input else x
        out = None
        for (j, width), part in zip(self.bands, self.parts, strict=True):
            # band j's share of output column c reads padded input columns c + j ... c + j + width - 1
            y = part(padded[..., j:j + w + width - 1]) if self.pad_input else part(x)[..., j:j + w]
            out = y if out is None else out + y
        return out


def _split_depthwise_swap(child: nn.Module, pad_input: bool = False) -> Callable[[nn.Module], nn.Module] | None:
    """A depthwise Conv2d with more taps than XNNPACK's depthwise kernels take, stride 1, no
    dilation, "same" zero padding: the layout SplitDepthwise reproduces. Only the XNNPACK targets
    ask for it (ONNX Runtime and OpenVINO have fast large depthwise kernels)."""
    if type(child) is not nn.Conv2d or child.groups == 1 or child.groups != child.in_channels:
        return None
    kh, kw = child.kernel_size
    if kh * kw <= DWCONV_TAPS or kh % 2 == 0 or kw % 2 == 0 or child.stride != (1, 1) \
            or child.dilation != (1, 1) or child.padding != (kh // 2, kw // 2) or child.padding_mode != "zeros":
        return None
    return lambda conv: SplitDepthwise(conv, pad_input)


def _from_transformers(child: nn.Module, name: str) -> bool:
    cls = type(child)
    return cls.__name__ == name and cls.__module__.startswith("transformers.")


def _linear_attention(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """MobileViTV2LinearSelfAttention.forward with the context vector broadcast by the multiply
    itself instead of `expand_as` first (same values)."""
    qkv = self.qkv_proj(hidden_states)
    query, key, value = torch.split(qkv, [1, self.embed_dim, self.embed_dim], dim=1)
    context_scores = self.attn_dropout(torch.nn.functional.softmax(query, dim=-1))
    context_vector = torch.sum(key * context_scores, dim=-1, keepdim=True)
    return self.out_proj(torch.nn.functional.relu(value) * context_vector)


def _implicit_broadcast_swap(child: nn.Module) -> Callable[[nn.Module], nn.Module] | None:
    """transformers' MobileViTV2 attention expands its (B, C, P, 1) context vector to the
    values' shape before multiplying. litert-torch lowers that expand as a BROADCAST_TO and the
    multiply in NHWC, and its converter then rejects the model ("'tfl.mul' op operands don't have
    broadcast-compatible shapes", the transformers zoo's MobileViTV2 LiteRT rows); the multiply
    broadcasts by itself."""
    if _from_transformers(child, "MobileViTV2LinearSelfAttention") and hasattr(child, "qkv_proj"):
        return _with_method("forward", _linear_attention)
    return None


def _position_index(self: nn.Module, window_size: tuple[int, int]) -> torch.Tensor:
    if tuple(window_size) == tuple(self.window_size):
        return self.vitedge_position_index
    return type(self).generate_relative_position_index(window_size)


def _constant_position_index(child: nn.Module) -> Callable[[nn.Module], nn.Module] | None:
    """transformers' BEiT (and Data2VecVision) builds its relative-position index inside forward
    by index assignment into an int64 tensor; coremltools 9 rejects that graph ("select_scatter:
    updates has dtype int32 whereas x has dtype fp32", the zoo's BEiT Core ML rows). At the
    exported size the index is a constant: computed once here, kept as a buffer, and the original
    computation runs for any other window size (interpolated position encodings)."""
    cls = type(child)
    if not (cls.__name__.endswith("RelativePositionBias") and cls.__module__.startswith("transformers.")
            and hasattr(cls, "generate_relative_position_index") and hasattr(child, "window_size")):
        return None

    def constant(layer: nn.Module) -> nn.Module:
        index = type(layer).generate_relative_position_index(tuple(layer.window_size)).clone()
        layer.register_buffer("vitedge_position_index", index, persistent=False)
        return _with_method("generate_relative_position_index", _position_index)(layer)
    return constant


def _with_method(name: str, fn: Callable[..., torch.Tensor]) -> Callable[[nn.Module], nn.Module]:
    import types

    def bind(layer: nn.Module) -> nn.Module:
        setattr(layer, name, types.MethodType(fn, layer))  # the export's copy only (apply_rewrites)
        return layer
    return bind


# Rewrites every export applies, whatever the target (the ONNX export, and the module-based
# builds through BuildContext.network()): an equivalent form of an op that some runtime's reader
# or converter does not take (on a copy only; the report lists those that swapped).
ALWAYS = ("patch-fold-as-reshape", "implicit-broadcast", "constant-position-index")

# name -> (layer -> the constructor of its replacement, or None)
REWRITES: dict[str, Callable[[nn.Module], Callable[[nn.Module], nn.Module] | None]] = {
    "convnext-channels-first": _convnext_swap, "patch-fold-as-reshape": _patch_fold_swap,
    "implicit-broadcast": _implicit_broadcast_swap, "constant-position-index": _constant_position_index,
    "split-large-depthwise": _split_depthwise_swap,
    "split-large-depthwise-padded": lambda child: _split_depthwise_swap(child, pad_input=True)}


def apply_rewrites(module: nn.Module, names: tuple[str, ...]) -> tuple[nn.Module, dict[str, int]]:
    """A copy of `module` with every layer the named rewrites know swapped (the original is left
    as it is), and how many layers each rewrite swapped. A model with nothing to swap (another
    family) is returned as it is, uncopied."""
    unknown = [n for n in names if n not in REWRITES]
    if unknown:
        raise ValueError(f"unknown export rewrite(s) {unknown}; known: {sorted(REWRITES)}")
    counts = dict.fromkeys(names, 0)

    def walk(parent: nn.Module, swap: bool) -> None:
        for child_name, child in list(parent.named_children()):
            for name in names:
                build = REWRITES[name](child)
                if build is not None:
                    if swap:
                        child = build(child)
                        setattr(parent, child_name, child)
                    counts[name] += 1
                    break
            walk(child, swap)  # a layer patched in place may hold another (MobileViTV2's attention)

    walk(module, swap=False)
    if not any(counts.values()):
        return module, counts
    counts = dict.fromkeys(names, 0)
    out = copy.deepcopy(module)
    walk(out, swap=True)
    return out, counts
