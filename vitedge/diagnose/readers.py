"""The generic layer readers a target can name as its `Target.diagnose`: any ONNX artifact
against the fp32 export, and artifacts quantised from the PyTorch module (PT2E). Readers tied
to one runtime's artifact (Q/DQ ONNX, OpenVINO IR) live in that target's file. All take
(reference, artifact_file, x, work_dir): the reference is the fp32 ONNX export, or the
nn.Module for module-sourced targets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vitedge.diagnose.result import Diagnosis


def diagnose_onnx_graph(fp32_onnx: Path, artifact_file: Path, x: np.ndarray, work: Path) -> Diagnosis:
    """Any other ONNX artifact (FP16, fp32) vs the fp32 export, tensor by tensor."""
    import onnx

    from vitedge.diagnose.onnx_layers import diagnose_onnx

    return diagnose_onnx(onnx.load(str(fp32_onnx)), onnx.load(str(artifact_file)), x, artifact_file.name)


def diagnose_pt2e(module: Any, artifact_file: Path, x: np.ndarray, work: Path) -> Diagnosis:
    """An artifact quantised from the module by a PT2E quantiser (.pte, .tflite, .pt2): each
    weighted module ranked alone under the quantisers' shared INT8 scheme."""
    from vitedge.diagnose.module_layers import diagnose_module

    return diagnose_module(module, artifact_file, x, work)
