"""The bundle's README.md: what an app developer feeds the artifact and what comes out, in their
terms, from the manifest's own numbers; then how to run it from Python, C++ (OpenVINO) and the
languages its runtime declares snippets for (vitedge.runtimes.registry.RuntimeSpec.snippets)."""

from __future__ import annotations

from typing import Any

from vitedge.calib.preprocess import PreprocessSpec
from vitedge.runtimes.registry import get_runtime


def _fill(inp: dict[str, Any], spec: PreprocessSpec) -> str:
    """One line: what goes into the input buffer."""
    embedded = inp.get("embedded_preprocessing")
    if embedded:
        return f"{embedded['app_does']}; put the RGB bytes in row by row (HWC)"
    return f"float32 NCHW: {spec.describe()}"


def render_readme(data: dict[str, Any]) -> str:
    card, inp, out = data["card"], data["input"], data["output"]
    spec = PreprocessSpec.from_dict(card["preprocess"])
    h, w = spec.input_size
    classes = card.get("classes") or []
    runtime = get_runtime(data["runtime"])
    parity = data.get("parity", {})
    file = data["artifact"]["file"]
    shape = ", ".join(str(d) for d in inp["shape"])
    lines = [
        f"# {card.get('arch', 'model')}: {data['target']} ({data['precision']}) on {runtime.label or runtime.name}",
        "",
        f"Artifact `{file}`; install the runtime: {runtime.install or runtime.name}. "
        f"Parity with PyTorch at export: {parity.get('verdict', 'passed' if parity.get('passed') else 'failed')} "
        f"(judged on {parity.get('judged_on', '-')}; report.md has every number).",
        "",
        "## What to feed",
        "",
        f"One input, `{inp['name']}`: {inp['dtype']} [{shape}], {inp['layout']}.",
        "",
    ]
    embedded = inp.get("embedded_preprocessing")
    if embedded and embedded.get("size") == "any":
        lines += ["The preprocessing is inside the artifact. Give it decoded RGB pixels (uint8, channels last) of "
                  "any size, one size per call:", "",
                  f"- your side: {embedded['app_does']};",
                  f"- inside: {embedded['inside']};",
                  f"- resize kernel: {embedded['interpolation']}."]
    elif embedded:
        lines += [f"Scaling and normalisation are inside the artifact; it takes a fixed {h}x{w} RGB frame:", "",
                  f"- your side: {embedded['app_does']};",
                  f"- inside: {embedded['inside']}."]
    else:
        lines += ["The artifact takes the preprocessed model input; reproduce exactly:", "",
                  f"- {spec.describe()}."]
    lines += [
        "",
        "## What comes out",
        "",
        f"`{out['name']}`: {out['dtype']} [{', '.join(str(d) for d in out['shape'])}], raw logits (softmax for "
        f"probabilities). Index i is class i of `card.classes` in manifest.json ({len(classes)} classes"
        + (f": {', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})." if classes else ")."),
        "",
        "## Python",
        "",
        "```python",
        "import vitedge",
        "model = vitedge.load(\"THIS_BUNDLE\")  # numpy + the runtime; checks the files' checksums",
        "print(model.predict(\"photo.jpg\").label)  # decoding and preprocessing as at export",
        "```",
        "",
        "`vitedge verify THIS_BUNDLE` re-runs the reference inputs on the device; `vitedge bench THIS_BUNDLE` times it.",
    ]
    if runtime.name == "openvino":
        lines += ["", "## C++", "",
                  "`examples/cpp` in the vitedge repository builds against the C++ runtime in the `openvino` wheel "
                  "(CMake) and prints the top-5 for image files: `vitedge_classify THIS_BUNDLE photo.jpg`. "
                  + ("With the preprocessing inside, it only decodes." if embedded and embedded.get("size") == "any"
                     else "It builds the preprocessing above from the manifest with OpenVINO's PrePostProcessor.")]
    fill = _fill(inp, spec)
    # the runtime's snippets, and a kit's own (its runtime here is a stand-in: Core ML's Swift)
    for language, code in [*runtime.snippets, *(data.get("details") or {}).get("app_snippets", [])]:
        lines += ["", f"## {language}", "", "```",
                  code.format(file=file, h=h, w=w, c=len(classes), input_name=inp["name"], fill=fill), "```"]
    return "\n".join(lines) + "\n"
