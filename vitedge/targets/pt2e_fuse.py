"""Conv + ReLU6 (hardtanh) quantised as one op, for the PT2E quantisers of ExecuTorch's XNNPACK
and LiteRT.

Both quantisers fuse a Conv with a following ReLU (one output quantiser, after the ReLU) but not
with a ReLU6 / hardtanh: the Conv's output is then quantised over its whole pre-activation range
(often -50..+50) and the clamp shares that quantiser, so the [0, 6] that reaches the next layer
keeps a few of the 256 levels. MobileNet/EfficientNet-style models are made of Conv + ReLU6.
XNNPACK itself fuses the clamp into the convolution (its FuseActivationPass takes hardtanh as it
takes relu), so annotating the pair as ReLU is annotated is what the runtime runs anyway.
Measured on the real ImageNet EfficientNet-Lite0 (benchmarks/pretrained.py): see the targets.

Each quantiser's own qspec helpers are passed in, so the specs are exactly the ones it would
have written for Conv + ReLU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Q_ANNOTATION_KEY = "quantization_annotation"  # torchao.quantization.pt2e.quantizer.quantizer


def annotate_conv_clamp(gm: Any, config: Any, qspecs: tuple[Callable[..., Any], ...],
                        filter_fn: Callable[[Any], bool] | None = None) -> int:
    """Annotate every Conv -> hardtanh pair of `gm` (Conv used only by the clamp) as one quantised
    op: Conv inputs/weights/bias quantised, one output quantiser after the clamp. `qspecs`: the
    quantiser's (input_act, weight, bias, output_act) qspec getters. Returns pairs annotated."""
    import torch
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    input_q, weight_q, bias_q, output_q = qspecs
    clamps = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)
    convs = (torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default)
    done = 0
    for clamp in gm.graph.nodes:
        if clamp.op != "call_function" or clamp.target not in clamps:
            continue
        conv = clamp.args[0]
        if getattr(conv, "op", None) != "call_function" or conv.target not in convs or len(conv.users) > 1:
            continue
        act, weight = conv.args[0], conv.args[1]
        bias = conv.args[2] if len(conv.args) > 2 and conv.args[2] is not None else None
        partition = [clamp, conv, weight] + ([bias] if bias is not None else [])
        if any(Q_ANNOTATION_KEY in n.meta and n.meta[Q_ANNOTATION_KEY]._annotated for n in partition):
            continue
        if filter_fn is not None and not all(filter_fn(n) for n in partition):
            continue
        qmap = {act: input_q(config), weight: weight_q(config)}
        if bias is not None:
            qmap[bias] = bias_q(config)
        conv.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(input_qspec_map=qmap, _annotated=True)
        clamp.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(output_qspec=output_q(config), _annotated=True)
        for n in partition[2:]:
            n.meta.setdefault(Q_ANNOTATION_KEY, QuantizationAnnotation())._annotated = True
        done += 1
    return done


# XNNPACK (the CPU backend of both ExecuTorch and LiteRT) runs an int8 depthwise convolution with
# a kernel larger than 5x5 slower than the same convolution in fp32. Measured 2026-12-05 (Xeon,
# AVX-512 VNNI, side by side in own processes): convnext-zepto litert-int8 1.96 -> 1.44 ms at 1
# thread and 1.22 -> 1.01 ms at 2 with its ten 7x7 depthwise convs kept float (without them at
# all: 0.39 ms, so they are most of the model's time); timm convnext_atto at 224 px 15.1 -> 12.2
# ms; et-int8 convnext-zepto 1.60 -> 1.39 ms. The op placement report cannot show this: the ops
# are on the delegate. ExecuTorch's ETDump (`vitedge bench --ops`) shows why: XNNPACK has no
# depthwise kernel above 25 taps and runs these as a grouped IGEMM, one channel per group, in
# int8 and fp32 alike ("Convolution (NHWC, F32) IGEMM": 35 of 59 ms of timm convnext_tiny
# et-int8). 3x3 and 5x5 (MobileNet, EfficientNet) get its depthwise kernels and stay quantised.
# The float targets split such kernels into bands it takes (vitedge.export.rewrites.SplitDepthwise).
LARGE_DEPTHWISE_TAPS = 25
MISSING_KERNEL = "XNNPACK has no depthwise kernel above 25 taps and runs them as a grouped IGEMM (`vitedge bench --ops`)"


def large_depthwise(module: Any) -> tuple[str, ...]:
    """Names of the depthwise Conv2d modules of `module` with more than 5x5 taps."""
    import torch

    return tuple(name for name, m in module.named_modules()
                 if isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
                 and m.kernel_size[0] * m.kernel_size[1] > LARGE_DEPTHWISE_TAPS)


def large_depthwise_note(names: tuple[str, ...], kept: bool, flag: str, split: bool = False) -> str:
    """The report's line on the large depthwise convolutions (kept float or not, and why; `split`:
    converted as bands, vitedge.export.rewrites.SplitDepthwise)."""
    if kept:
        how = ("converted as column bands XNNPACK's depthwise kernels take (split-large-depthwise: it has "
               "none above 25 taps)" if split else MISSING_KERNEL)
        return (f"{len(names)} depthwise convolution(s) larger than 5x5 kept float ({names[0]}, ...): XNNPACK's "
                f"int8 kernel for them is slower than its fp32 one (measured: vitedge.targets.pt2e_fuse); "
                f"--no-{flag} quantises them too; {how}")
    return (f"{len(names)} depthwise convolution(s) larger than 5x5 are int8 ({names[0]}, ...): XNNPACK's int8 "
            f"kernel for them is slower than its fp32 one (convnext-zepto: 1.22 -> 1.01 ms kept float); "
            f"--{flag} keeps them float at the cost of a full-integer model; {MISSING_KERNEL}")
