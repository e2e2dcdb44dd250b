"""`vitedge diagnose BUNDLE`: rebuild the fp32 reference and rank the artifact's layers with the
reader its target names (`Target.diagnose`: vitedge.diagnose.readers, or the target's own file
for runtime-specific artifacts). The accuracy-aware fallback calls the same readers."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from vitedge.diagnose.result import Diagnosis
from vitedge.errors import UsageError


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
