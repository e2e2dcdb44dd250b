"""The top-level pipeline: the only place that strings the stages together.

    load (done by the caller) -> export ONNX -> target build (quantise / convert / compile)
        -> run (artifact runner vs PyTorch reference) -> compare (parity) -> time (latency)
        -> bundle (artifact + manifest + reference outputs + report), renamed into place

No stage calls another behind the caller's back: each target's build receives the exported
ONNX from here rather than re-exporting, and parity/latency are measured here for every target
the same way.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.bench.latency import LatencyStats, time_calls_with_progress
from vitedge.calib import synthetic
from vitedge.calib.datasets import SYNTHETIC, eval_data, synthetic_split
from vitedge.card import ModelCard
from vitedge.errors import MissingDependencyError, UsageError
from vitedge.export.onnx_export import ExportConfig, ExportInfo, export_onnx
from vitedge.fsutil import atomic_dir
from vitedge.models.resolve import LoadedModel
from vitedge.progress import stderr_console
from vitedge.runtimes import runner_class
from vitedge.runtimes.base import Runner, default_threads
from vitedge.runtimes.torch_runner import TorchRunner
from vitedge.sysinfo import system_info
from vitedge.targets.context import BuildContext
from vitedge.targets.registry import Artifact, Target, get_target
from vitedge.verify.parity import ParityResult, compare
from vitedge.verify.tolerances import tolerance_for

REFERENCE_FILE = "reference.npz"
N_REFERENCE = 4  # per input set, shipped in the bundle for on-device re-verification


@dataclass(frozen=True)
class BenchConfig:
    batch: int = 1
    warmup: int = 10
    min_runs: int = 30
    budget_s: float = 3.0


@dataclass(frozen=True)
class ExportRequest:
    target: str
    out: Path
    force: bool = False
    export: ExportConfig = ExportConfig()
    eval_data: str = SYNTHETIC  # "synthetic" or a labelled image folder
    eval_n: int | None = None  # images for parity/accuracy (default: the whole test split)
    random_n: int = 16  # seeded random inputs in the model's value range
    seed: int = 0
    threads: int | None = None
    tolerance: dict[str, float | None] = field(default_factory=dict)
    bench: BenchConfig = BenchConfig()
    calibration: Any = None  # a CalibrationSet for targets that need one
    options: dict[str, Any] = field(default_factory=dict)  # target-specific options
    parity_batch: int = 32
    budget: Any = None  # vitedge.fallback.Budget: accuracy-aware fallback for INT8/FP16 targets
    fallback_n: int = 1000  # search-set images (shapes10 val, or half of an --eval folder)


@dataclass
class ParityInputs:
    sets: dict[str, np.ndarray]  # name -> (N, 3, H, W) float32
    labels: np.ndarray | None  # for the "images" set, when the classes match
    description: str
    notes: list[str]


@dataclass
class ExportReport:
    target: str
    precision: str
    out: Path
    artifact: Artifact
    parity: ParityResult
    latency: dict[str, LatencyStats]  # "artifact", "reference"
    runner_info: dict[str, Any]
    reference_info: dict[str, Any]
    export_info: dict[str, Any] | None
    artifact_bytes: int
    seconds: float
    card: ModelCard
    system: dict[str, Any]
    notes: list[str]
    calibration: dict[str, Any] | None = None
    fallback: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.parity.passed

    @property
    def speedup(self) -> float:
        return self.latency["reference"].p50 / self.latency["artifact"].p50

    def to_dict(self) -> dict[str, Any]:
        p = self.parity.to_dict()
        acc = self.parity.accuracy or {}
        return {
            "target": self.target,
            "precision": self.precision,
            "passed": self.passed,
            "artifact": self.artifact.main_file,
            "artifact_files": self.artifact.files,
            "artifact_bytes": self.artifact_bytes,
            "runtime": self.artifact.runtime,
            "predicted_by": self.artifact.predicted_by,
            "parity": p,
            "accuracy": {"reference": acc.get("reference"), "artifact": acc.get("artifact"),
                         "delta_pts": acc.get("delta_pts"), "n": acc.get("n"), "data": acc.get("data")},
            "latency_ms": {k: v.to_dict() for k, v in self.latency.items()},
            "speedup_vs_reference": self.speedup,
            "runner": self.runner_info,
            "reference_runner": self.reference_info,
            "export": self.export_info,
            "details": self.artifact.details,
            "calibration": self.calibration,
            "fallback": self.fallback,
            "model": {"arch": self.card.arch, "source": self.card.source,
                      "input_size": list(self.card.preprocess.input_size),
                      "classes": len(self.card.classes)},
            "system": self.system,
            "seconds": round(self.seconds, 1),
            "notes": self.notes + self.artifact.notes + self.parity.notes,
        }


def parity_inputs(card: ModelCard, request: ExportRequest, exclude: frozenset[str] = frozenset()) -> ParityInputs:
    """Seeded random tensors in the model's value range, plus real preprocessed images."""
    spec = card.preprocess
    h, w = spec.input_size
    lo, hi = spec.input_range()
    rng = np.random.default_rng(request.seed)
    sets = {"random": rng.uniform(lo, hi, size=(request.random_n, 3, h, w)).astype(np.float32)}
    if request.eval_data == SYNTHETIC and card.classes != synthetic.CLASSES:
        # Real images still exercise realistic numerics, but their labels mean nothing here.
        note = "accuracy not measured: the model was not trained on shapes10; pass --eval DIR"
        if h != w:
            return ParityInputs(sets, None, "random inputs only", [note])
        data = synthetic_split("test", spec, request.eval_n or 200, request.seed)
        sets["images"] = data.as_inputs(spec)
        return ParityInputs(sets, None, data.description, [note])
    held_out = frozenset(request.calibration.excluded_from_eval) if request.calibration else frozenset()
    held_out |= frozenset(exclude)
    data = eval_data(request.eval_data, spec, card.classes, request.eval_n, request.seed, held_out)
    sets["images"] = data.as_inputs(spec)
    return ParityInputs(sets, np.asarray(data.labels), data.description, [])


@dataclass
class SearchSet:
    """Held-out labelled images the accuracy-aware fallback searches on (never the report's)."""

    x: np.ndarray
    labels: np.ndarray
    description: str
    paths: frozenset[str]  # folder images used here, excluded from the final accuracy check


def search_set(card: ModelCard, request: ExportRequest) -> SearchSet:
    from vitedge.calib.datasets import folder_images
    from vitedge.calib.folder import scan_folder

    spec = card.preprocess
    if request.eval_data == SYNTHETIC:
        if card.classes != synthetic.CLASSES:
            raise UsageError("--max-drop needs labelled images for this model: pass --eval DIR")
        data = synthetic_split("val", spec, request.fallback_n, request.seed)
        return SearchSet(data.as_inputs(spec), np.asarray(data.labels), data.description + " (search set)", frozenset())
    folder = scan_folder(request.eval_data, labelled=True)
    calib = set(request.calibration.excluded_from_eval) if request.calibration else set()
    pool = [i for i, p in enumerate(folder.paths) if str(p) not in calib]
    rng = np.random.default_rng(request.seed + 1)
    half = sorted(rng.permutation(pool)[: max(1, min(request.fallback_n, len(pool) // 2))].tolist())
    data = folder_images(folder, spec, card.classes, np.asarray(half, np.int64))
    return SearchSet(data.as_inputs(spec), np.asarray(data.labels), data.description + " (search half)",
                     frozenset(str(folder.paths[i]) for i in half))


def run_batched(runner: Runner, x: np.ndarray, batch: int, static_batch: int | None = None) -> dict[str, np.ndarray]:
    """Run (N, ...) through `runner` in batches; static-batch models get a padded last batch."""
    name = runner.inputs()[0].name
    step = static_batch or batch
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(x), step):
        chunk = x[i : i + step]
        n = len(chunk)
        if static_batch and n < static_batch:
            chunk = np.concatenate([chunk, np.zeros((static_batch - n, *chunk.shape[1:]), chunk.dtype)])
        for k, v in runner.infer({name: np.ascontiguousarray(chunk)}).items():
            parts.setdefault(k, []).append(v[:n])
    return {k: np.concatenate(v) for k, v in parts.items()}


def open_artifact_runner(bundle: Path, artifact: Artifact, threads: int) -> Runner:
    cls = runner_class(artifact.runtime)
    return cls(bundle / artifact.main_file, threads=threads, **artifact.runner_options)


def _bench(runners: dict[str, Runner], cfg: BenchConfig, static_batch: int | None,
           input_shape: tuple[int, ...]) -> dict[str, LatencyStats]:
    batch = static_batch or cfg.batch
    x = np.random.default_rng(123).standard_normal((batch, *input_shape)).astype(np.float32)
    calls = {}
    for key, runner in runners.items():
        feed = {runner.inputs()[0].name: x}
        calls[key] = (lambda r=runner, f=feed: r.infer(f))
    return time_calls_with_progress(
        calls, batch, f"timing {' vs '.join(runners)} (batch {batch}, interleaved)",
        warmup=cfg.warmup, min_runs=cfg.min_runs, budget_s=cfg.budget_s)


class SharedWork:
    """Work several targets of one model share: one ONNX export per export config, one set of
    parity inputs and one set of reference outputs (used by `auto-cpu` and `vitedge matrix`)."""

    def __init__(self, root: Path):
        self.root = root
        self._exports: dict[ExportConfig, ExportInfo] = {}
        self.inputs: ParityInputs | None = None
        self.reference: dict[str, dict[str, np.ndarray]] | None = None

    def onnx(self, loaded: LoadedModel, cfg: ExportConfig, dst_dir: Path) -> ExportInfo:
        """A private copy (in dst_dir) of the model's ONNX export under `cfg`, exported once."""
        if cfg not in self._exports:
            cache_dir = self.root / f"onnx-{len(self._exports)}"
            cache_dir.mkdir(parents=True)
            self._exports[cfg] = _export(loaded, cfg, cache_dir)
        cached = self._exports[cfg]
        for f in cache_dir_files(cached.path):
            shutil.copy2(f, dst_dir / f.name)
        return replace(cached, path=dst_dir / cached.path.name)


def cache_dir_files(onnx_path: Path) -> list[Path]:
    data = onnx_path.with_name(onnx_path.name + ".data")
    return [onnx_path, data] if data.exists() else [onnx_path]


def _export(loaded: LoadedModel, cfg: ExportConfig, work_dir: Path) -> ExportInfo:
    with stderr_console.status(f"exporting {loaded.card.arch} to ONNX (opset {cfg.opset})"):
        return export_onnx(loaded.module, loaded.card, work_dir / "model.onnx", cfg)


def check_target_ready(target: Target, request: ExportRequest) -> None:
    missing = target.missing()
    if missing:
        raise MissingDependencyError(
            f"target {target.name} needs {', '.join(missing)}; pip install 'vitedge[{_extra_for(missing[0])}]'"
        )
    if target.needs_calibration and request.calibration is None:
        raise UsageError(f"target {target.name} needs calibration data: pass --calib synthetic|DIR|FILE.npy")


def export_target(loaded: LoadedModel, request: ExportRequest, shared: SharedWork | None = None) -> ExportReport:
    """Build, verify and time one target; the bundle appears at request.out only when complete."""
    target: Target = get_target(request.target)
    check_target_ready(target, request)
    threads = request.threads or default_threads()
    t0 = time.perf_counter()
    card = loaded.card
    tolerance = tolerance_for(target.precision, **request.tolerance)
    # Read the eval data (and the fallback's search set) before any work is written.
    search = search_set(card, request) if request.budget is not None else None
    if shared is not None and shared.inputs is not None and search is None:
        inputs = shared.inputs
    else:
        inputs = parity_inputs(card, request, search.paths if search else frozenset())
        if shared is not None and search is None:
            shared.inputs = inputs

    with atomic_dir(request.out, force=request.force) as bundle, \
            tempfile.TemporaryDirectory(prefix="vitedge-work-") as work:
        work_dir = Path(work)
        export_info = None
        if target.needs_onnx:
            export_info = (shared.onnx(loaded, request.export, work_dir) if shared
                           else _export(loaded, request.export, work_dir))
        ctx = BuildContext(loaded=loaded, bundle_dir=bundle, work_dir=work_dir, onnx=export_info,
                           calibration=request.calibration, options=dict(request.options), threads=threads,
                           search=search, budget=request.budget)
        artifact = target.build(ctx)
        fallback = None
        if search is not None and not artifact.details.get("accuracy_control"):
            from vitedge.fallback import run_fallback

            with TorchRunner(loaded.module, (3, *card.preprocess.input_size), threads=threads) as ref_runner:
                ref_logits = next(iter(run_batched(ref_runner, search.x, request.parity_batch).values()))
            artifact, fb = run_fallback(
                target, ctx, artifact, request.budget, search.x, search.labels, ref_logits, search.description,
                lambda d, a: open_artifact_runner(d, a, threads), request.parity_batch)
            fallback = fb.to_dict()

        static = request.export.static_batch
        shape = (3, *card.preprocess.input_size)
        reference = TorchRunner(loaded.module, shape, threads=threads)
        runner = open_artifact_runner(bundle, artifact, threads)
        with reference, runner:
            ref_out = shared.reference if shared and shared.reference is not None else {}
            art_out = {}
            for set_name, x in inputs.sets.items():
                with stderr_console.status(f"parity: running {len(x)} {set_name} inputs"):
                    if set_name not in ref_out:
                        ref_out[set_name] = run_batched(reference, x, request.parity_batch, static)
                    art_out[set_name] = run_batched(runner, x, request.parity_batch, static)
            if shared is not None:
                shared.reference = ref_out
            parity = compare(ref_out, art_out, tolerance, inputs.labels, "images", inputs.description)
            parity = replace(parity, notes=list(inputs.notes))
            latency = _bench({"artifact": runner, "reference": reference}, request.bench, static, shape)
            runner_info, reference_info = runner.info(), reference.info()

        _write_reference(bundle / REFERENCE_FILE, inputs, ref_out, art_out)
        artifact_bytes = sum((bundle / f).stat().st_size for f in artifact.files)
        report = ExportReport(
            target=target.name, precision=target.precision, out=request.out, artifact=artifact,
            parity=parity, latency=latency, runner_info=runner_info, reference_info=reference_info,
            export_info=export_info.to_dict() if export_info else None, artifact_bytes=artifact_bytes,
            seconds=time.perf_counter() - t0, card=card, system=system_info(), notes=[],
            calibration=request.calibration.provenance() if request.calibration and target.needs_calibration else None,
            fallback=fallback or artifact.details.get("accuracy_control"),
        )
        if artifact.predicted_by:
            report.notes.append(f"latency is of the CPU stand-in ({artifact.predicted_by}), not of TensorRT")
        from vitedge.bundle.writer import write_bundle_files

        write_bundle_files(bundle, report, request)
    return report


def _write_reference(path: Path, inputs: ParityInputs, ref_out: dict[str, dict[str, np.ndarray]],
                     art_out: dict[str, dict[str, np.ndarray]]) -> None:
    """A few fixed inputs, the PyTorch outputs for them, and what the artifact gave at export:
    `vitedge verify` re-runs them on the device."""
    arrays: dict[str, np.ndarray] = {}
    for set_name, x in inputs.sets.items():
        arrays[f"{set_name}/input"] = x[:N_REFERENCE]
        for out_name, y in ref_out[set_name].items():
            arrays[f"{set_name}/{out_name}"] = y[:N_REFERENCE]
            arrays[f"{set_name}/{out_name}@artifact"] = art_out[set_name][out_name][:N_REFERENCE]
    np.savez_compressed(path, **arrays)


def _extra_for(module: str) -> str:
    return {"onnxruntime": "ort", "openvino": "ov", "nncf": "ov", "torchao": "torchao",
            "tensorrt": "trt", "timm": "timm"}.get(module, "all")
