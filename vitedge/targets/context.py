"""What a target's build step gets: the model, the exported ONNX, calibration data, its options."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitedge.export.config import ExportConfig, ExportInfo

if TYPE_CHECKING:  # resolve imports torch; the target registry (and so the CLI's flags) need not
    from vitedge.models.resolve import LoadedModel


@dataclass
class BuildContext:
    loaded: LoadedModel
    bundle_dir: Path  # artifact files are written here (a temp dir renamed into place at the end)
    work_dir: Path  # scratch space for intermediates, deleted afterwards
    onnx: ExportInfo | None  # the fp32 ONNX export (in work_dir), for targets with source="onnx"
    options: Any  # the target's options dataclass instance (vitedge.options)
    export: ExportConfig = ExportConfig()  # opset, static batch: module-based targets honour it too
    calibration: Any = None  # vitedge.calib.source.CalibrationSet when the target needs one
    threads: int = 1
    search: Any = None  # vitedge.report.SearchSet for accuracy-aware builds (NNCF accuracy control)
    budget: Any = None  # vitedge.fallback.Budget
    # --embed-preprocessing on a module-based target: module() and example_input() are the
    # network behind a fixed-size uint8 NHWC pixel input (vitedge.export.pixels.pixels_module)
    pixels: bool = False
    # the module rewrites network() applied (vitedge.export.rewrites): rewrite -> layers swapped
    module_rewrites: dict[str, int] = field(default_factory=dict)
    _network: Any = field(default=None, repr=False)

    def require_onnx(self) -> ExportInfo:
        if self.onnx is None:
            raise RuntimeError("this target starts from the ONNX export (source='onnx')")
        return self.onnx

    def example_input(self, batch: int | None = None) -> Any:
        """A (B, 3, H, W) torch tensor for tracing/exporting the module (B: the static batch or 1);
        (B, H, W, 3) uint8 pixels when the build embeds the preprocessing."""
        import torch

        h, w = self.loaded.card.preprocess.input_size
        b = batch or self.export.static_batch or 1
        return torch.zeros(b, h, w, 3, dtype=torch.uint8) if self.pixels else torch.zeros(b, 3, h, w)

    def network(self) -> Any:
        """The network a module-based build converts (eval mode): the model with the rewrites every
        export applies (`vitedge.export.rewrites.ALWAYS`: the same maths in a form the converters
        take) and those the target asks for (`Target.export_rewrites`), on a copy where any layer
        swapped; the loaded model stays the parity reference.
        Layer names are kept, so keep-float options and reports name the same modules."""
        if self._network is None:
            from vitedge.export.rewrites import ALWAYS, apply_rewrites

            names = tuple(dict.fromkeys((*ALWAYS, *self.export.rewrites)))  # + the target's own
            self._network, counts = apply_rewrites(self.loaded.module.eval(), names)
            self.module_rewrites = {k: n for k, n in counts.items() if n}
        return self._network

    def rewrite_notes(self) -> list[str]:
        """The report's note on the module rewrites network() applied, if any did."""
        swapped = ", ".join(f"{k} ({n} layers)" for k, n in self.module_rewrites.items())
        return [f"converted after module rewrites (same maths, vitedge.export.rewrites): {swapped}"] if swapped else []

    def module(self) -> Any:
        """The module a module-based build converts (eval mode): the network, or the network
        behind its pixel preprocessing (`pixels`)."""
        module = self.network()
        if not self.pixels:
            return module
        from vitedge.export.pixels import pixels_module

        return pixels_module(module, self.loaded.card.preprocess)

    def check_module_names(self, names: tuple[str, ...], flag: str) -> None:
        """Every name must be a module of the model (for keep-float options that name PyTorch
        modules, e.g. `blocks.5.mlp`); the first unknown one is a usage error with a did-you-mean."""
        import difflib

        from vitedge.errors import UsageError

        known = {n for n, _ in self.loaded.module.named_modules() if n}
        unknown = [n for n in names if n not in known]
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(known), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UsageError(f"{flag}: no module named {unknown[0]!r} in the model.{hint}")

    def float_modules(self, keep: tuple[str, ...], quantize_head: bool) -> tuple[str, ...]:
        """Module names an INT8 build leaves float: `keep` plus the classifier head, which every
        INT8 recipe keeps float unless asked (why: vitedge.models.family)."""
        from vitedge.models.family import module_head_names

        head = () if quantize_head else tuple(n for n in module_head_names(self.loaded.module) if n not in keep)
        return tuple(keep) + head

    def place_onnx(self) -> Path:
        """Move the exported ONNX (and its external-data file, if any) into the bundle."""
        info = self.require_onnx()
        src = info.path
        dst = self.bundle_dir / src.name
        shutil.move(src, dst)
        data = src.with_name(src.name + ".data")
        if data.exists():
            shutil.move(data, dst.with_name(data.name))
        info.path = dst
        return dst

    def files_of(self, model_file: Path) -> list[str]:
        """The model file plus its side files (ONNX external data, OpenVINO .bin); for a
        directory artifact (a Core ML .mlpackage), every file under it."""
        if model_file.is_dir():
            return sorted(str(p.relative_to(self.bundle_dir)) for p in model_file.rglob("*") if p.is_file())
        names = [model_file.name]
        for side in (model_file.name + ".data", model_file.with_suffix(".bin").name):
            if (model_file.parent / side).exists():
                names.append(side)
        return names
