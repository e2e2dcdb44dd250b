"""vitedge: take trained ViT / DeiT / ConvNeXt checkpoints to the edge, with proof.

    checkpoint --load--> nn.Module --export--> model.onnx --quantise(calib)--> QDQ ONNX / IR
        --compile--> engine / IR --run--> outputs --compare--> parity + latency report

Importing `vitedge` never imports torch: the device side (`vitedge.load`, runners, verify,
bench) needs only numpy and the runtime.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load(bundle_dir: str, **kwargs: Any) -> Any:
    """Open an exported bundle for inference in an app: `vitedge.load(DIR).predict(images)`."""
    from vitedge.bundle.predictor import Predictor

    return Predictor.open(bundle_dir, **kwargs)
