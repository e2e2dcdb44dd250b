"""Per-layer sensitivity of a PyTorch module to INT8 quantisation, for targets that quantise the
module itself (PT2E: ExecuTorch's XNNPACK quantiser, LiteRT's PT2E quantiser, the x86 Inductor
quantiser) rather than an ONNX graph.

Those quantisers share one scheme: weights int8 symmetric per output channel, activations int8
per tensor (static, calibrated), at the inputs and outputs of every weighted op. Each weighted
module (Linear, Conv, MultiheadAttention: a module that owns a >= 2-D weight and whose forward
runs as a module call) is measured *alone*: one float forward records its inputs and outputs on
reference images, then the module is re-run on the same inputs with that scheme applied to its
inputs, weights and output, and the SQNR of its output against the float output is its local
score (the same quantity as `local_sqnr_db` for Q/DQ ONNX). A module whose input carries
activation outliers (one channel 100x the rest) scores low because the per-tensor scale is set by
the outlier; that is exactly the layer the fallback should keep in float. Linear and convolution
calls inside a module's forward are quantised too (a MultiheadAttention's packed q/k/v projection).

Why not rank on the built artifact: a .pte / .tflite / AOTInductor package exposes no
intermediate tensors with names that map back to modules, and the quantisers' observers are gone
after conversion. Ranging here uses min/max rather than the quantisers' histogram observers: it
ranks the layers (outliers dominate either way), it does not predict the artifact's accuracy,
which the fallback then measures on the built artifact.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.diagnose.result import Diagnosis, LayerRow

METHOD = ("PyTorch module alone with int8 inputs, output (per-tensor affine, min/max) and weights "
          "(symmetric per output channel), vs float, on reference images")


def _sqnr_db(ref: Any, approx: Any) -> float:
    import torch

    ref, approx = ref.double(), approx.double()
    noise = float(torch.sum((ref - approx) ** 2))
    signal = float(torch.sum(ref**2))
    if noise == 0:
        return math.inf
    return 10 * math.log10(max(signal, 1e-300) / noise)


def _fq_tensor(t: Any) -> Any:
    """Per-tensor affine uint8 fake quantisation with the tensor's own min/max (0 included)."""
    import torch

    if not (isinstance(t, torch.Tensor) and t.is_floating_point()):
        return t
    lo, hi = min(float(t.min()), 0.0), max(float(t.max()), 0.0)
    scale = max((hi - lo) / 255.0, 1e-12)
    zero = int(round(-lo / scale))
    return torch.fake_quantize_per_tensor_affine(t.float(), scale, zero, 0, 255).to(t.dtype)


def _fq_weight(w: Any) -> Any:
    """Symmetric int8 per output channel (dim 0), the scheme all three PT2E quantisers use."""
    import torch

    amax = w.detach().abs().reshape(w.shape[0], -1).amax(1).clamp_min(1e-12)
    scale = (amax / 127.0).float()
    zero = torch.zeros(w.shape[0], dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w.detach().float(), scale, zero, 0, -127, 127).to(w.dtype)


def _weights(module: Any) -> dict[str, Any]:
    """The module's own (not its children's) weight matrices / kernels."""
    return {n: p for n, p in module.named_parameters(recurse=False) if p.ndim >= 2 and n.endswith("weight")}


@contextlib.contextmanager
def _int8_functional() -> Iterator[None]:
    """Every linear / convolution run inside sees int8 inputs and weights and gives an int8
    output, as after PT2E quantisation. The functions are swapped in `torch.nn.functional`'s
    namespace because that is where both module forwards (`F.linear`) and functional attention
    (`multi_head_attention_forward` calls the module-global `linear` for its packed q/k/v
    projection, whose per-tensor output scale is what query/key outliers break) look them up."""
    import torch.nn.functional as F

    originals = {name: getattr(F, name) for name in ("linear", "conv1d", "conv2d", "conv3d")}

    def wrap(fn: Any) -> Any:
        def quantised(input: Any, weight: Any, bias: Any = None, *args: Any, **kwargs: Any) -> Any:
            return _fq_tensor(fn(_fq_tensor(input), _fq_weight(weight), bias, *args, **kwargs))
        return quantised

    with _mha_slow_path():  # the fused attention kernel would bypass F.linear
        try:
            for name, fn in originals.items():
                setattr(F, name, wrap(fn))
            yield
        finally:
            for name, fn in originals.items():
                setattr(F, name, fn)


@contextlib.contextmanager
def _mha_slow_path() -> Iterator[None]:
    """The reference pass takes the same (unfused) attention path as the quantised re-runs."""
    import torch

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _first_tensor(out: Any) -> Any:
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def diagnose_module(module: Any, artifact_file: Path, x: np.ndarray, work: Path) -> Diagnosis:
    """Rank `module`'s weighted layers by the error each introduces alone under PT2E-style INT8.

    Same hook signature as the ONNX readers (reference, artifact_file, x, work); the reference is
    the module itself and the artifact is not opened (see the module docstring for why)."""
    import torch

    candidates = {name: m for name, m in module.named_modules() if name and _weights(m)}
    rows: dict[str, LayerRow] = {}
    busy: set[str] = set()  # a module re-run inside its own hook must not measure itself again

    def make_hook(name: str, m: Any) -> Any:
        def hook(mod: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
            ref = _first_tensor(out)
            if name in busy or name in rows or ref is None:
                return
            busy.add(name)
            try:
                with _int8_functional():
                    q_out = _first_tensor(mod(*args, **kwargs))
            finally:
                busy.discard(name)
            w_sqnr = min(_sqnr_db(w, _fq_weight(w)) for w in _weights(mod).values())
            act = [a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]
            rows[name] = LayerRow(
                node=name, op=type(mod).__name__, module=name, depth=len(rows),
                local_sqnr_db=_sqnr_db(ref, q_out),
                act_sqnr_db=_sqnr_db(act[0], _fq_tensor(act[0])) if act else None,
                weight_sqnr_db=w_sqnr, quantized=True)
        return hook

    handles = [m.register_forward_hook(make_hook(n, m), with_kwargs=True) for n, m in candidates.items()]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad(), _mha_slow_path():
            module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    notes = []
    silent = sorted(set(candidates) - set(rows))
    if silent:  # e.g. MultiheadAttention.out_proj: its weight is used by the parent's functional call
        notes.append(f"{len(silent)} weighted modules never run as a module call (their parent is "
                     f"ranked instead): {', '.join(silent[:5])}{' ...' if len(silent) > 5 else ''}")
    return Diagnosis(artifact=artifact_file.name, method=METHOD, rows=list(rows.values()), samples=len(x),
                     notes=notes)
