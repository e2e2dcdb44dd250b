"""What the benchmark scripts share: running a vitedge command the way a user would, and
publishing a result section (dated, with the command line, CPU and its flags) to RESULTS.md."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def run(cmd: list[str]) -> float:
    """Run one command (its output shown, a failure stops the benchmark); its wall time in seconds."""
    print("$ " + shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def heading(title: str, threads: int, extra: str = "") -> list[str]:
    """A section title with today's date, the command that produced it, the CPU and its flags."""
    from vitedge.sysinfo import system_info

    info = system_info()
    command = shlex.join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    return [f"## {title} ({date.today().isoformat()})", "",
            f"`{command}`; CPU: {info['cpu']}; flags: {', '.join(info['cpu_flags'])}; {threads} threads{extra}.", ""]


def publish(lines: list[str], out: Path, t0: float) -> None:
    """Add the run's wall time, print the section and append it to `out`."""
    text = "\n".join([*lines, f"Whole run: {(time.perf_counter() - t0) / 60:.1f} min."]) + "\n"
    print(text)
    with open(out, "a") as f:
        f.write("\n" + text)


def model_args(doc: str, models: tuple[str, ...]) -> Any:
    """The arguments the per-model benchmarks share: --models, --img-size, --threads, --out."""
    import argparse

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--models", default=",".join(models))
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args()
