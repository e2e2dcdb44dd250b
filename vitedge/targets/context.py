"""What a target's build step gets: the model, the exported ONNX, calibration data, options."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitedge.export.onnx_export import ExportInfo
from vitedge.models.resolve import LoadedModel


@dataclass
class BuildContext:
    loaded: LoadedModel
    bundle_dir: Path  # artifact files are written here (a temp dir renamed into place at the end)
    work_dir: Path  # scratch space for intermediates, deleted afterwards
    onnx: ExportInfo | None  # the fp32 ONNX export (in work_dir), for targets that need it
    calibration: Any = None  # vitedge.calib.source.CalibrationSet when the target needs one
    options: dict[str, Any] = field(default_factory=dict)  # target-specific settings
    threads: int = 1
    search: Any = None  # pipeline.SearchSet for accuracy-aware builds (NNCF accuracy control)
    budget: Any = None  # fallback.Budget

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    def place_onnx(self) -> Path:
        """Move the exported ONNX (and its external-data file, if any) into the bundle."""
        assert self.onnx is not None, "target needs the ONNX export"
        src = self.onnx.path
        dst = self.bundle_dir / src.name
        shutil.move(src, dst)
        data = src.with_name(src.name + ".data")
        if data.exists():
            shutil.move(data, dst.with_name(data.name))
        self.onnx.path = dst
        return dst

    def files_of(self, model_file: Path) -> list[str]:
        """The model file plus its side files (ONNX external data, OpenVINO .bin)."""
        names = [model_file.name]
        for side in (model_file.name + ".data", model_file.with_suffix(".bin").name):
            if (model_file.parent / side).exists():
                names.append(side)
        return names
