"""The matrix plots, one column per model: latency vs accuracy delta (the Pareto plot) and, where
the cells carry a device profile, latency vs peak memory beneath it. Every point is labelled,
labels of nearby points are staggered, and legends sit below the axes, where no point can be
(a legend inside the axes covered et-int8's point in a Fashion-MNIST matrix of vit-tiny)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_LABEL_OFFSETS = [(6, 6), (6, -12), (6, 16), (6, -22), (6, 26)]
PLOTTED = ("passed", "failed", "not judged")


def pareto_front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Points (latency, score, name) not dominated by a faster-and-at-least-as-good one."""
    front = []
    best = float("-inf")
    for lat, score, name in sorted(points, key=lambda p: (p[0], -p[1])):
        if score > best:
            front.append((lat, score, name))
            best = score
    return front


def _panel(ax: Any, rows: list[dict[str, Any]], points: list[tuple[float, float, str]], higher_is_better: bool,
           front_label: str) -> None:
    """Scatter `points` (latency, value, target) with labels and the front of the better ones."""
    front = pareto_front([(x, y if higher_is_better else -y, n) for x, y, n in points])
    front_names = {p[2] for p in front}
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    dx, dy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    placed: list[tuple[float, float]] = []
    for lat, value, name in sorted(points):
        on = name in front_names
        failed = next(r for r in rows if r["target"] == name)["status"] == "failed"
        ax.scatter([lat], [value], s=80 if on else 40, marker="x" if failed else "o",
                   color="tab:red" if failed else ("tab:blue" if on else "tab:gray"), zorder=3)
        # Stagger labels of points that sit close together so they stay readable (a label runs
        # right of its point: a wider window across than up and down).
        near = sum(1 for px, py in placed if abs(px - lat) < 0.18 * dx and abs(py - value) < 0.06 * dy)
        placed.append((lat, value))
        ax.annotate(name + (" (failed)" if failed else ""), (lat, value), textcoords="offset points",
                    xytext=_LABEL_OFFSETS[near % len(_LABEL_OFFSETS)], fontsize=8,
                    fontweight="bold" if on else "normal")
    ordered = sorted((x, y) for x, y, n in points if n in front_names)
    ax.step([p[0] for p in ordered], [p[1] for p in ordered], where="post", color="tab:blue", alpha=0.5,
            zorder=2, label=front_label)
    ax.set_xlabel("p50 latency (ms, lower is better)")
    ax.margins(0.15)  # room for the labels of the outermost points inside the axes
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)


def pareto_plot(table: list[dict[str, Any]], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless; no-op if the app already chose a backend
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in table))
    memory = any(r.get("peak_mb") is not None for r in table)
    nrows = 2 if memory else 1
    fig, axes = plt.subplots(nrows, len(models), figsize=(7 * len(models), 5.6 * nrows), squeeze=False)
    plotted = False
    for col, model in enumerate(models):
        rows = [r for r in table if r["model"] == model and r["p50_ms"] is not None and r["status"] in PLOTTED]
        use_acc = all(r["delta_pts"] is not None for r in rows) and rows
        key, label = ("delta_pts", "top-1 accuracy delta vs PyTorch (pts)") if use_acc else \
            ("cosine_min", "worst-sample cosine vs PyTorch")
        ax = axes[0][col]
        points = [(r["p50_ms"], r[key], r["target"]) for r in rows if r[key] is not None]
        if not points:
            ax.set_axis_off()
        else:
            plotted = True
            _panel(ax, rows, points, True, "Pareto front (nothing faster is as accurate)")
            kit = [r["target"] for r in table if r["model"] == model and r["status"].startswith("kit")]
            title = f"{model}: latency vs accuracy (batch 1)"
            if kit:
                title += f"\nnot plotted (no engine built here): {', '.join(kit)}"
            ax.set_title(title, fontsize=10)
            ax.set_ylabel(label)
        if memory:
            ax = axes[1][col]
            mem = [(r["p50_ms"], r["peak_mb"], r["target"]) for r in rows if r.get("peak_mb") is not None]
            if not mem:
                ax.set_axis_off()
                continue
            _panel(ax, rows, mem, False, "front (nothing faster takes less memory)")
            ax.set_title(f"{model}: latency vs peak memory (own process, above its baseline)", fontsize=10)
            ax.set_ylabel("peak memory (MB, lower is better)")
    if not plotted:
        plt.close(fig)
        return None
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
