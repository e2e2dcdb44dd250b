"""The Pareto plot: latency vs accuracy delta, one point per target, the front marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_LABEL_OFFSETS = [(6, 6), (6, -12), (6, 16), (6, -22), (6, 26)]


def pareto_front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Points (latency, score, name) not dominated by a faster-and-at-least-as-good one."""
    front = []
    best = float("-inf")
    for lat, score, name in sorted(points, key=lambda p: (p[0], -p[1])):
        if score > best:
            front.append((lat, score, name))
            best = score
    return front


def pareto_plot(table: list[dict[str, Any]], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless; no-op if the app already chose a backend
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in table))
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 5), squeeze=False)
    plotted = False
    for ax, model in zip(axes[0], models, strict=True):
        rows = [r for r in table if r["model"] == model and r["p50_ms"] is not None
                and r["status"] in ("passed", "failed", "not judged")]
        use_acc = all(r["delta_pts"] is not None for r in rows) and rows
        key, label = ("delta_pts", "top-1 accuracy delta vs PyTorch (pts)") if use_acc else \
            ("cosine_min", "worst-sample cosine vs PyTorch")
        points = [(r["p50_ms"], r[key], r["target"]) for r in rows if r[key] is not None]
        if not points:
            ax.set_axis_off()
            continue
        plotted = True
        front = pareto_front(points)
        front_names = {p[2] for p in front}
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        dx, dy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
        placed: list[tuple[float, float]] = []
        for lat, score, name in sorted(points):
            on = name in front_names
            failed = next(r for r in rows if r["target"] == name)["status"] == "failed"
            ax.scatter([lat], [score], s=80 if on else 40, marker="x" if failed else "o",
                       color="tab:red" if failed else ("tab:blue" if on else "tab:gray"), zorder=3)
            # Stagger labels of points that sit close together so they stay readable.
            near = sum(1 for px, py in placed if abs(px - lat) < 0.08 * dx and abs(py - score) < 0.08 * dy)
            placed.append((lat, score))
            ax.annotate(name + (" (failed)" if failed else ""), (lat, score), textcoords="offset points",
                        xytext=_LABEL_OFFSETS[near % len(_LABEL_OFFSETS)], fontsize=8,
                        fontweight="bold" if on else "normal")
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:blue", alpha=0.5,
                zorder=2, label="Pareto front (nothing faster is as accurate)")
        kit = [r["target"] for r in table if r["model"] == model and r["status"].startswith("kit")]
        title = f"{model}: latency vs accuracy (batch 1)"
        if kit:
            title += f"\nnot plotted (no engine built here): {', '.join(kit)}"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("p50 latency (ms, lower is better)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    if not plotted:
        plt.close(fig)
        return None
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
