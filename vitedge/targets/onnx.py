"""onnx-fp32: the exported, cleaned ONNX graph itself is the artifact."""

from __future__ import annotations

from vitedge.targets.context import BuildContext
from vitedge.targets.registry import Artifact, Hooks, Target, register_target


def build_onnx_fp32(ctx: BuildContext) -> Artifact:
    from vitedge.export.metadata import update_onnx_metadata

    onnx_file = ctx.place_onnx()
    update_onnx_metadata(onnx_file, {"vitedge.target": "onnx-fp32", "vitedge.precision": "fp32"})
    return Artifact(
        main_file=onnx_file.name,
        files=ctx.files_of(onnx_file),
        runtime="onnxruntime",
        runner_options={"graph_optimization": "all"},
        details={"graph_optimization": "all (ONNX Runtime default)"},
    )


def embed_pixels(ctx: BuildContext, artifact: Artifact) -> Artifact:
    """--embed-preprocessing for an ONNX artifact: the pixel graph merged in front of it
    (vitedge.export.pixels); ONNX Runtime's Resize with antialias is Pillow's filter."""
    from vitedge.export.pixels import embed_onnx_file, input_info

    spec = ctx.loaded.card.preprocess
    embed_onnx_file(ctx.bundle_dir / artifact.main_file, spec)
    artifact.details["input"] = input_info(spec, any_size=True,
                                           interpolation=f"ONNX Resize {spec.interpolation} with antialias (Pillow's filter)")
    return artifact


def _diagnose(*args, **kwargs):  # type: ignore[no-untyped-def]
    from vitedge.diagnose.readers import diagnose_onnx_graph

    return diagnose_onnx_graph(*args, **kwargs)


register_target(Target(
    name="onnx-fp32", runtime="onnxruntime", precision="fp32", extra="ort", requires=("onnxruntime",),
    description="ONNX (fp32), cleaned with onnxslim; runs on ONNX Runtime or any ONNX runtime",
    hooks=Hooks(build=build_onnx_fp32, diagnose=_diagnose, embed=embed_pixels), auto=("x86",), dynamic_size=True))
