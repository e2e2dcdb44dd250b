"""Entry points: diagnose an artifact against its fp32 reference (for `vitedge diagnose` and for
ranking layers in the accuracy-aware fallback).

Each target names the reader that fits its artifact (`Target.diagnose`): Q/DQ ONNX, another
ONNX graph (FP16, fp32), an OpenVINO IR, or (for targets that quantise the PyTorch module,
`source="module"`) the module itself. All take (reference, artifact_file, x, work_dir): the
reference is the fp32 ONNX export, or the nn.Module for module-sourced targets.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.diagnose.result import Diagnosis
from vitedge.errors import UsageError


def diagnose_qdq(fp32_onnx: Path, artifact_file: Path, x: np.ndarray, work: Path) -> Diagnosis:
    """A Q/DQ ONNX artifact vs the fp32 graph exactly as ORT's quantiser saw it (same tensor
    names): the pre-processed graph the build left in `work`, or a fresh one."""
    import onnx

    from vitedge.diagnose.onnx_layers import diagnose_onnx
    from vitedge.targets.ort_int8 import PREPROCESSED
    from vitedge.targets.ort_preprocess import pre_process

    ref_path = work / PREPROCESSED
    if not ref_path.exists():
        pre_process(fp32_onnx, ref_path)
    return diagnose_onnx(onnx.load(str(ref_path)), onnx.load(str(artifact_file)), x, artifact_file.name)


def diagnose_onnx_graph(fp32_onnx: Path, artifact_file: Path, x: np.ndarray, work: Path) -> Diagnosis:
    """Any other ONNX artifact (FP16, fp32) vs the fp32 export, tensor by tensor."""
    import onnx

    from vitedge.diagnose.onnx_layers import diagnose_onnx

    return diagnose_onnx(onnx.load(str(fp32_onnx)), onnx.load(str(artifact_file)), x, artifact_file.name)


def diagnose_pt2e(module: Any, artifact_file: Path, x: np.ndarray, work: Path) -> Diagnosis:
    """An artifact quantised from the module by a PT2E quantiser (.pte, .tflite, .pt2): each
    weighted module ranked alone under the quantisers' shared INT8 scheme."""
    from vitedge.diagnose.module_layers import diagnose_module

    return diagnose_module(module, artifact_file, x, work)


def diagnose_ov(fp32_onnx: Path, artifact_file: Path, x: np.ndarray, work: Path) -> Diagnosis:
    """An OpenVINO IR vs the fp32 ONNX converted by OpenVINO (same friendly names)."""
    import onnx
    import openvino as ov

    from vitedge.diagnose.onnx_layers import _modules
    from vitedge.diagnose.openvino_layers import diagnose_openvino

    core = ov.Core()
    return diagnose_openvino(ov.convert_model(str(fp32_onnx)), core.read_model(str(artifact_file)), x,
                             artifact_file.name, _modules(onnx.load(str(fp32_onnx))))


def _plain(path: Path) -> bool:
    """A safetensors file without a vitedge card (a plain state dict)."""
    from vitedge.models.checkpoint import read_card

    return read_card(path) is None


def diagnose_bundle(bundle: Path, model: str | None = None, n: int = 16, seed: int = 0,
                    eval_data: str = "synthetic") -> Diagnosis:
    """`vitedge diagnose BUNDLE`: rebuild the fp32 reference from the bundle's model (or `model`)."""
    from vitedge.bundle.manifest import read_manifest
    from vitedge.calib.imagesource import open_source
    from vitedge.export.onnx_export import ExportConfig, export_onnx
    from vitedge.models.resolve import load_model
    from vitedge.targets.registry import get_target

    manifest = read_manifest(bundle)
    target = get_target(manifest.target)
    if target.diagnose is None:
        from vitedge.targets.registry import all_targets

        able = ", ".join(t.name for t in all_targets() if t.diagnose)
        raise UsageError(f"vitedge diagnose does not read {target.name} artifacts; it reads {able}")
    card = manifest.card
    source = model or card.source.removeprefix("builtin:")
    if not source or source in ("random-init", "vitedge train"):
        raise UsageError(f"{bundle}: cannot find the reference model (source {card.source!r}); pass --model CHECKPOINT")
    path = Path(source)
    if model is None and path.is_file() and (path.suffix != ".safetensors" or _plain(path)):
        # exported from a plain state dict (--weights): rebuild it the same way
        loaded = load_model(card.arch, weights=source, classes=card.classes)
    else:
        loaded = load_model(source)
    if loaded.card.arch != card.arch:
        raise UsageError(f"--model {source} is a {loaded.card.arch}, the bundle holds a {card.arch}")
    if eval_data == "synthetic" and card.classes != loaded.card.classes:
        raise UsageError("pass --eval DIR with images for this model")
    images = open_source(eval_data)
    x = images.read("eval", images.sample("eval", n, seed), card.preprocess, seed=seed).x
    with tempfile.TemporaryDirectory(prefix="vitedge-diagnose-") as tmp:
        work = Path(tmp)
        static = manifest.data.get("input", {}).get("shape", ["batch"])[0]
        opset = (manifest.data.get("export") or {}).get("opset", ExportConfig.opset)
        cfg = target.export_config(ExportConfig(opset=opset, static_batch=static if isinstance(static, int) else None))
        if isinstance(static, int):
            x = x[: (len(x) // static) * static] if len(x) >= static else np.resize(x, (static, *x.shape[1:]))
        if target.source == "module":  # quantised from the module itself: rank on the module
            diag = target.diagnose(loaded.module, manifest.main_file, x, work)
        else:
            export_onnx(loaded.module, loaded.card, work / "model.onnx", cfg)
            diag = target.diagnose(work / "model.onnx", manifest.main_file, x, work)
        diag.artifact = f"{target.name}: {manifest.main_file.name}"
        return diag
