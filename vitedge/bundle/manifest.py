"""The bundle manifest: what a device needs to run, preprocess and re-verify an artifact.

`manifest.json` sits next to the artifact files and records the target, runtime and runner
options, the model card (architecture, preprocessing, classes), the input/output spec, versions,
the parity summary, and the size and sha256 of every file in the bundle. Device side: json only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vitedge.card import ModelCard
from vitedge.errors import InputError
from vitedge.fsutil import sha256_file

MANIFEST = "manifest.json"
FORMAT = "vitedge-bundle"
FORMAT_VERSION = 1
REFERENCE = "reference.npz"
# reference.npz key of the i-th pixel image of a set ("images/input#0"): an artifact that takes
# pixels (--embed-preprocessing) is re-verified on images of different sizes, one array each
PIXELS_SUFFIX = "#"


def bundle_files(bundle: Path, artifact_files: list[str]) -> list[str]:
    """The files the manifest checksums: every top-level file but the manifest, and each file the
    artifact lists inside a directory (a Core ML .mlpackage: its weights are checksummed like any
    model file). Other subdirectories are the device's (OpenVINO's model cache, written on load)."""
    top = {p.name for p in bundle.iterdir() if p.is_file() and p.name != MANIFEST}
    return sorted(top | {f for f in artifact_files if (bundle / f).is_file()})


def file_entries(bundle: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {n: {"bytes": (bundle / n).stat().st_size, "sha256": sha256_file(bundle / n)} for n in sorted(names)}


@dataclass(frozen=True)
class Manifest:
    data: dict[str, Any]
    path: Path

    @property
    def bundle(self) -> Path:
        return self.path.parent

    @property
    def target(self) -> str:
        return str(self.data["target"])

    @property
    def runtime(self) -> str:
        return str(self.data["runtime"])

    @property
    def precision(self) -> str:
        return str(self.data["precision"])

    @property
    def card(self) -> ModelCard:
        return ModelCard.from_dict(self.data["card"])

    @property
    def main_file(self) -> Path:
        return self.bundle / self.data["artifact"]["file"]

    @property
    def runner_options(self) -> dict[str, Any]:
        return dict(self.data["artifact"].get("runner_options", {}))

    @property
    def pixels(self) -> dict[str, Any] | None:
        """What an artifact that preprocesses inside takes ("size": "any" or [h, w], ...), or None
        when it takes the preprocessed model input."""
        embedded = self.data.get("input", {}).get("embedded_preprocessing")
        return embedded if isinstance(embedded, dict) else None

    @property
    def max_threads(self) -> int | None:
        """Most threads worth giving the artifact: `auto` records it when fewer threads than it
        was given measured faster on the device (a small model, where thread synchronisation
        costs more than the split work saves). None: no limit."""
        value = self.data["artifact"].get("max_threads")
        return int(value) if value is not None else None

    def checksum_problems(self) -> list[str]:
        """Files whose size/sha256 differ from the manifest, or that are missing."""
        problems = []
        for name, entry in self.data.get("files", {}).items():
            p = self.bundle / name
            if not p.is_file():
                problems.append(f"{name}: missing")
            elif p.stat().st_size != entry["bytes"] or sha256_file(p) != entry["sha256"]:
                problems.append(f"{name}: checksum mismatch (modified since export)")
        return problems


def manifest_digest(data: dict[str, Any]) -> str:
    """sha256 of the manifest's content (without the digest itself), canonical JSON."""
    import hashlib

    body = {k: v for k, v in data.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=_jsonable).encode()).hexdigest()


def save_manifest(path: Path, data: dict[str, Any]) -> Path:
    """Write `data` with its digest, so an edit made after export is detected on read."""
    data = {k: v for k, v in data.items() if k != "manifest_sha256"}
    data["manifest_sha256"] = manifest_digest(json.loads(json.dumps(data, default=_jsonable)))
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")
    return path


def write_manifest(bundle: Path, data: dict[str, Any]) -> Path:
    data = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **data}
    return save_manifest(bundle / MANIFEST, data)


def read_manifest(bundle: str | Path) -> Manifest:
    bundle = Path(bundle)
    if not bundle.exists():
        raise InputError(f"{bundle}: no such bundle directory")
    path = bundle / MANIFEST if bundle.is_dir() else bundle
    if not path.is_file():
        raise InputError(f"{bundle}: not a vitedge bundle (no {MANIFEST}); pass an export --out directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path}: not a vitedge bundle manifest")
    version = data.get("format_version")
    if not isinstance(version, int):
        raise InputError(f"{path}: manifest has no valid format_version")
    if version > FORMAT_VERSION:
        raise InputError(
            f"{path}: bundle format {version} comes from a newer vitedge "
            f"({data.get('versions', {}).get('vitedge', '?')}); upgrade vitedge (this one reads "
            f"format {FORMAT_VERSION})"
        )
    digest = data.get("manifest_sha256")
    if digest is not None and digest != manifest_digest(data):
        raise InputError(f"{path}: manifest was edited after export (its sha256 does not match); "
                         "re-export the bundle or restore the original manifest.json")
    for key, kind in (("target", str), ("runtime", str), ("precision", str), ("artifact", dict), ("card", dict),
                      ("input", dict), ("files", dict)):
        if key not in data:
            raise InputError(f"{path}: manifest lacks {key!r}")
        if not isinstance(data[key], kind):
            raise InputError(f"{path}: manifest field {key!r} should be a {kind.__name__}")
    for name, entry in data["files"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("bytes"), int) and isinstance(entry.get("sha256"), str)):
            raise InputError(f"{path}: manifest file entry {name!r} lacks bytes/sha256")
    try:
        ModelCard.from_dict(data["card"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{path}: manifest has a broken model card ({e})") from None
    if not isinstance(data["artifact"].get("file"), str):
        raise InputError(f"{path}: manifest artifact entry lacks 'file'")
    if not isinstance(data["artifact"].get("runner_options", {}), dict):
        raise InputError(f"{path}: manifest runner options should be a mapping")
    max_threads = data["artifact"].get("max_threads")
    if max_threads is not None and not (isinstance(max_threads, int) and max_threads >= 1):
        raise InputError(f"{path}: manifest max_threads should be a positive integer")
    name = str(data["artifact"]["file"])
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise InputError(f"{path}: artifact path {name!r} leaves the bundle directory")
    return Manifest(data, path)


def _jsonable(v: Any) -> Any:
    import numpy as np

    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")
