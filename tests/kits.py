"""Importing a build kit's verify script from a copy of the kit, as it runs on the device (its
sibling modules beside it, its own directory first on sys.path), and undoing that afterwards."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType


def import_kit_script(kit_dir: Path, script: str, siblings: tuple[str, ...]) -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location(f"kit_{Path(script).stem}", kit_dir / script)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        if str(kit_dir) in sys.path:
            sys.path.remove(str(kit_dir))  # the kit puts its own directory first
        for name in siblings:
            sys.modules.pop(name, None)
