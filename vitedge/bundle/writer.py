"""Writing a finished export into its bundle: manifest.json, report.json and report.md."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitedge import __version__
from vitedge.bundle.manifest import (
    REFERENCE,
    bundle_files,
    file_entries,
    write_manifest,
)
from vitedge.bundle.readme import render_readme
from vitedge.runtimes.registry import get_runtime

README = "README.md"  # for the app developer (vitedge.bundle.readme)

if TYPE_CHECKING:
    from vitedge.export.onnx_export import ExportConfig
    from vitedge.report import ExportReport
    from vitedge.targets.registry import Target


# What every host-side export uses; a target adds its own requirements, a runtime its packages.
_HOST_PACKAGES = ("numpy", "torch", "onnx", "onnxslim", "onnxscript", "timm")


def _versions(names: Any) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def package_versions(target: Any = None) -> dict[str, str]:
    """Versions of what built the bundle: vitedge, the host stack, the target's and runtime's packages."""
    names = list(_HOST_PACKAGES)
    if target is not None:
        names += [m.replace("_", "-") for m in target.requires] + list(get_runtime(target.runtime).packages)
    return {"vitedge": __version__, **_versions(dict.fromkeys(names))}


def device_requirements(runtime: str) -> dict[str, Any]:
    """What the device needs to run the artifact: the runtime's packages at the versions used
    here, and whether torch is needed (ExecuTorch's Python runtime, AOTInductor, torchao)."""
    spec = get_runtime(runtime)
    return {"runtime": spec.name, "packages": _versions(spec.packages), "needs_torch": spec.needs_torch,
            "install": spec.install}


def write_bundle_files(bundle: Path, report: ExportReport, export: ExportConfig, target: Target) -> None:
    d = report.to_dict()
    (bundle / "report.json").write_text(json.dumps(d, indent=2) + "\n")
    (bundle / "report.md").write_text(render_markdown(d) + "\n")
    card = report.card
    data = {
        "target": report.target,
        "runtime": report.artifact.runtime,
        "precision": report.precision,
        "artifact": {"file": report.artifact.main_file, "files": report.artifact.files,
                     "runner_options": report.artifact.runner_options,
                     "predicted_by": report.artifact.predicted_by},
        "card": card.to_dict(),
        # The batch dimension as the artifact itself declares it (a runtime may fix it even when
        # the ONNX export was dynamic, e.g. LiteRT's static batch 1).
        "input": report.artifact.details.get("input") or {
            "name": "input", "dtype": "float32", "layout": card.preprocess.layout,
            "shape": [report.batch_dim or export.static_batch or "batch", 3,
                      *(("height", "width") if export.dynamic_size else card.preprocess.input_size)]},
        "output": {"name": "logits", "dtype": "float32",
                   "shape": [report.batch_dim or export.static_batch or "batch", len(card.classes)]},
        "export": report.export_info,
        "details": report.artifact.details,
        "parity": {k: d["parity"][k] for k in ("passed", "verdict", "max_abs", "cosine_min", "cosine_mean",
                                               "top1_agreement", "images_n", "tolerance")}
                  | {"accuracy": d["accuracy"], "judged_on": d["judged_on"]},
        "reference": REFERENCE,
        "versions": package_versions(target),
        "device": device_requirements(report.artifact.runtime),
    }
    (bundle / README).write_text(render_readme(data))
    write_manifest(bundle, {**data, "files": file_entries(bundle, bundle_files(bundle, report.artifact.files))})


def _f(v: Any, fmt: str = ".4g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, fmt)
    return str(v)


def render_markdown(d: dict[str, Any]) -> str:
    p, acc, lat = d["parity"], d["accuracy"], d["latency_ms"]
    verdict = d["verdict"].upper()
    predicted = f" - predicted on CPU by {d['predicted_by']}, engine not built" if d.get("predicted_by") else ""
    lines = [
        f"# vitedge export: {d['target']} ({d['precision']}) - {verdict}{predicted}",
        "",
        f"Model `{d['model']['arch']}` from `{d['model']['source']}`, input "
        f"{d['model']['input_size'][0]}x{d['model']['input_size'][1]}, {d['model']['classes']} classes. "
        f"Artifact `{d['artifact']}` ({d['artifact_bytes'] / 1e6:.2f} MB) on {d['runtime']}.",
        "",
        "## Parity against the PyTorch reference",
        "",
        "| check | value | limit | result |",
        "|---|---|---|---|",
    ]
    for c in p["checks"]:
        op = "<=" if c["metric"] in ("max_abs", "accuracy_drop", "err_spread") else ">="
        lines.append(f"| {c['metric']} | {_f(c['value'], '.6g')} | {op} {c['limit']:g} | "
                     f"{'ok' if c['passed'] else '**FAILED**'} |")
    lines += ["", f"Judged on: {d['judged_on']}."]
    lines += ["", "| output / inputs | max abs | mean abs | median abs | max rel | cosine min | "
              "cosine mean | SQNR dB | top-1 agr. | top-5 agr. | NaN/Inf | n |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for out, sets in p["outputs"].items():
        for name, s in sets.items():
            lines.append(
                f"| {out} / {name} | {_f(s['max_abs'], '.3g')} | {_f(s['mean_abs'], '.3g')} | "
                f"{_f(s['median_abs'], '.3g')} | {_f(s['max_rel'], '.3g')} | {_f(s['cosine_min'], '.6f')} | "
                f"{_f(s['cosine_mean'], '.6f')} | {_f(s.get('sqnr_db'), '.1f')} | {s['top1_agreement']:.2%} | {s['top5_agreement']:.2%} | "
                f"{s['nan']}/{s['inf']} | {s['samples']} |")
    if acc.get("n"):
        lines += ["", f"Accuracy on {acc['data']}: reference {acc['reference']:.2%}, artifact "
                      f"{acc['artifact']:.2%} ({acc['delta_pts']:+.2f} pts)."]
    fb = d.get("fallback")
    if fb and fb.get("steps"):
        lines += ["", f"## Accuracy-aware fallback ({fb['budget_text']})", "",
                  f"Searched on {fb['search_data']}; budget {'met' if fb['met'] else '**not met**'}. "
                  f"{fb['kept_count']} of {fb['total_layers']} reduced-precision layers moved back to higher "
                  "precision (most sensitive first, rank-then-bisect):", ""]
        lines += [f"- `{k['label']}` ({k['op']}; {k['evidence']})" for k in fb["kept_high_precision"]]
        lines += ["", "| layers kept high | accuracy | drop pts | mean cosine | budget |", "|---|---|---|---|---|"]
        lines += [f"| {st['kept']} | {st['accuracy']:.2%} | {st['drop_pts']:+.2f} | {st['cosine_mean']:.5f} | "
                  f"{'met' if st['met'] else 'missed'} |" for st in fb["steps"]]
        if fb.get("latency_ms"):
            lm = fb["latency_ms"]
            lines.append(f"\nLatency cost (p50, side by side): all reduced {lm['all_reduced_p50']:.3f} ms -> "
                         f"final {lm['final_p50']:.3f} ms ({lm['cost_ratio']:.2f}x).")
    elif fb and fb.get("method"):
        lines += ["", f"## Accuracy control ({fb['method']}, {fb['budget_text']})", "",
                  f"{fb['kept_count']} op(s) kept in float: " + ", ".join(f"`{k}`" for k in fb["kept_high_precision"])]
    ref, art = lat["reference"], lat["artifact"]
    lines += [
        "", "## Latency (batch {b}, {t} threads, {how}, {n} timed runs each)".format(
            b=art["batch"], t=d["runner"].get("threads", "?"), n=min(art["runs"], ref["runs"]),
            how=d.get("latency_measured", "interleaved in one process")),
        "",
        "| runner | min | p50 | p90 | p99 | max | mean | images/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in (("artifact (" + d["runtime"] + ")", art), ("PyTorch eager (reference)", ref)):
        lines.append(f"| {name} | {s['min']:.3f} | {s['p50']:.3f} | {s['p90']:.3f} | {s['p99']:.3f} | "
                     f"{s['max']:.3f} | {s['mean']:.3f} | {s['throughput']:.1f} |")
    if d.get("placement") and "error" not in d["placement"]:
        from vitedge.runtimes.base import placement_line

        pl = d["placement"]
        extra = "".join(f"; {k} {pl[k]}" for k in ("partitions", "reorders") if pl.get(k) is not None)
        lines += ["", f"Op placement ({d['runtime']}'s own tools): {placement_line(pl)}{extra}."]
    if d.get("device_profile"):
        from vitedge.bench.profile import summary

        dp = d["device_profile"]
        lines += ["", f"In its own process ({dp['frame']} per call): {summary(dp)}; memory above the process's "
                      "baseline (numpy + vitedge), each phase's own high-water mark (`device_profile` in report.json)."]
    elif d.get("device_profile_note"):
        lines += ["", f"Device profile (memory, load, first inference) and throughput: {d['device_profile_note']}."]
    lines += ["", f"Speed-up vs PyTorch eager (p50 ratio, same run): **{d['speedup_vs_reference']:.2f}x**.",
              "", "## Details", "",
              f"- runner: `{json.dumps(d['runner'], default=str)}`",
              f"- reference: `{json.dumps(d['reference_runner'], default=str)}`"]
    if d.get("export"):
        lines.append(f"- export: `{json.dumps(d['export'], default=str)}`")
    if d.get("details"):
        lines.append(f"- target: `{json.dumps(d['details'], default=str)}`")
    if d.get("calibration"):
        c = d["calibration"]
        lines.append(f"- calibration: {c['samples']} samples from {c['source']}: {c['description']}")
    s = d["system"]
    lines.append(f"- system: {s['cpu']} ({', '.join(s['cpu_flags'])}), {s['cores_available']} cores, "
                 f"{s['os']}, Python {s['python']}")
    for note in d.get("notes", []):
        lines.append(f"- note: {note}")
    return "\n".join(lines)
