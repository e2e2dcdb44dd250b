"""coreml-fp16 / coreml-int8: Core ML ML Program packages (.mlpackage) for iPhone, iPad and Mac, as kits.

coremltools converts the torch.export program to an ML Program with fp16 compute precision (the
precision Core ML's GPU and Neural Engine run at). coreml-int8 then compresses the weights with
`coremltools.optimize.coreml.linear_quantize_weights` (int8 symmetric, per output channel, every constant above 2048
elements): int8 weights, fp16 activations (W8A16). Activation quantisation
(`linear_quantize_activations`) calibrates by running the model through Core ML, which only
exists on macOS, so it is not offered from Linux.

The model card travels in the package: preprocessing, class names and the card itself in
`user_defined_metadata` (keys `vitedge.preprocess`, `vitedge.classes`, `vitedge.card`), plus the
input/output descriptions. The output is raw logits named `logits`, like every vitedge artifact.

Core ML does not run on Linux, so the bundle is a kit, like TensorRT's: the package, the shipped
reference outputs, `verify_coreml.py` (coremltools + numpy, on a Mac: parity vs reference.npz
and a latency benchmark per compute unit) and KIT.md. Parity here is *predicted* by a CPU stand-in
that reproduces the package's numerics as closely as this machine can, never claimed as measured:
- coreml-fp16: the fp32 ONNX converted to fp16 weights and fp16 tensors between all ops
  (onnxconverter-common, fp32 model inputs/outputs), run by ONNX Runtime with graph
  optimisations off; ops without an fp16 CPU kernel compute in fp32 between fp16 tensors.
- coreml-int8: the same, from a model whose weights were quantised and dequantised exactly as
  coremltools does (per-channel symmetric int8, [-127, 127], the same size threshold); the
  test suite checks these weights against the int8 constants inside the package.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vitedge.errors import ExportError, UsageError
from vitedge.kit_common import PROFILE_FILE, ship_profile
from vitedge.options import opt
from vitedge.targets.context import BuildContext
from vitedge.targets.registry import Artifact, Hooks, Target, register_target

PACKAGE = "model.mlpackage"
KIT_SCRIPT = "verify_coreml.py"
DEVICE_PROFILE_COMMAND = f"python {KIT_SCRIPT}"  # run in the kit on a Mac
WEIGHT_THRESHOLD = 2048  # coremltools' default: constants with more elements are quantised
PREDICTED_BY = "ONNX Runtime on an fp16 ONNX stand-in (CPU, graph optimisations off)"
TARGETS = ("iOS16", "iOS17", "iOS18")


@dataclass(frozen=True)
class CoreMLOptions:
    prefix: ClassVar[str] = "coreml"
    deployment_target: str = opt("iOS17", "minimum_deployment_target (iOS16 = macOS13)", choices=TARGETS)
    compute_units: str = opt("ALL", "compute units the kit's verify script benchmarks first",
                             choices=("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY"))


# -- conversion ---------------------------------------------------------------------------------------


def _convert(ctx: BuildContext, batch: int) -> Any:
    import coremltools as ct
    import torch

    module = ctx.network()
    h, w = ctx.loaded.card.preprocess.input_size
    x = torch.zeros(batch, 3, h, w)
    # torch.export, not torch.jit.trace: coremltools 9's TorchScript frontend fails on
    # nn.MultiheadAttention under torch 2.14 (aten::Int on a non-scalar); its ExportedProgram
    # frontend converts both built-ins. run_decompositions({}) gives the ATen IR it expects.
    with torch.no_grad():
        program = torch.export.export(module, (x,), strict=False).run_decompositions({})
    target = getattr(ct.target, ctx.options.deployment_target)
    return ct.convert(
        program,
        inputs=[ct.TensorType(name="input", shape=tuple(x.shape), dtype=np.float32)],
        outputs=[ct.TensorType(name="logits", dtype=np.float32)],
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16,
        minimum_deployment_target=target,
        skip_model_load=True,  # no Core ML framework on Linux; nothing to compile here
    )


def _quantize_weights(mlmodel: Any) -> Any:
    import coremltools.optimize as cto

    cfg = cto.coreml.OptimizationConfig(global_config=cto.coreml.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=WEIGHT_THRESHOLD))
    return cto.coreml.linear_quantize_weights(mlmodel, cfg)


def _describe(mlmodel: Any, ctx: BuildContext, precision: str) -> None:
    card = ctx.loaded.card
    pp = card.preprocess
    mlmodel.short_description = (f"{card.arch} image classifier ({len(card.classes)} classes), exported by vitedge "
                                 f"({'int8 weights, ' if precision == 'int8' else ''}fp16 compute)")
    mlmodel.author = "vitedge"
    mlmodel.input_description["input"] = (
        f"float32 (N,3,{pp.input_size[0]},{pp.input_size[1]}): {pp.describe()}")
    mlmodel.output_description["logits"] = "raw class scores (apply softmax for probabilities); names in vitedge.classes"
    meta = mlmodel.user_defined_metadata
    meta["vitedge.preprocess"] = json.dumps(pp.to_dict())
    meta["vitedge.classes"] = json.dumps(list(card.classes))
    meta["vitedge.card"] = card.to_json() if hasattr(card, "to_json") else json.dumps(card.to_dict())
    meta["vitedge.precision"] = precision


@contextlib.contextmanager
def _coreml_quiet() -> Iterator[None]:
    """coremltools logs a warning per missing macOS-only extension and draws tqdm progress bars
    on stderr; neither is the user's business on Linux."""
    log = logging.getLogger("coremltools")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        log.setLevel(level)


# -- the CPU stand-in -----------------------------------------------------------------------------------


def quantize_like_coreml(module: Any, threshold: int = WEIGHT_THRESHOLD) -> tuple[Any, list[str]]:
    """A copy of `module` whose large float tensors are replaced by their int8 round trip, the
    way coremltools' linear_symmetric per-channel weight quantiser computes them: channel axis 0
    (linear/conv output channels; torch keeps the layouts Core ML's linear/conv use), computed
    in fp16 like coremltools (`optimize._utils.quantize_weight_by_dtype`), clip to [-127, 127].
    Returns (module, quantised names)."""
    import copy

    import torch

    q = copy.deepcopy(module).eval()
    names = []
    with torch.no_grad():
        for name, t in [*q.named_parameters(), *q.named_buffers()]:
            if not t.is_floating_point() or t.numel() <= threshold or t.ndim < 2:
                continue
            # coremltools quantises the constants after casting them to fp16 and does the
            # arithmetic in numpy fp16 (scale = 2 max|w| / 254, round(w / scale)): same here,
            # so the stand-in's weights are the package's, rounding ties included.
            w = t.detach().cpu().numpy().astype(np.float16).reshape(t.shape[0], -1)
            max_abs = np.maximum(np.abs(w.min(axis=1, keepdims=True)), np.abs(w.max(axis=1, keepdims=True)))
            scale = (max_abs - (-max_abs)) / 254
            scale = np.where(scale == 0, np.float16(1), scale)
            ints = np.clip(np.round(w / scale), -127, 127)
            deq = torch.from_numpy(ints.astype(np.float32) * scale.astype(np.float32))
            t.copy_(deq.reshape(t.shape))
            names.append(name)
    return q, names


def _fp16_onnx(src: Path, dst: Path, ctx: BuildContext, precision: str) -> dict[str, Any]:
    import onnx
    from onnxconverter_common import float16

    from vitedge.export.metadata import set_metadata
    from vitedge.export.onnx_export import save_onnx
    from vitedge.quiet import quiet

    model = onnx.load(str(src))
    with quiet():  # one warning per weight below fp16's normal range
        fp16 = float16.convert_float_to_float16(model, keep_io_types=True, min_positive_val=1e-7,
                                                max_finite_val=65504.0)
    set_metadata(fp16, ctx.loaded.card, {"vitedge.target": f"coreml-{precision}",
                                         "vitedge.role": "CPU stand-in for the Core ML package"})
    save_onnx(fp16, dst)
    return {"converter": "onnxconverter-common float16 (every op, keep_io_types)",
            "casts": sum(1 for n in fp16.graph.node if n.op_type == "Cast")}


def _standin(ctx: BuildContext, precision: str) -> tuple[str, dict[str, Any]]:
    from vitedge.export.onnx_export import export_onnx

    onnx_in = ctx.require_onnx().path
    facts: dict[str, Any] = {}
    if precision == "int8":
        module, names = quantize_like_coreml(ctx.loaded.module)
        onnx_in = ctx.work_dir / "coreml_w8_dequant.onnx"
        from vitedge.quiet import quiet

        with quiet():
            export_onnx(module, ctx.loaded.card, onnx_in, ctx.export)
        facts["weights_round_tripped"] = len(names)
    name = "standin.w8.fp16.onnx" if precision == "int8" else "standin.fp16.onnx"
    facts.update(_fp16_onnx(onnx_in, ctx.bundle_dir / name, ctx, precision))
    return name, facts


# -- the kit -----------------------------------------------------------------------------------------


def _write_kit(ctx: BuildContext, precision: str, batch: int, tol: Any) -> list[str]:
    script = resources.files("vitedge.coreml_kit") / KIT_SCRIPT
    (ctx.bundle_dir / KIT_SCRIPT).write_text(script.read_text())
    ship_profile(ctx.bundle_dir)
    card = ctx.loaded.card
    kit = {
        "package": PACKAGE, "precision": precision, "input_name": "input", "output_name": "logits",
        "batch": batch, "compute_units": ctx.options.compute_units,
        "deployment_target": ctx.options.deployment_target,
        # per-sample limits for a handful of fixed inputs (agreement rates need a data set)
        "tolerance": {"max_abs": tol.max_abs, "cosine_min": tol.cosine_min},
        "model": {"arch": card.arch, "classes": list(card.classes), "preprocess": card.preprocess.to_dict()},
    }
    (ctx.bundle_dir / "kit.json").write_text(json.dumps(kit, indent=2) + "\n")
    (ctx.bundle_dir / "KIT.md").write_text(_kit_readme(precision, batch))
    return [KIT_SCRIPT, PROFILE_FILE, "kit.json", "KIT.md"]


def _kit_readme(precision: str, batch: int) -> str:
    what = "int8 weights, fp16 compute (W8A16)" if precision == "int8" else "fp16 weights and compute"
    return f"""# Core ML kit ({precision}: {what})

`{PACKAGE}` is a Core ML ML Program. It was converted and checked on Linux, where Core ML cannot
run: the parity in this bundle's report was predicted by a CPU stand-in (`standin.*.onnx`),
not measured on Apple hardware. Verify it on the device class you ship to.

1. Copy this directory to a Mac (macOS 13+; Apple silicon for the Neural Engine).
2. `pip install coremltools numpy`
3. `python {KIT_SCRIPT}` loads the package, runs the inputs in `reference.npz` (batch {batch}),
   compares with the PyTorch outputs shipped there (exit 4 on mismatch) and times each compute
   unit (`--compute-units ALL,CPU_ONLY,CPU_AND_GPU,CPU_AND_NE`, `--runs 200`).
   It also measures what the report could not here: `device_profile` (vitedge's memory / load /
   first-inference / p50-p90-p99 fields; on macOS the memory peaks count from process start) and
   `throughput` (images/s, 1-2 threads with a model each; `--no-throughput` skips it).
4. In an app: drag `{PACKAGE}` into Xcode; the input is the preprocessed float32 tensor `input`
   described in the package, the output `logits`. Preprocessing and class names are in the
   package's user-defined metadata (`vitedge.preprocess`, `vitedge.classes`).
"""


def _build(ctx: BuildContext, precision: str) -> Artifact:
    with _coreml_quiet():
        import coremltools as ct

    from vitedge.quiet import quiet
    from vitedge.verify.tolerances import tolerance_for

    batch = ctx.export.static_batch or 1
    stage = "coremltools conversion"
    try:
        with quiet(), _coreml_quiet():
            mlmodel = _convert(ctx, batch)
            if precision == "int8":
                stage = "coremltools weight quantisation"
                mlmodel = _quantize_weights(mlmodel)
            _describe(mlmodel, ctx, precision)
            package = ctx.bundle_dir / PACKAGE
            if package.exists():
                shutil.rmtree(package)
            mlmodel.save(str(package))
    except UsageError:
        raise
    except Exception as e:  # converter errors come from coremltools' MIL passes and torch
        msg = str(e).strip().splitlines()[0][:240] if str(e).strip() else type(e).__name__
        # the weight quantisation comes after a conversion that worked: coreml-fp16 would build
        other = "coreml-fp16, or " if stage != "coremltools conversion" else ""
        raise ExportError(f"Core ML {stage} failed: {msg}; try {other}check coremltools {ct.__version__} "
                          "supports torch's ops for this model, or another target (onnx-fp32, ov-fp16)") from e
    stage = "stand-in"
    standin, standin_facts = _standin(ctx, precision)
    kit_files = _write_kit(ctx, precision, batch, tolerance_for(precision, untrained=ctx.loaded.card.untrained))
    files = ctx.files_of(ctx.bundle_dir / PACKAGE)
    details: dict[str, Any] = {
        "coremltools": ct.__version__,
        "format": "mlprogram", "frontend": "torch.export ExportedProgram",
        "deployment_target": ctx.options.deployment_target,
        "compute_precision": "fp16",
        "weights": "int8 symmetric per-channel (linear_quantize_weights), fp16 activations"
                   if precision == "int8" else "fp16",
        "batch": {"static": batch},
        "metadata_keys": ["vitedge.preprocess", "vitedge.classes", "vitedge.card", "vitedge.precision"],
        "package_files": len(files),
        "package_bytes": sum((ctx.bundle_dir / f).stat().st_size for f in files),
        "standin": {"file": standin, **standin_facts},
        "kit_files": kit_files,
        "device_profile_command": DEVICE_PROFILE_COMMAND,  # report.json/md name it (Core ML cannot run here)
        "activation_quantisation": "not offered from Linux (coremltools calibrates it by running Core ML)"
                                   if precision == "int8" else None,
        # the bundle README's app snippet (vitedge.bundle.readme): its runtime here is the stand-in's
        "app_snippets": [["Swift (iOS/macOS, Core ML; not compiled here)", SWIFT_SNIPPET.replace("{package}", PACKAGE)]],
    }
    return Artifact(
        standin, [*files, standin, *kit_files], "onnxruntime", {"graph_optimization": "disable"},
        details=details, predicted_by=PREDICTED_BY,
        notes=["Core ML cannot run on Linux: the package was converted and checked (spec, metadata) but "
               "NOT run here; parity is predicted by a CPU stand-in, and the device profile (memory, load, "
               "first inference) and throughput were not measured. Run verify_coreml.py on a Mac (KIT.md): "
               "it checks parity and measures both."],
    )


SWIFT_SNIPPET = """\
let url = try MLModel.compileModel(at: Bundle.main.url(forResource: "{package}", withExtension: nil)!)
let model = try MLModel(contentsOf: url)
let input = try MLMultiArray(shape: [1, 3, {h}, {w}], dataType: .float32)  // {fill}
let out = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: ["input": input]))
let logits = out.featureValue(for: "logits")!.multiArrayValue!  // {c} values"""


def build_coreml_fp16(ctx: BuildContext) -> Artifact:
    return _build(ctx, "fp16")


def build_coreml_int8(ctx: BuildContext) -> Artifact:
    return _build(ctx, "int8")


_CML: dict[str, Any] = dict(runtime="onnxruntime", options=CoreMLOptions, extra="coreml", requires=("coremltools", "torch"),
            source="onnx", kit=True, auto=("mobile",))
register_target(Target(
    name="coreml-fp16", precision="fp16", hooks=Hooks(build=build_coreml_fp16), **_CML,
    description="Core ML .mlpackage (ML Program, fp16) kit for iOS/macOS; parity predicted on CPU"))
register_target(Target(
    name="coreml-int8", precision="int8", hooks=Hooks(build=build_coreml_int8), **_CML,
    description="Core ML .mlpackage, int8 weights + fp16 compute (W8A16) kit; parity predicted on CPU"))
