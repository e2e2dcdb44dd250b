"""Progress bars for long work (data generation, calibration, training, benchmarking).

Thin wrappers over rich so every stage looks the same. Bars go to stderr, so JSON or tables
written to stdout stay clean; no bar is drawn when stderr is not a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

# Logs get 120 columns (rich wraps at 80 when stderr is not a terminal).
stderr_console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def make_progress(*extra_columns: TextColumn) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
        console=stderr_console,
        transient=False,
        # Not a terminal (CI logs): no bar; long stages print their own summary lines.
        disable=not stderr_console.is_terminal,
    )


def track(
    items: Iterable[T], description: str | None = None, total: int | None = None
) -> Iterator[T]:
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with make_progress() as progress:
        task = progress.add_task(description or "working", total=total)
        for item in items:
            yield item
            progress.advance(task)
