"""The timm zoo: many architectures x every x86 CPU target and the TensorRT kits -> docs/zoo.md.

    python benchmarks/zoo.py                          # every arch below, every CPU target + TRT kits
    python benchmarks/zoo.py --archs resnet18,convnext_atto --targets onnx-fp32,ort-int8
    python benchmarks/zoo.py --render-only            # re-write docs/zoo.md from the stored cells
    python benchmarks/zoo.py --transformers           # docs/zoo.md's transformers section (below)

`--transformers`: one small random-init classifier per transformers family (tests/hf_models.py:
`from_config` + `save_pretrained` into a folder, with the family's image processor), each run as
`vitedge matrix FOLDER --random-init` (the folder's config, untrained weights: the same rules as
the timm rows) on every x86 CPU target, the TensorRT kits and the mobile targets (ExecuTorch,
LiteRT, Core ML kits). Its table replaces the part of docs/zoo.md after HF_MARKER.

Each architecture runs as `vitedge matrix timm:ARCH --random-init --img-size S ...` in its own
process (a crash, a hang or an out-of-memory in one architecture cannot take the others with it;
a timeout keeps the cells already written and marks the rest "not run (timeout)"). Random init:
no weights are reachable here, and none are needed to prove that an architecture exports,
quantises and matches PyTorch. Untrained models are judged on cosine, SQNR of the centred logits
and max error / logit spread (see vitedge.verify.tolerances), not on top-1 agreement.

Most rows run at a small input (64 px, 56 for patch-14 models) to keep the zoo inside ~1.5 h on
2 cores; a few run at their native size so the attention windows / position tables are exercised
as trained, and one ViT runs at a size it was not trained for (position embeddings resampled by
timm). Latencies are p50 at batch 1 on this machine at that size, measured inside each
architecture's matrix run: compare within a row, not across rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Arch:
    family: str  # the family as the issue names it (not vitedge's detected family)
    name: str  # timm model name (transformers: the family key of tests/hf_models.py)
    size: int  # input size used here
    why: str = ""  # what this row exercises
    hf: bool = False  # a transformers folder, not a timm name


ARCHS: tuple[Arch, ...] = (
    Arch("ViT", "vit_tiny_patch16_224", 224, "native size"),
    Arch("ViT", "vit_tiny_patch16_224", 288, "224-trained at 288: position embeddings resampled"),
    Arch("ViT + registers", "vit_small_patch14_reg4_dinov2", 56, "4 register tokens"),
    Arch("DeiT", "deit_tiny_patch16_224", 64),
    Arch("DeiT distilled", "deit_tiny_distilled_patch16_224", 64, "two heads, averaged in eval"),
    Arch("DeiT-III", "deit3_small_patch16_224", 64, "LayerScale"),
    Arch("DINOv2", "vit_small_patch14_dinov2", 56),
    Arch("EVA02", "eva02_tiny_patch14_224", 56, "RoPE, SwiGLU"),
    Arch("BEiT", "beit_base_patch16_224", 64, "relative position bias"),
    Arch("CaiT", "cait_xxs24_224", 64, "class-attention layers, LayerScale"),
    Arch("Swin", "swin_tiny_patch4_window7_224", 224, "native size: shifted 7x7 windows"),
    Arch("SwinV2", "swinv2_tiny_window8_256", 64, "cosine attention (ReduceL2), log-CPB"),
    Arch("ConvNeXt", "convnext_atto", 64),
    Arch("ConvNeXt-V2", "convnextv2_atto", 64, "GRN (ReduceL2)"),
    Arch("FastViT", "fastvit_t8", 64, "RepMixer"),
    Arch("EfficientFormer", "efficientformer_l1", 224, "attention bias built for the 224 grid"),
    Arch("EfficientViT", "efficientvit_m0", 64, "cascaded group attention (MSRA)"),
    Arch("MobileViT", "mobilevit_xxs", 64),
    Arch("LeViT", "levit_128s", 64),
    Arch("XCiT", "xcit_nano_12_p16_224", 64, "cross-covariance attention (F.normalize)"),
    Arch("PVTv2", "pvt_v2_b0", 64, "spatial-reduction attention"),
    Arch("MLP-Mixer", "mixer_s16_224", 64, "no family recipe: the generic one"),
    Arch("ResNet (CNN baseline)", "resnet18", 64),
    Arch("ResNet (CNN baseline)", "resnet50", 64),
)


HF_MARKER = "<!-- transformers section: python benchmarks/zoo.py --transformers -->"
HF_ARCHS: tuple[Arch, ...] = (
    Arch("ViT", "vit", 32, "ViTForImageClassification, SDPA", hf=True),
    Arch("DeiT", "deit", 32, "DeiT image processor: warp 36x36, crop 32", hf=True),
    Arch("DeiT distilled", "deit-distilled", 32, "two heads, averaged as transformers does", hf=True),
    Arch("BEiT", "beit", 32, "relative position bias, mean pooling", hf=True),
    Arch("DINOv2", "dinov2", 28, "patch 14-style grid, BiT image processor", hf=True),
    Arch("Swin", "swin", 32, "shifted windows", hf=True),
    Arch("SwinV2", "swinv2", 32, "cosine attention, log-spaced CPB", hf=True),
    Arch("ConvNeXt", "convnext", 32, "ConvNeXt image processor (crop_pct)", hf=True),
    Arch("ConvNeXtV2", "convnextv2", 32, "GRN", hf=True),
    Arch("MobileViT", "mobilevit", 64, "BGR input, no mean/std", hf=True),
    Arch("MobileViTV2", "mobilevitv2", 64, "separable linear attention", hf=True),
    Arch("LeViT", "levit", 64, "attention biases, LeViT resize rule", hf=True),
    Arch("PVTv2", "pvt_v2", 64, "spatial-reduction attention", hf=True),
    Arch("ResNet", "resnet", 32, "CNN baseline", hf=True),
)


def hf_folder(a: Arch, out: Path) -> Path:
    """The family's folder, written once (save_pretrained of a seeded random-init model)."""
    folder = out / "hf-folders" / a.name
    if not (folder / "config.json").exists():
        sys.path.insert(0, str(ROOT / "tests"))
        from hf_models import save_folder

        save_folder(a.name, folder)
    return folder


def hf_targets() -> list[str]:
    """Every target here (x86 CPU, TensorRT kits, mobile) except auto-* and the eager torchao ones."""
    from vitedge.targets.registry import all_targets

    return [t.name for t in all_targets() if not t.name.startswith(("auto", "torchao")) and not t.missing()
            and not t.unsupported()]  # e.g. ov-bf16 on a CPU without native bf16


def default_targets() -> list[str]:
    """Every target that runs on an x86 CPU here, plus the TensorRT kits (no mobile targets:
    they have their own README section), from the registry, not a list kept here."""
    from vitedge.targets.registry import all_targets

    cpu_runtimes = {"onnxruntime", "openvino", "torchao", "aoti"}
    return [t.name for t in all_targets() if not t.name.startswith("auto")
            and ((t.runtime in cpu_runtimes and not t.kit) or t.name.startswith("trt-")) and not t.missing()]


def key(a: Arch) -> str:
    return f"{a.name}@{a.size}"


def run_arch(a: Arch, targets: list[str], out: Path, timeout: float, threads: int) -> dict:
    d = out / key(a)
    model = [str(hf_folder(a, out))] if a.hf else [f"timm:{a.name}", "--img-size", str(a.size)]
    cmd = [sys.executable, "-m", "vitedge", "matrix", *model, "--random-init",
           "--targets", ",".join(targets), "--out", str(d), "--eval-n", "64", "--num-calib", "64",
           "--bench-budget", "1", "--threads", str(threads), "--seed", "0"]
    t0 = time.perf_counter()
    log = out / f"{key(a)}.log"
    with open(log, "w") as f:
        try:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout,
                                  env={**os.environ, "PYTHONWARNINGS": "ignore"})
            code: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    secs = time.perf_counter() - t0
    (d).mkdir(parents=True, exist_ok=True)
    (d / "zoo-run.json").write_text(json.dumps({"cmd": cmd, "exit": code, "seconds": round(secs, 1),
                                                "targets": targets}, indent=2) + "\n")
    return {"exit": code, "seconds": secs}


# -- classification and rendering -------------------------------------------------------------------

# Known causes, matched on the one-line error: whose bug it is, and the upstream issue where one
# is known (no link = none found; the row still says whose it is).
UPSTREAM = (
    ("Cannot view a tensor", "upstream, torch.export: `scaled_dot_product_attention` with an additive mask "
     "followed by transpose+reshape (vitedge retries unfused)", "https://github.com/pytorch/pytorch/issues/141107"),
    ("torch.Size() takes an iterable of 'int'", "upstream, PyTorch Inductor (torch 2.14): a symbolic size left "
     "in the frozen graph at AOT compile (the g++ hint those rows carry was wrong; no longer given)", ""),
    ("Input partition has more than one output node", "upstream, torchao X86InductorQuantizer: cannot "
     "annotate this attention pattern (EfficientViT's cascaded group attention)", ""),
    ("PT2E quantisation failed: AssertionError", "upstream, torchao PT2E prepare on FastViT's "
     "re-parameterisable blocks", ""),
    ("tuple index out of range", "upstream, torchao eager int8 (`quantize_`) on these attention blocks; "
     "these targets are out of the default matrix", ""),
    ("timeout", "upstream, ExecuTorch: `to_edge_transform_and_lower` of the PT2E-quantised graph was still "
     "running (py-spy: deep copies in run_decompositions) when the row's time ran out", ""),
)


def status_of(cell: dict | None, run: dict) -> tuple[str, str]:
    """(status, one-line reason) of one arch x target cell."""
    if cell is None:
        if run.get("exit") == "timeout":
            return "not run", "timeout (the architecture's matrix run hit --timeout)"
        return "not run", f"matrix process exited {run.get('exit')} before this target (see the arch's log)"
    st = cell.get("status", "")
    if st in ("passed", "kit only, predicted"):
        return "passed", ""
    if st in ("failed", "kit only, predicted: failed"):
        return "failed parity", "; ".join(cell.get("failures") or [])[:160]
    err = cell.get("error") or st
    low = err.lower()
    tb = cell.get("traceback") or ""
    kind = "export failed" if ("onnx export" in low or "torch.export" in low or "export stage" in low
                               or "stage: export" in low or "in _export" in tb) else "build failed"
    # Library errors that reached the cell without a stage name: name it from where they came.
    for marker, stage in (("in run_stage", "running the artifact on the parity inputs"),
                          ("in build_stage", "building the artifact")):
        if marker in tb and "stage" not in low:
            err = f"{stage}: {err}"
            break
    return kind, err[:300]


def load_results(out: Path, archs: tuple[Arch, ...], targets: list[str]) -> list[dict]:
    rows = []
    for a in archs:
        d = out / key(a)
        run = json.loads((d / "zoo-run.json").read_text()) if (d / "zoo-run.json").exists() else {"exit": "not run"}
        cells = {}
        for f in sorted((d / "cells").glob("*.json")) if (d / "cells").is_dir() else []:
            c = json.loads(f.read_text())
            cells[c["target"]] = c
        rows.append({"arch": a, "run": run, "cells": cells,
                     "targets": run.get("targets") or targets})
    return rows


def _fmt_cell(cell: dict | None, status: str) -> str:
    if status == "passed":
        par = (cell or {}).get("parity") or {}
        lat = (cell or {}).get("latency_ms") or {}
        sq = par.get("sqnr_db")
        sq_s = "exact" if sq is None or sq == float("inf") or sq > 99 else f"{sq:.0f} dB"
        kit = " kit" if (cell or {}).get("predicted_by") else ""
        p50 = f", {lat['p50']:.2f} ms" if lat.get("p50") else ""
        return f"ok{kit} ({sq_s}{p50})"
    return {"failed parity": "**parity**", "export failed": "**export**", "build failed": "**build**",
            "not run": "not run"}[status]


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    got = []
    for pkg in ("vitedge", "torch", "timm", "onnxruntime", "openvino", "nncf", "torchao", "onnx"):
        try:
            got.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    return ", ".join(got)


def render(out: Path, doc: Path, archs: tuple[Arch, ...], targets: list[str]) -> str:
    from vitedge.sysinfo import system_info

    rows = load_results(out, archs, targets)
    sysinfo = next((c.get("system") for r in rows for c in r["cells"].values() if c.get("system")), None) \
        or system_info()
    counts: dict[str, dict[str, int]] = {t: {} for t in targets}
    failures = []
    grid = []
    flat: list[str] = []
    for r in rows:
        a: Arch = r["arch"]
        int8 = [c for c in r["cells"].values() if c.get("precision") == "int8" and c.get("parity")]
        # Some untrained timm models give logits that do not depend on the image (a zero-initialised
        # head; LayerScale 1e-5 leaving the CLS token untouched by the blocks): INT8 artifacts then
        # match "exactly" and the row proves export/build/run, not INT8 fidelity.
        vacuous = sum((c["parity"].get("sqnr_db") or 0) > 99 for c in int8) >= 2
        if vacuous:
            flat.append(a.name)
        line = [f"{a.family}{' (*)' if vacuous else ''}", f"`{a.name}`", str(a.size)]
        for t in targets:
            cell = r["cells"].get(t)
            st, reason = status_of(cell, r["run"])
            counts[t][st] = counts[t].get(st, 0) + 1
            line.append(_fmt_cell(cell, st))
            if st != "passed":
                up = next(((desc, url) for needle, desc, url in UPSTREAM if needle in reason), None)
                if up is None and st == "failed parity":
                    prec = ((cell or {}).get("precision") or "int8").upper()
                    up = (f"vitedge recipe: too much {prec} error on this untrained model; "
                          f"`--max-drop`/`--min-cosine` or another {prec} target", "")
                failures.append((a, t, st, reason, up, cell))
        grid.append(line)

    versions = _versions()
    hf = bool(archs) and archs[0].hf
    col = "transformers config" if hf else "timm model"
    where = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    machine = (f"CPU: {sysinfo.get('cpu')}; flags: {', '.join(sysinfo.get('cpu_flags', []))}; "
               f"{sysinfo.get('cores_available')} cores. {versions}.")
    if hf:
        lines = [
            HF_MARKER, "",
            "# transformers folders: which families vitedge takes to which target", "",
            f"Generated by `python benchmarks/zoo.py --transformers` on {date.today().isoformat()} "
            f"(`--transformers --render-only` re-renders from `{where}`). {machine}", "",
            "Every row is a folder written by transformers' `save_pretrained` (a small config of the family, "
            "`from_config`, random weights, seeded; the family's image processor saved beside it: "
            "`tests/hf_models.py`), exported by `vitedge matrix FOLDER --random-init` (architecture, classes and "
            "preprocessing from the folder; untrained weights, so the same gate as the timm rows) to every target "
            "available here: the x86 CPU targets, the TensorRT and Core ML kits (parity predicted on CPU, nothing "
            "built for the GPU / macOS), ExecuTorch and LiteRT. The parity reference is the transformers model "
            "itself. Cells as above. EfficientFormer is not in this list: transformers 5 removed it. Module "
            "rewrites a converter needed (MobileViTV2's fold and broadcast, BEiT's position index: "
            "`vitedge.export.rewrites.ALWAYS`) are named in each bundle's report.", "",
        ]
    else:
        lines = [
        "# The timm zoo: which architectures vitedge takes to which target",
        "",
        f"Generated by `python benchmarks/zoo.py` on {date.today().isoformat()} "
        f"(`--render-only` re-renders from `{where}`).",
        machine,
        "",
        "Every row is a timm architecture with **random weights** (`--random-init`: nothing is downloaded), "
        "exported by `vitedge matrix timm:ARCH --random-init --img-size S` to every x86 CPU target and the "
        "TensorRT kits (the kits' parity is predicted on CPU by ONNX Runtime on the exact ONNX the engine "
        "would be built from; no engine was built here). Untrained models are judged on cosine, SQNR of the "
        "centred logits and max error / logit spread (top-1 agreement flips on tiny errors when logits are "
        "nearly flat; it is still in each bundle's report). Cells: `ok (SQNR, p50 at batch 1)`, "
        "`exact` = SQNR above 99 dB; **parity** = built but outside the gate; **export** / **build** = the "
        "ONNX export / the target's build failed (reasons below). Latencies are at the row's input size, "
        "2 threads, measured in that row's run: compare within a row.",
        "",
        ]
    lines += [
        "## Summary: architectures passing per target",
        "",
        "| target | passed | failed parity | export failed | build failed | not run |",
        "|---|---|---|---|---|---|",
    ]
    for t in targets:
        c = counts[t]
        lines.append(f"| {t} | {c.get('passed', 0)}/{len(rows)} | {c.get('failed parity', 0)} | "
                     f"{c.get('export failed', 0)} | {c.get('build failed', 0)} | {c.get('not run', 0)} |")
    lines += ["", "## Architecture x target", "",
              f"| family | {col} | px | " + " | ".join(targets) + " |",
              "|---|---|---|" + "---|" * len(targets)]
    lines += ["| " + " | ".join(line) + " |" for line in grid]
    if flat:
        lines += ["", f"(*) {', '.join(flat)}: with timm's random init the logits hardly depend on the image "
                      "(Mixer: zero-initialised head; DINOv2 / CaiT: LayerScale 1e-5 leaves the class token "
                      "untouched by the blocks), so INT8 artifacts that keep the head float match exactly; these "
                      "rows prove that the architecture exports, builds and runs on each target, not INT8 "
                      "fidelity (torchao, which quantises the head, shows the real INT8 noise there)."]
    lines += ["", "## Rows and what they exercise", "", f"| {col} | px | params (M) | exercises | "
              "detected family | matrix wall time |", "|---|---|---|---|---|---|"]
    for r in rows:
        a = r["arch"]
        fam = next((c.get("model_family") for c in r["cells"].values() if c.get("model_family")), None)
        params = next((c.get("model_params") for c in r["cells"].values() if c.get("model_params")), None)
        secs = r["run"].get("seconds")
        lines.append(f"| `{a.name}` | {a.size} | {f'{params / 1e6:.1f}' if params else '-'} | {a.why or '-'} | "
                     f"{fam or '-'} | {f'{secs / 60:.1f} min' if secs else '-'} |")
    lines += ["", "## Failures and their reasons", ""]
    if not failures:
        lines.append("None.")
    else:
        lines += [f"| {col} | target | status | reason | whose, and why |", "|---|---|---|---|---|"]
        for a, t, st, reason, up, _cell in failures:
            upstream = (f"[{up[0]}]({up[1]})" if up[1] else up[0]) if up else "-"
            lines.append(f"| `{a.name}`@{a.size} | {t} | {st} | {reason.replace('|', '/')} | {upstream} |")
    text = "\n".join(lines) + "\n"
    if hf:  # the transformers section: after the marker, the timm part above it kept
        text = text.replace("\n# ", "\n## ", 1).replace("\n## Summary", "\n### Summary").replace(
            "\n## Architecture x target", "\n### Family x target").replace(
            "\n## Rows and", "\n### Rows and").replace("\n## Failures", "\n### Failures")
    old = doc.read_text() if doc.exists() else ""
    timm_part, _, hf_part = old.partition(HF_MARKER)
    full = (timm_part.rstrip() + "\n\n" + text) if hf else (text.rstrip() + ("\n\n" + HF_MARKER + hf_part if hf_part else "\n"))
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(full)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", help="comma-separated timm names (default: the list in this file)")
    ap.add_argument("--targets", help="comma-separated targets (default: every x86 CPU target + TRT kits)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "zoo", help="matrix runs (cells) go here")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "zoo.md")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per architecture")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--render-only", action="store_true", help="only re-write the doc from --out")
    ap.add_argument("--skip-done", action="store_true", help="skip architectures that already have a run")
    ap.add_argument("--transformers", action="store_true",
                    help="the transformers folders (HF_ARCHS) instead of the timm list")
    args = ap.parse_args()
    archs = HF_ARCHS if args.transformers else ARCHS
    if args.archs:
        wanted = args.archs.split(",")
        archs = tuple(a for a in ARCHS if a.name in wanted or key(a) in wanted) or tuple(
            Arch("-", n.split("@")[0], int(n.split("@")[1]) if "@" in n else 64) for n in wanted)
    if args.archs and args.transformers:
        archs = tuple(a for a in HF_ARCHS if a.name in args.archs.split(","))
    targets = args.targets.split(",") if args.targets else hf_targets() if args.transformers else default_targets()
    if not args.render_only:
        args.out.mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(archs, 1):
            if args.skip_done and (args.out / key(a) / "zoo-run.json").exists():
                continue
            print(f"[{i}/{len(archs)}] {a.name} @ {a.size} px: {len(targets)} targets ...", flush=True)
            res = run_arch(a, targets, args.out, args.timeout, args.threads)
            print(f"    exit {res['exit']} in {res['seconds'] / 60:.1f} min", flush=True)
    render(args.out, args.doc, archs, targets)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
