"""The top-level pipeline: the only place that strings the stages together.

    inputs   parity inputs (+ the fallback's search set), read before anything is written
    build    fp32 ONNX export (shared) -> the target's build -> accuracy-aware fallback
    run      artifact runner and PyTorch reference on the same inputs -> compare (parity)
    time     artifact vs reference latency
    write    reference outputs, report.json/.md, manifest -> bundle renamed into place

No stage calls another behind the caller's back: each target's build receives the exported
ONNX from here rather than re-exporting, and parity/latency are measured here for every target
the same way (vitedge.runtimes.open: open_runner + run_batched; vitedge.verify.parity.compare).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from vitedge.bench.latency import LatencyStats, time_calls_with_progress
from vitedge.bundle.manifest import PIXELS_SUFFIX, REFERENCE
from vitedge.errors import ExportError, VitedgeError
from vitedge.export.onnx_export import ExportConfig, ExportInfo, export_onnx
from vitedge.fsutil import atomic_dir
from vitedge.inputs import (
    EvalSpec,
    ParityInputs,
    SearchSet,
    calibration_held_out,
    parity_inputs,
    search_set,
)
from vitedge.models.resolve import LoadedModel
from vitedge.options import describe
from vitedge.progress import stderr_console
from vitedge.report import ExportReport
from vitedge.request import BenchConfig, ExportRequest
from vitedge.runtimes.base import Runner, default_threads
from vitedge.runtimes.open import (
    CAMERA_HW,
    run_batched,
    run_pixels,
    runner_for,
    static_batch,
    timing_feed,
)
from vitedge.runtimes.torch_runner import TorchRunner
from vitedge.sysinfo import system_info
from vitedge.targets.context import BuildContext
from vitedge.targets.registry import Artifact, Target, get_target
from vitedge.verify.parity import (
    MIN_INPUT_DEPENDENCE,
    RANDOM_SET,
    ParityResult,
    compare,
    input_dependence,
    proves_little_note,
)
from vitedge.verify.tolerances import (
    SMALL_SET,
    UNTRAINED_NOTE,
    Tolerance,
    for_small_set,
    not_judged,
    small_set_note,
    tolerance_for,
)

# Precisions whose error depends on the input distribution (calibrated scales, an 8-bit
# mantissa): judged only on images of the model's own distribution (vitedge.inputs, rule 4).
DISTRIBUTION_JUDGED = ("int8", "bf16")
N_REFERENCE = 4  # per input set, shipped in the bundle for on-device re-verification


class SharedWork:
    """Work several targets of one model share (`auto-*`, `vitedge matrix`): one ONNX export per
    export config, and parity inputs + reference outputs per (model, EvalSpec). Every cache is
    keyed by what it caches, so a request with other eval data never gets another's."""

    def __init__(self, root: Path):
        self.root = root
        self._exports: dict[tuple[int, ExportConfig], ExportInfo] = {}
        self._inputs: dict[tuple[str, EvalSpec], ParityInputs] = {}
        self._reference: dict[tuple[int, str, EvalSpec], dict[str, dict[str, np.ndarray]]] = {}

    def onnx(self, loaded: LoadedModel, cfg: ExportConfig, dst_dir: Path) -> ExportInfo:
        """A private copy (in dst_dir) of the model's ONNX export under `cfg`, exported once."""
        key = (id(loaded.module), cfg)
        if key not in self._exports:
            cache_dir = self.root / f"onnx-{len(self._exports)}"
            cache_dir.mkdir(parents=True)
            self._exports[key] = _export(loaded, cfg, cache_dir)
        cached = self._exports[key]
        for f in onnx_files(cached.path):
            shutil.copy2(f, dst_dir / f.name)
        return replace(cached, path=dst_dir / cached.path.name)

    def inputs(self, loaded: LoadedModel, spec: EvalSpec) -> ParityInputs:
        key = (loaded.card.to_json(), spec)
        if key not in self._inputs:
            self._inputs[key] = parity_inputs(loaded.card, spec)
        return self._inputs[key]

    def reference(self, loaded: LoadedModel, spec: EvalSpec) -> dict[str, dict[str, np.ndarray]]:
        """The mutable reference-output cache for (model, spec): filled by `run_stage`."""
        return self._reference.setdefault((id(loaded.module), loaded.card.to_json(), spec), {})


def onnx_files(onnx_path: Path) -> list[Path]:
    data = onnx_path.with_name(onnx_path.name + ".data")
    return [onnx_path, data] if data.exists() else [onnx_path]


def _export(loaded: LoadedModel, cfg: ExportConfig, work_dir: Path) -> ExportInfo:
    with stderr_console.status(f"exporting {loaded.card.arch} to ONNX (opset {cfg.opset})"):
        return export_onnx(loaded.module, loaded.card, work_dir / "model.onnx", cfg)


def check_target_ready(target: Target, request: ExportRequest) -> None:
    from vitedge.errors import UsageError

    target.check_installed()
    if request.export.dynamic_size and not target.dynamic_size:
        from vitedge.targets.registry import all_targets

        able = ", ".join(t.name for t in all_targets() if t.dynamic_size)
        raise UsageError(f"--dynamic-size: {target.name} builds fixed-size artifacts; targets that keep a "
                         f"dynamic height/width: {able}")
    problem = target.embed_problem(request.export.opset) if request.embed_preprocessing else None
    if problem:
        raise UsageError(problem)
    if target.needs_calibration and request.calibration is None:
        raise UsageError(f"target {target.name} needs calibration data: pass --calib synthetic|DIR|FILE.npy")


def open_artifact(bundle: Path, artifact: Artifact, threads: int | None) -> Runner:
    """A runner for an artifact that is not in a manifest yet (during the build)."""
    return runner_for(artifact.runtime, bundle / artifact.main_file, threads, artifact.runner_options)


# -- stages ------------------------------------------------------------------------------------

def inputs_stage(loaded: LoadedModel, request: ExportRequest, shared: SharedWork | None, target: Target,
                 ) -> tuple[EvalSpec, ParityInputs, SearchSet | None]:
    """Read the eval data (and the fallback's search set) before any work is written. An artifact
    that will take pixels is judged on pixels (of its Target.pixel_size)."""
    search = None
    if request.budget is not None:
        data, _ = request.judging(loaded.card)
        search = search_set(loaded.card, data, request.fallback_n, request.seed,
                            calibration_held_out(request.calibration), need_labels=request.budget.max_drop is not None)
    spec = request.eval_spec(loaded.card, search.paths if search else frozenset())
    if request.embed_preprocessing:
        spec = replace(spec, pixels=target.pixel_size)
    inputs = shared.inputs(loaded, spec) if shared else parity_inputs(loaded.card, spec)
    return spec, inputs, search


def build_stage(target: Target, ctx: BuildContext, request: ExportRequest, search: SearchSet | None,
                ) -> tuple[Artifact, dict[str, Any] | None]:
    """The target's build, then (with a budget) the accuracy-aware fallback."""
    artifact = target.build(ctx)
    if search is None or artifact.details.get("accuracy_control"):
        return artifact, artifact.details.get("accuracy_control")
    from vitedge.fallback import run_fallback

    with TorchRunner(ctx.loaded.module, (3, *ctx.loaded.card.preprocess.input_size), threads=ctx.threads) as ref:
        ref_logits = next(iter(run_batched(ref, search.x, request.parity_batch).values()))
    artifact, fb = run_fallback(target, ctx, artifact, request.budget, search, ref_logits,
                                lambda d, a: open_artifact(d, a, ctx.threads), request.parity_batch)
    return artifact, fb.to_dict()


def embed_stage(target: Target, ctx: BuildContext, artifact: Artifact) -> Artifact:
    """--embed-preprocessing: the target's hook rewrites the artifact to take pixels."""
    from vitedge.export.pixels import EmbedError

    assert target.embed is not None  # check_target_ready refused the others
    try:
        with stderr_console.status("embedding the preprocessing in the artifact"):
            artifact = target.embed(ctx, artifact)
    except EmbedError as e:
        raise ExportError(f"--embed-preprocessing: {e}") from None
    except VitedgeError:
        raise
    except Exception as e:  # the runtime's graph tools failing on this model
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise ExportError(f"embedding the preprocessing in the {target.name} artifact failed: {type(e).__name__}: "
                          f"{msg}; export without --embed-preprocessing (the app then preprocesses: bundle "
                          "README)") from e
    artifact.notes.append("takes uint8 RGB pixels (NHWC) and preprocesses inside; judged on pixels, the "
                          "reference on the same pixels through the Python preprocessing")
    return artifact


def gate_stage(target: Target, loaded: LoadedModel, request: ExportRequest, inputs: ParityInputs,
               ) -> tuple[Tolerance, bool, list[str]]:
    """The parity gate for this target on these inputs: (tolerance, judged, notes)."""
    tolerance = tolerance_for(target.precision, untrained=loaded.card.untrained, pixels=request.embed_preprocessing,
                              **request.tolerance)
    if not inputs.representative and target.precision in DISTRIBUTION_JUDGED:
        return not_judged(), False, [
            f"NOT JUDGED: a {target.precision} artifact's error depends on the images it sees, and none of the "
            f"model's own were given; pass --calib DIR (images like the ones it will see: the ones calibration "
            "does not use judge it) or --eval DIR; the numbers below are on noise and shapes10, for reference only"]
    n = len(inputs.sets.get("images", ()))
    if 0 < n < SMALL_SET:
        overridden = {k for k, v in request.tolerance.items() if v is not None}
        return for_small_set(tolerance, n, overridden), True, [small_set_note(n)]
    return tolerance, True, []


def run_stage(reference: Runner, runner: Runner, inputs: ParityInputs, tolerance: Any, batch: int,
              ref_cache: dict[str, dict[str, np.ndarray]], judged: bool = True, gate_notes: list[str] | None = None,
              ) -> tuple[ParityResult, dict[str, dict[str, np.ndarray]]]:
    """Run every input set through the artifact (and the reference, unless cached); compare."""
    art_out = {}
    for set_name, x in inputs.sets.items():
        with stderr_console.status(f"parity: running {len(x)} {set_name} inputs"):
            if set_name not in ref_cache:
                ref_cache[set_name] = run_batched(reference, x, batch)
            try:
                art_out[set_name] = (run_pixels(runner, inputs.pixels[set_name], batch) if inputs.pixels
                                     else run_batched(runner, x, batch))
            except VitedgeError:  # already one clear line (Interrupted is no Exception: it passes)
                raise
            except Exception as e:  # the runtime itself failing on the built artifact
                msg = str(e).strip().splitlines()[0][:240] if str(e).strip() else ""
                raise ExportError(f"running the {runner.runtime} artifact on the parity inputs failed: "
                                  f"{type(e).__name__}: {msg}; the build finished but the artifact does "
                                  "not run here: try another target") from e
    ref_out = {k: ref_cache[k] for k in inputs.sets}
    parity = compare(ref_out, art_out, tolerance, inputs.labels, "images", inputs.description)
    judging = "images" if "images" in ref_out else RANDOM_SET
    first = next(iter(ref_out[judging].values()))
    dependence = input_dependence(first)
    notes = [*(gate_notes or []), *inputs.notes]
    if dependence < MIN_INPUT_DEPENDENCE:
        notes.append(proves_little_note(dependence, len(first)))
    return replace(parity, notes=notes, judged=judged, input_dependence=dependence,
                   images_n=len(inputs.sets["images"]) if "images" in inputs.sets else None), art_out


def placement_stage(runner: Runner) -> dict[str, Any] | None:
    """Where the artifact's ops run (Runner.placement). A profiler failing costs the report this
    section, never the export: the error is recorded in its place."""
    try:
        return runner.placement()
    except Exception as e:
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"}


def time_stage(runners: dict[str, Runner], cfg: BenchConfig, input_shape: tuple[int, ...]) -> dict[str, LatencyStats]:
    """p50/p90/... of each runner on one random batch (the static batch if the model has one),
    interleaved in this process."""
    batch = timing_batch(runners, cfg)
    x = np.random.default_rng(123).standard_normal((batch, *input_shape)).astype(np.float32)
    calls = {key: (lambda r=r, f={r.inputs()[0].name: timing_feed(r, x)}: r.infer(f)) for key, r in runners.items()}
    return time_calls_with_progress(
        calls, batch, f"timing {' vs '.join(runners)} (batch {batch}, interleaved)",
        warmup=cfg.warmup, min_runs=cfg.min_runs, budget_s=cfg.budget_s)


def timing_batch(runners: dict[str, Runner], cfg: BenchConfig) -> int:
    return next((b for b in (static_batch(r) for r in runners.values()) if b), None) or cfg.batch


def time_isolated_stage(bundle: Path, artifact: Artifact, loaded: LoadedModel, work_dir: Path, cfg: BenchConfig,
                        threads: int, batch: int) -> tuple[dict[str, LatencyStats], dict[str, Any]]:
    """The same measurement with artifact and reference each in its own process, one working at
    a time (BenchConfig.isolated). The reference process loads the module from a safetensors
    copy; the artifact opens with its runtime's options, as the finished bundle will. Its process
    also gives the artifact's device profile (memory, load cold/warm, first inference)."""
    from vitedge.bench.isolated import Contestant, time_isolated
    from vitedge.bench.profile import from_fields
    from vitedge.models.checkpoint import save_checkpoint
    from vitedge.progress import make_progress

    ckpt = work_dir / "reference.safetensors"
    save_checkpoint(ckpt, loaded.module, loaded.card)
    h, w = loaded.card.preprocess.input_size
    x = np.random.default_rng(123).standard_normal((batch, 3, h, w)).astype(np.float32)
    contestants = [Contestant("artifact", bundle / artifact.main_file, runtime=artifact.runtime,
                              runner_options=dict(artifact.runner_options or {})),
                   Contestant("reference", ckpt, torch=True)]
    with make_progress() as progress:
        task = progress.add_task(f"timing artifact vs reference (batch {batch}, own processes)", total=100)
        res = time_isolated(contestants, {batch: x}, threads, warmup=cfg.warmup, min_runs=cfg.min_runs,
                            budget_s=cfg.budget_s, on_round=lambda f: progress.update(task, completed=100 * f),
                            profile=("artifact",))
        progress.update(task, completed=100)
    stats = res[batch].stats
    return stats, from_fields(res[batch].profiles["artifact"], stats["artifact"]).to_dict()


def write_stage(bundle: Path, report: ExportReport, inputs: ParityInputs, ref_out: dict[str, dict[str, np.ndarray]],
                art_out: dict[str, dict[str, np.ndarray]], request: ExportRequest, target: Target) -> None:
    from vitedge.bundle.writer import write_bundle_files

    cache = report.artifact.runner_options.get("cache_dir")
    if cache:  # a runtime's model cache, filled by this export's own runs: the device makes its own
        shutil.rmtree(bundle / cache, ignore_errors=True)
    write_reference(bundle / REFERENCE, inputs, ref_out, art_out)
    write_bundle_files(bundle, report, request.export, target)


def export_target(loaded: LoadedModel, request: ExportRequest, shared: SharedWork | None = None) -> ExportReport:
    """Build, verify and time one target; the bundle appears at request.out only when complete."""
    target: Target = get_target(request.target)
    check_target_ready(target, request)
    # Typed options from an ExportPlan go to the build as they are; a plain {key: value} dict
    # (API callers, auto's shared values) is turned into this target's options here.
    options = request.options if isinstance(request.options, target.options) else target.options_from(request.options)
    threads = request.threads or default_threads()
    t0 = time.perf_counter()
    card = loaded.card
    spec, inputs, search = inputs_stage(loaded, request, shared, target)
    tolerance, judged, gate_notes = gate_stage(target, loaded, request, inputs)

    with atomic_dir(request.out, force=request.force) as bundle, \
            tempfile.TemporaryDirectory(prefix="vitedge-work-") as work:
        work_dir = Path(work)
        export_info = None
        export_cfg = target.export_config(request.export)
        if target.needs_onnx:
            export_info = (shared.onnx(loaded, export_cfg, work_dir) if shared
                           else _export(loaded, export_cfg, work_dir))
        ctx = BuildContext(loaded=loaded, bundle_dir=bundle, work_dir=work_dir, onnx=export_info, options=options,
                           export=export_cfg, calibration=request.calibration, threads=threads,
                           search=search, budget=request.budget,
                           pixels=request.embed_preprocessing and target.pixel_size == "fixed")
        artifact, fallback = build_stage(target, ctx, request, search)
        if request.embed_preprocessing:
            artifact = embed_stage(target, ctx, artifact)

        shape = (3, *card.preprocess.input_size)
        reference = TorchRunner(loaded.module, shape, threads=threads)
        runner = open_artifact(bundle, artifact, threads)
        ref_cache = shared.reference(loaded, spec) if shared else {}
        with reference, runner:
            parity, art_out = run_stage(reference, runner, inputs, tolerance, request.parity_batch, ref_cache,
                                        judged, gate_notes)
            if not request.bench.isolated:
                latency = time_stage({"artifact": runner, "reference": reference}, request.bench, shape)
            batch = timing_batch({"artifact": runner}, request.bench)
            runner_info, reference_info = runner.info(), reference.info()
            placement = None if artifact.predicted_by else placement_stage(runner)  # not a stand-in's
            batch_dim = static_batch(runner)
        device_profile = None
        if request.bench.isolated:  # after closing this process's runners: they would compete
            latency, device_profile = time_isolated_stage(bundle, artifact, loaded, work_dir, request.bench, threads,
                                                          batch)

        report = ExportReport(
            target=target.name, precision=target.precision, out=request.out, artifact=artifact,
            parity=parity, latency=latency, runner_info=runner_info, reference_info=reference_info,
            export_info=export_info.to_dict() if export_info else None,
            artifact_bytes=sum((bundle / f).stat().st_size for f in artifact.files),
            seconds=time.perf_counter() - t0, card=card, system=system_info(), notes=ctx.rewrite_notes(),
            calibration=request.calibration.provenance() if request.calibration and target.needs_calibration else None,
            fallback=fallback, options=describe(options) or None, batch_dim=batch_dim,
            latency_measured=("artifact and reference each in its own process, one at a time"
                              if request.bench.isolated else "interleaved in one process"),
            judged_on=inputs.description, placement=placement,
            device_profile=None if artifact.predicted_by else device_profile,  # not a stand-in's
        )
        if card.untrained:
            report.notes.append(UNTRAINED_NOTE)
            if card.untrained_fix:
                report.notes.append(f"random init: {card.untrained_fix}")
        if inputs.pixels:
            frame = "x".join(map(str, CAMERA_HW if spec.pixels == "any" else card.preprocess.input_size))
            report.notes.append(f"latency: the artifact is timed on {frame} uint8 RGB frames (its time includes "
                                "the preprocessing inside), the reference on the preprocessed model input")
        if artifact.predicted_by:
            report.notes.append(f"latency is of the CPU stand-in ({artifact.predicted_by}), not of the target runtime")
        write_stage(bundle, report, inputs, ref_cache, art_out, request, target)
    return report


def write_reference(path: Path, inputs: ParityInputs, ref_out: dict[str, dict[str, np.ndarray]],
                    art_out: dict[str, dict[str, np.ndarray]]) -> None:
    """A few fixed inputs, the PyTorch outputs for them, and what the artifact gave at export:
    `vitedge verify` re-runs them on the device."""
    arrays: dict[str, np.ndarray] = {}
    for set_name, x in inputs.sets.items():
        if inputs.pixels:  # images of different sizes: one array each (bundle.verify reads both)
            for i, p in enumerate(inputs.pixels[set_name][:N_REFERENCE]):
                arrays[f"{set_name}/input{PIXELS_SUFFIX}{i}"] = p
        else:
            arrays[f"{set_name}/input"] = x[:N_REFERENCE]
        for out_name, y in ref_out[set_name].items():
            arrays[f"{set_name}/{out_name}"] = y[:N_REFERENCE]
            arrays[f"{set_name}/{out_name}@artifact"] = art_out[set_name][out_name][:N_REFERENCE]
    np.savez_compressed(path, **arrays)
