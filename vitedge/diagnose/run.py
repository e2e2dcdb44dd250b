"""Entry points: diagnose an artifact against its fp32 reference (for `vitedge diagnose` and for
ranking layers in the accuracy-aware fallback)."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import onnx

from vitedge.diagnose.result import Diagnosis
from vitedge.errors import UsageError

QDQ_TARGETS = ("ort-int8", "trt-int8")
ONNX_TARGETS = (*QDQ_TARGETS, "trt-fp16", "trt-fp32", "onnx-fp32")
OV_TARGETS = ("ov-int8", "ov-fp16", "ov-fp32")


def preprocessed_reference(fp32_onnx: Path, work: Path) -> Path:
    """The fp32 model exactly as ORT's quantiser saw it (same tensor names as the QDQ artifact)."""
    from onnxruntime.quantization import quant_pre_process

    out = work / "reference.pre.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        quant_pre_process(str(fp32_onnx), str(out))
    return out


def diagnose_artifact(target: str, fp32_onnx: Path, artifact_file: Path, x: np.ndarray,
                      work: Path, qdq_reference: Path | None = None) -> Diagnosis:
    """Compare `artifact_file` (built for `target`) with the fp32 ONNX export on inputs `x`."""
    from vitedge.diagnose.onnx_layers import _modules, diagnose_onnx

    fp32 = onnx.load(str(fp32_onnx))
    if target in QDQ_TARGETS:
        ref_path = qdq_reference or preprocessed_reference(fp32_onnx, work)
        return diagnose_onnx(onnx.load(str(ref_path)), onnx.load(str(artifact_file)), x, f"{target}: {artifact_file.name}")
    if target in ONNX_TARGETS:
        return diagnose_onnx(fp32, onnx.load(str(artifact_file)), x, f"{target}: {artifact_file.name}")
    if target in OV_TARGETS:
        import openvino as ov

        from vitedge.diagnose.openvino_layers import diagnose_openvino

        core = ov.Core()
        return diagnose_openvino(ov.convert_model(str(fp32_onnx)), core.read_model(str(artifact_file)), x,
                                 f"{target}: {artifact_file.name}", _modules(fp32))
    raise UsageError(f"vitedge diagnose does not support target {target!r} (ONNX and OpenVINO artifacts only)")


def diagnose_bundle(bundle: Path, model: str | None = None, n: int = 16, seed: int = 0,
                    eval_data: str = "synthetic") -> Diagnosis:
    """`vitedge diagnose BUNDLE`: rebuild the fp32 reference from the bundle's model (or `model`)."""
    from vitedge.bundle.manifest import read_manifest
    from vitedge.calib.datasets import eval_data as load_eval
    from vitedge.export.onnx_export import ExportConfig, export_onnx
    from vitedge.models.resolve import load_model

    manifest = read_manifest(bundle)
    card = manifest.card
    source = model or card.source.removeprefix("builtin:")
    if not source or source in ("random-init", "vitedge train"):
        raise UsageError(f"{bundle}: cannot find the reference model (source {card.source!r}); pass --model CHECKPOINT")
    loaded = load_model(source)
    if loaded.card.arch != card.arch:
        raise UsageError(f"--model {source} is a {loaded.card.arch}, the bundle holds a {card.arch}")
    if eval_data == "synthetic" and card.classes != loaded.card.classes:
        raise UsageError("pass --eval DIR with images for this model")
    data = load_eval(eval_data, card.preprocess, card.classes, n, seed)
    x = data.as_inputs(card.preprocess)
    with tempfile.TemporaryDirectory(prefix="vitedge-diagnose-") as tmp:
        work = Path(tmp)
        static = manifest.data.get("input", {}).get("shape", ["batch"])[0]
        cfg = ExportConfig(opset=manifest.data.get("export", {}).get("opset", 20) if manifest.data.get("export") else 20,
                           static_batch=static if isinstance(static, int) else None)
        export_onnx(loaded.module, loaded.card, work / "model.onnx", cfg)
        if isinstance(static, int):
            x = x[: (len(x) // static) * static] if len(x) >= static else np.resize(x, (static, *x.shape[1:]))
        return diagnose_artifact(manifest.target, work / "model.onnx", manifest.main_file, x, work)
