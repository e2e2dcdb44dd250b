"""Files shipped inside the build kits (numpy + the standard library only): the device profile
module that both kits' verify scripts import from beside them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PROFILE_FILE = "device_profile.py"


def ship_profile(bundle_dir: Path) -> str:
    """Copy the device profile module into a kit; returns its file name."""
    (bundle_dir / PROFILE_FILE).write_text((resources.files(__name__) / PROFILE_FILE).read_text())
    return PROFILE_FILE
