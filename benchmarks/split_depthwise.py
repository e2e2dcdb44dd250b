"""Before/after of `split-large-depthwise` (vitedge.export.rewrites.SplitDepthwise) on the float
XNNPACK targets: the same network converted with its 7x7 depthwise convolutions as they are and
as column bands, timed side by side.

    python benchmarks/split_depthwise.py [--models convnext-zepto,timm:convnext_tiny] [--img-size 224]

Each model (random-init timm weights; the timing does not depend on them) is converted four times
here, as the et-fp32 and litert-fp32 builds convert it (ExecuTorch: torch.export ->
XnnpackPartitioner; LiteRT: litert_torch.convert), and through vitedge's own et-int8 build, once
without and once with the rewrite (each runtime's layout of it: SplitDepthwise's docstring). The
pairs are timed in alternating blocks in one process (vitedge's runners, batch 1), so both see
the same machine; the table gives the median of the block medians, the ratio, and the time
XNNPACK's own profiler (ETDump, ExecuTorch only) puts in the float convolutions.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import heading, model_args, publish  # noqa: E402

MODELS = ("convnext-zepto", "timm:convnext_tiny")


def load(name: str, size: int):  # type: ignore[no-untyped-def]
    from vitedge.models.resolve import load_model

    if name.startswith("timm:"):
        import timm

        return timm.create_model(name.removeprefix("timm:"), pretrained=False).eval(), (size, size)
    loaded = load_model(name)
    return loaded.module.eval(), loaded.card.preprocess.input_size


def build(module, x, path: Path, runtime: str) -> None:  # type: ignore[no-untyped-def]
    import torch

    from vitedge.quiet import native_stderr, quiet

    with quiet(), native_stderr(), torch.no_grad():
        if runtime == "executorch":
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            program = to_edge_transform_and_lower(torch.export.export(module, (x,)),
                                                  partitioner=[XnnpackPartitioner()]).to_executorch()
            path.write_bytes(program.buffer)
        else:
            import litert_torch

            litert_torch.convert(module, (x,)).export(str(path))


def build_et_int8(name: str, size: int, rewrites: tuple[str, ...], out: Path) -> Path:
    """vitedge's own et-int8 build (64 synthetic calibration images, its defaults: the large
    depthwise convolutions kept float), with or without the rewrite."""
    from vitedge.calib.source import load_calibration
    from vitedge.export.config import ExportConfig
    from vitedge.models.resolve import load_model
    from vitedge.quiet import native_stderr, quiet
    from vitedge.targets.context import BuildContext
    from vitedge.targets.executorch import EtOptions
    from vitedge.targets.executorch import build_et_int8 as build

    timm = name.startswith("timm:")
    loaded = load_model(name, random_init=timm, overrides={"img_size": size} if timm else None)
    (out / "b").mkdir(parents=True)
    (out / "w").mkdir()
    ctx = BuildContext(loaded=loaded, bundle_dir=out / "b", work_dir=out / "w", onnx=None, options=EtOptions(),
                       export=ExportConfig(rewrites=rewrites), threads=2,
                       calibration=load_calibration("synthetic", loaded.card.preprocess, 64, 0))
    with quiet(), native_stderr():
        return out / "b" / build(ctx).main_file


def depthwise_ms(path: Path, threads: int) -> str:
    from vitedge.runtimes.executorch_runner import ExecuTorchRunner

    with ExecuTorchRunner(path, threads=threads) as r:
        prof = r.op_profile(runs=10)
    conv = [row for row in prof["ops"] if row["op"].startswith("Convolution (NHWC, F32)")]
    return ", ".join(f"{row['op'].removeprefix('Convolution (NHWC, F32) ')} x{row['count']} {row['ms']:.2f}"
                     for row in conv) or "-"


def time_pair(paths: dict[str, Path], runtime: str, x, threads: int, blocks: int = 7) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from vitedge.runtimes.open import open_runner

    feed = {"input": x.numpy()}
    runners = {k: open_runner(p, threads) for k, p in paths.items()}
    medians: dict[str, list[float]] = {k: [] for k in paths}
    for r in runners.values():
        r.activate()
    try:
        name = runners["before"].inputs()[0].name
        feed = {name: x.numpy()}
        for _ in range(blocks):
            for k, r in runners.items():
                for _ in range(3):
                    r.infer(feed)
                times = []
                for _ in range(15):
                    t0 = time.perf_counter()
                    r.infer(feed)
                    times.append((time.perf_counter() - t0) * 1000)
                medians[k].append(statistics.median(times))
    finally:
        for r in runners.values():
            r.deactivate()
    return {k: statistics.median(v) for k, v in medians.items()}


def main() -> None:
    import torch

    from vitedge.export.rewrites import apply_rewrites

    a = model_args(__doc__, MODELS)
    t0 = time.perf_counter()
    lines = heading("Large depthwise convolutions as bands on XNNPACK (et-fp32, litert-fp32, et-int8)", a.threads)
    lines += ["| model | runtime | before ms | after ms | after / before | XNNPACK convolutions before -> after "
              "(ETDump, ms per inference) |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="vitedge-split-") as tmp:
        for name in a.models.split(","):
            module, (h, w) = load(name, a.img_size)
            x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
            split, counts = apply_rewrites(module, ("split-large-depthwise",))  # et-fp32, et-int8
            padded, _ = apply_rewrites(module, ("split-large-depthwise-padded",))  # litert-fp32/fp16
            with torch.no_grad():
                diff = float((split(x) - module(x)).abs().max())
            for runtime, ext in (("executorch", "pte"), ("litert", "tflite"), ("et-int8", "pte")):
                paths = {k: Path(tmp) / f"{name.replace(':', '_')}-{runtime}-{k}.{ext}" for k in ("before", "after")}
                if runtime == "et-int8":
                    paths = {k: build_et_int8(name, a.img_size, rw, Path(tmp) / f"{name.replace(':', '_')}-int8-{k}")
                             for k, rw in (("before", ()), ("after", ("split-large-depthwise",)))}
                else:
                    build(module, x, paths["before"], runtime)
                    build(split if runtime == "executorch" else padded, x, paths["after"], runtime)
                t = time_pair(paths, runtime, x, a.threads)
                convs = (f"{depthwise_ms(paths['before'], a.threads)} -> {depthwise_ms(paths['after'], a.threads)}"
                         if runtime != "litert" else "no op profiler")
                lines.append(f"| {name} ({counts['split-large-depthwise']} split, max diff {diff:.1e}) | {runtime} | "
                             f"{t['before']:.2f} | {t['after']:.2f} | {t['after'] / t['before']:.2f}x | {convs} |")
                print(lines[-1], flush=True)
    publish(lines, a.out, t0)


if __name__ == "__main__":
    main()
