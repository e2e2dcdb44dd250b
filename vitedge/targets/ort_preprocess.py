"""ONNX Runtime's `quant_pre_process`, with the fallbacks it needs on real models.

ORT recommends running `quant_pre_process` (symbolic shape inference, then ORT's basic graph
optimisation, then ONNX shape inference) before `quantize_static`. Its symbolic shape inference
is the fragile step: on ConvNeXt-V2 (timm `convnextv2_atto`, torch.onnx dynamo export, opset 20)
it dies inside the GRN's ReduceMean with "TypeError: object of type 'NoneType' has no len()"
(the axes arrive as an input, which that code path does not read). The quantiser only needs
shapes where it inserts Q/DQ, so a weaker shape pass is a working fallback, not a silent
degradation:

1. "full": `quant_pre_process` as ORT recommends;
2. "onnx-shape": the same with `skip_symbolic_shape=True` (ORT optimisation + ONNX's own shape
   inference);
3. "skipped": no pre-processing at all (the model is copied); `quantize_static` still runs its
   own ONNX shape inference.

Which path was taken, and the first line of each error that forced a fallback, is returned for
the report. A failure of ORT's optimisation step is swallowed by ORT itself (it only logs); it
is captured and reported too.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vitedge import interrupts

# (path name, quant_pre_process keyword arguments), strongest first.
STEPS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("full", {}),
    ("onnx-shape", {"skip_symbolic_shape": True}),
)
_ORT_LOGGER = "onnxruntime.quantization"


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    line = text.splitlines()[0].strip() if text else ""
    return f"{type(e).__name__}: {line}"[:240] if line else type(e).__name__


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage().strip()
        if msg.startswith("Traceback"):  # ORT logs the optimiser's traceback: its last line says why
            self.lines.insert(0, msg.splitlines()[-1][:240])
        elif msg:
            self.lines.append(msg.splitlines()[0][:240])


@contextlib.contextmanager
def _captured_ort_log() -> Iterator[_Capture]:
    """ORT logs (rather than raises) a failed optimisation step: keep it off the user's terminal,
    and keep the message for the report."""
    logger = logging.getLogger(_ORT_LOGGER)
    handler = _Capture()
    old_propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate


def pre_process(src: Path, dst: Path) -> dict[str, Any]:
    """Run `quant_pre_process(src) -> dst` with fallbacks; always leaves a model at `dst`.

    Returns {"path": "full" | "onnx-shape" | "skipped", "reason": first line of the error that
    forced the first fallback (None on the full path), "attempts": [{"step", "error"}...],
    "optimization": None or the first line ORT logged when its optimiser failed}.
    """
    from onnxruntime.quantization import quant_pre_process

    src, dst = Path(src), Path(dst)
    attempts: list[dict[str, str]] = []
    for name, kwargs in STEPS:
        dst.unlink(missing_ok=True)
        try:
            with _captured_ort_log() as log, contextlib.redirect_stdout(io.StringIO()):
                quant_pre_process(str(src), str(dst), **kwargs)
            if not dst.exists() or dst.stat().st_size == 0:
                raise RuntimeError("quant_pre_process wrote no model")
        except Exception as e:  # any library failure here has a fallback below
            interrupts.check()  # a Ctrl-C re-wrapped by the library is not a "failure"
            attempts.append({"step": name, "error": first_line(e)})
            continue
        return _result(name, attempts, log.lines)
    dst.unlink(missing_ok=True)
    shutil.copyfile(src, dst)
    return _result("skipped", attempts, [])


def _result(path: str, attempts: list[dict[str, str]], log_lines: list[str]) -> dict[str, Any]:
    return {
        "path": path,
        "reason": attempts[0]["error"] if attempts else None,
        "attempts": attempts,
        "optimization": log_lines[0] if log_lines else None,
    }


def describe(info: dict[str, Any]) -> str:
    """One line for the report's notes (empty when the full pre-processing ran cleanly)."""
    parts = []
    if info["path"] == "onnx-shape":
        parts.append("ORT quant_pre_process: symbolic shape inference failed "
                     f"({info['reason']}); used ONNX shape inference instead")
    elif info["path"] == "skipped":
        parts.append(f"ORT quant_pre_process skipped: every variant failed (first: {info['reason']}); "
                     "quantised the exported graph as is")
    if info.get("optimization"):
        parts.append(f"ORT pre-processing optimiser failed and was skipped ({info['optimization']})")
    return "; ".join(parts)
