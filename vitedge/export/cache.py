"""A content-addressed cache of finished fp32 ONNX exports, opt-in with VITEDGE_EXPORT_CACHE=DIR.

torch.onnx's dynamo exporter is most of an export's fixed cost (vit-tiny: 15 of 23 s on one
core; a 224-px ViT-B a minute or more), and it is the same work every time the same checkpoint
goes to another target from another command: one `vitedge export` per target in a CI job, or a
test suite. A `vitedge matrix` already exports once for all its cells (pipeline.SharedWork); this
cache does the same across processes.

The key is everything the exported graph depends on: the module's class, repr, every parameter
and buffer (persistent or not, by value), the plain attributes of every submodule (flags such as
timm's `fused_attn` or `dynamic_img_size` that change `forward` but not the weights), the model
card (its metadata goes into the graph), the export config, the file name, and the versions of
torch, onnx, onnxscript, onnxslim, timm, transformers and the exporter's own source. Only
successful exports are stored (a failure is redone and reported every time); graphs with external
weight files (> 2 GB) are not stored (their file name is baked into the graph). Entries are
written to a temp dir and renamed into place, so two processes sharing the directory (xdist
workers, parallel CI jobs) see a whole entry or none. Nothing is ever evicted: the directory is
the user's to clear.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vitedge.card import ModelCard
from vitedge.export.config import ExportConfig, ExportInfo

ENV = "VITEDGE_EXPORT_CACHE"
_DISTS = ("torch", "onnx", "onnxscript", "onnxslim", "timm", "transformers", "vitedge")
_PLAIN = (bool, int, float, str, type(None))


def cache_dir() -> Path | None:
    value = os.environ.get(ENV, "").strip()
    return Path(value).expanduser() if value else None


@functools.lru_cache(maxsize=1)  # once per process: package metadata and the exporter's sources
def _versions() -> dict[str, str]:
    out = {}
    for dist in _DISTS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = ""
    # a development checkout changes without a version bump: the exporter's own code is part of the key
    here = Path(__file__).parent
    out["vitedge.export"] = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(here.glob("*.py")))).hexdigest()
    return out


def _plain_attrs(module: torch.nn.Module) -> dict[str, Any]:
    out = {}
    for k, v in vars(module).items():
        if isinstance(v, _PLAIN) or (isinstance(v, tuple) and all(isinstance(i, _PLAIN) for i in v)):
            out[k] = v
    return out


def export_key(module: torch.nn.Module, card: ModelCard, cfg: ExportConfig, file_name: str,
               extra_metadata: dict[str, str] | None) -> str:
    h = hashlib.sha256()
    head = {"versions": _versions(), "class": f"{type(module).__module__}.{type(module).__qualname__}",
            "repr": repr(module), "card": card.to_dict(), "cfg": dataclasses.asdict(cfg), "file": file_name,
            "extra": extra_metadata or {}}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for name, sub in module.named_modules():
        h.update(f"\0{name}\0{type(sub).__qualname__}\0".encode())
        h.update(json.dumps(_plain_attrs(sub), sort_keys=True, default=str).encode())
    for name, t in (*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)):
        t = t.detach().cpu().contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cached_export(module: torch.nn.Module, card: ModelCard, path: Path, cfg: ExportConfig,
                  extra_metadata: dict[str, str] | None, export: Callable[[], ExportInfo]) -> ExportInfo:
    """`export()` (which writes `path`), or a copy of the same export made earlier."""
    root = cache_dir()
    if root is None:
        return export()
    key = export_key(module, card, cfg, path.name, extra_metadata)
    entry = root / key[:2] / key
    if (entry / "info.json").is_file():
        try:
            shutil.copyfile(entry / path.name, path)
            return ExportInfo.from_dict(path, json.loads((entry / "info.json").read_text()))
        except (OSError, ValueError, KeyError):  # an entry damaged by hand: export as if it were not there
            path.unlink(missing_ok=True)
    info = export()
    if not info.external_data:
        _store(entry, path, info)
    return info


def _store(entry: Path, path: Path, info: ExportInfo) -> None:
    """Best effort: a cache that cannot be written (full disk, read-only) never fails an export."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=entry.parent))
        try:
            shutil.copyfile(path, tmp / path.name)
            (tmp / "info.json").write_text(json.dumps(info.to_dict(), sort_keys=True))
            os.rename(tmp, entry)  # atomic; fails if another process stored the same entry first
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass
