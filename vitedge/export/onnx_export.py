"""torch -> ONNX: the current exporter first, the TorchScript one only as a recorded fallback.

`torch.onnx.export(..., dynamo=True)` traces with torch.export, so the batch axis is a real
symbol (no batch size baked into Reshape constants) and `nn.MultiheadAttention` takes its
decomposed path (its fused fast path only runs in eager inference). If the dynamo exporter
fails on some model, the TorchScript exporter is tried and the reason is kept in the result.
The raw graph is then cleaned by onnxslim, shape-inferred and checked (`full_check=True`).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import onnx
import torch

from vitedge import interrupts
from vitedge.card import ModelCard
from vitedge.errors import ExportError
from vitedge.export.cache import cached_export
from vitedge.export.config import (  # noqa: F401  (re-exported: the exporter's settings live there)
    DEFAULT_OPSET,
    INPUT_NAME,
    MAX_OPSET,
    MIN_OPSET,
    OUTPUT_NAME,
    TWO_GB,
    ExportConfig,
    ExportInfo,
)
from vitedge.export.metadata import set_metadata
from vitedge.export.rewrites import ALWAYS as ALWAYS_REWRITES
from vitedge.export.rewrites import apply_rewrites
from vitedge.quiet import quiet


def _dynamo(module: torch.nn.Module, x: torch.Tensor, cfg: ExportConfig) -> onnx.ModelProto:
    dims: dict[int, Any] = {}
    if cfg.static_batch is None:
        dims[0] = torch.export.Dim("batch", min=1, max=cfg.max_batch)
    if cfg.dynamic_size:  # AUTO: torch.export derives the constraints (e.g. a multiple of the stride)
        dims[2] = dims[3] = torch.export.Dim.AUTO
    dynamic = (dims,) if dims else None
    # The exporter prints progress to stdout (stdout carries our own tables/JSON) and, without
    # torchvision, warns once per torchvision op on every export: see vitedge.quiet.KNOWN_NOISE.
    with quiet():
        program = torch.onnx.export(
            module, (x,), dynamo=True, opset_version=cfg.opset, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_shapes=dynamic, optimize=True, verbose=False,
        )
    assert program is not None
    return program.model_proto


def _dynamo_unfusing_if_needed(module: torch.nn.Module, x: torch.Tensor, cfg: ExportConfig,
                               switched_to: list[str]) -> onnx.ModelProto:
    """The dynamo export; when fused attention with an additive mask (timm's BEiT relative
    position bias, MaxViT) hits "Cannot view a tensor" (pytorch/pytorch#141107), once more with
    the attention unfused: timm's `fused_attn` off, or a transformers model's SDPA switched to its
    eager attention. The same MatMul/Softmax/MatMul maths, which exports and matches; the switch
    is appended to `switched_to` (the report's export rewrites)."""
    try:
        return _dynamo(module, x, cfg)
    except Exception as e:
        interrupts.check()
        if "Cannot view a tensor" not in str(e):
            raise
    from vitedge.models.hf_folder import eager_attention
    from vitedge.models.timm_models import unfused_attention

    with unfused_attention(module) as timm_switched, eager_attention(module) as hf_switched:
        if not (timm_switched or hf_switched):
            raise ExportError("dynamo ONNX export failed: Cannot view a tensor (fused attention with a mask)")
        switched_to.append("timm unfused attention" if timm_switched else "transformers eager attention (SDPA did not export)")
        return _dynamo(module, x, cfg)


def _torchscript(module: torch.nn.Module, x: torch.Tensor, cfg: ExportConfig, tmp: Path) -> onnx.ModelProto:
    axes = ({} if cfg.static_batch else {0: "batch"}) | ({2: "height", 3: "width"} if cfg.dynamic_size else {})
    dynamic_axes = {INPUT_NAME: axes, OUTPUT_NAME: {0: "batch"} if not cfg.static_batch else {}} if axes else None
    with quiet():
        torch.onnx.export(
            module, (x,), str(tmp), dynamo=False, opset_version=min(cfg.opset, 20),
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    return onnx.load(str(tmp))


MODULE_KEY = "vitedge.module"


def _node_modules(model: onnx.ModelProto) -> dict[str, str]:
    """ONNX node name -> the PyTorch module that produced it, from the dynamo exporter's
    `pkg.torch.onnx.name_scopes` node metadata (onnxslim drops node metadata, so it is kept
    here and re-attached as `vitedge.module`; diagnostics use it to name layers)."""
    import ast

    out = {}
    for node in model.graph.node:
        for prop in node.metadata_props:
            if prop.key == "pkg.torch.onnx.name_scopes":
                try:
                    scopes = ast.literal_eval(prop.value)
                except (ValueError, SyntaxError):
                    continue
                if len(scopes) >= 2:
                    out[node.name] = str(scopes[-2])
    return out


def _tag_modules(model: onnx.ModelProto, modules: dict[str, str]) -> None:
    for node in model.graph.node:
        if node.name in modules and not any(p.key == MODULE_KEY for p in node.metadata_props):
            node.metadata_props.add(key=MODULE_KEY, value=modules[node.name])


def _slim(model: onnx.ModelProto, skip: tuple[str, ...] = ()) -> tuple[onnx.ModelProto, dict[str, Any]]:
    import onnxslim

    before = len(model.graph.node)
    with contextlib.redirect_stdout(io.StringIO()):
        slimmed = onnxslim.slim(model, skip_fusion_patterns=list(skip)) if skip else onnxslim.slim(model)
    info: dict[str, Any] = {"tool": f"onnxslim {onnxslim.__version__}", "nodes_before": before,
                            "nodes_after": len(slimmed.graph.node)}
    if skip:
        info["skipped_fusions"] = list(skip)
    return slimmed, info


def export_onnx(
    module: torch.nn.Module, card: ModelCard, path: str | Path, cfg: ExportConfig = ExportConfig(),
    extra_metadata: dict[str, str] | None = None,
) -> ExportInfo:
    """Export `module` to `path` (a final location the caller made safe, e.g. a temp dir); with
    VITEDGE_EXPORT_CACHE set, a copy of the same export made earlier (vitedge.export.cache)."""
    path = Path(path)
    module = module.eval()
    return cached_export(module, card, path, cfg, extra_metadata,
                         lambda: _export_onnx(module, card, path, cfg, extra_metadata))


def _export_onnx(module: torch.nn.Module, card: ModelCard, path: Path, cfg: ExportConfig,
                 extra_metadata: dict[str, str] | None) -> ExportInfo:
    module, rewrites = apply_rewrites(module.eval(), tuple(dict.fromkeys((*cfg.rewrites, *ALWAYS_REWRITES))))
    rewrites = {k: n for k, n in rewrites.items() if n or k in cfg.rewrites}  # ALWAYS ones only where they swapped
    h, w = card.preprocess.input_size
    # Batch 2 for a dynamic export: torch.export specialises a size-1 dimension to the constant 1.
    batch = cfg.static_batch or 2
    x = torch.zeros(batch, 3, h, w)
    fallback_reason = None
    exporter = "dynamo"
    attention_switch: list[str] = []
    try:
        if cfg.exporter == "torchscript":
            raise RuntimeError("TorchScript exporter requested")
        with interrupts.deferred():  # torch.export re-wraps or aborts on a signal; see vitedge.interrupts
            model = _dynamo_unfusing_if_needed(module, x, cfg, attention_switch)
    except Exception as e:
        interrupts.check()
        if cfg.exporter == "dynamo":
            raise ExportError(f"dynamo ONNX export failed: {type(e).__name__}: {str(e)[:300]}") from e
        fallback_reason = None if cfg.exporter == "torchscript" else f"{type(e).__name__}: {str(e)[:300]}"
        exporter = "torchscript"
        try:
            with interrupts.deferred():
                model = _torchscript(module, x, cfg, path.with_suffix(".ts.onnx"))
        except Exception as e2:
            interrupts.check()
            raise ExportError(f"both ONNX exporters failed; dynamo: {fallback_reason}; "
                              f"torchscript: {type(e2).__name__}: {str(e2)[:300]}") from e2
        finally:
            path.with_suffix(".ts.onnx").unlink(missing_ok=True)

    modules = _node_modules(model)
    slim_info: dict[str, Any] = {}
    if cfg.slim:
        model, slim_info = _slim(model, cfg.slim_skip)
    _tag_modules(model, modules)
    if _weight_bytes(model) < TWO_GB:  # protobuf cannot serialise more in one message
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    info = ExportInfo(path, exporter, opset, cfg.static_batch is None, False, fallback_reason, slim_info,
                      dynamic_size=cfg.dynamic_size, rewrites={**rewrites, **{a: 1 for a in attention_switch}})
    props = {"vitedge.export": _json(info.to_dict()), **(extra_metadata or {})}
    set_metadata(model, card, props)
    info.external_data = save_onnx(model, path, cfg.external_data_threshold)
    if info.external_data and _weight_bytes(model) >= TWO_GB:
        onnx.shape_inference.infer_shapes_path(str(path), str(path), strict_mode=True, data_prop=True)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"exported graph fails onnx.checker: {str(e)[:300]}") from e
    return info


def save_onnx(model: onnx.ModelProto, path: Path, external_data_threshold: int = TWO_GB) -> bool:
    """Save; weights go to `<name>.data` beside it when they exceed the threshold. Returns that."""
    external = _weight_bytes(model) > external_data_threshold
    if external:
        data_name = path.name + ".data"
        with contextlib.suppress(FileNotFoundError):
            os.remove(path.parent / data_name)
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024, convert_attribute=False)
    else:
        onnx.save_model(model, str(path))
    return external


def _weight_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def _json(d: dict[str, Any]) -> str:
    import json

    return json.dumps(d, sort_keys=True)
