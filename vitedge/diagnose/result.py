"""The localisation result: one row per compute layer, the first jump, the most sensitive layers."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

JUMP_DB = 10.0  # a layer "jumps" when its output SQNR falls this far (10x noise power) below everything upstream


@dataclass
class LayerRow:
    node: str  # the artifact's own name for the layer (ONNX node / OpenVINO friendly name)
    op: str
    module: str  # the PyTorch module it came from ("blocks.3.mlp.0"), when known
    depth: int  # topological index among compute layers
    sqnr_db: float | None = None  # accumulated: artifact output vs fp32 reference output
    cosine: float | None = None
    rel_err: float | None = None
    act_sqnr_db: float | None = None  # local: quantisation noise of this layer's activation input
    weight_sqnr_db: float | None = None  # local: quantisation noise of its weights
    local_drop_db: float | None = None  # fp16: SQNR lost across this layer
    local_sqnr_db: float | None = None  # the layer alone, float vs reduced precision, on reference inputs
    quantized: bool = False

    @property
    def sensitivity(self) -> float:
        """Larger = more error introduced by this layer itself (used to rank for fallback)."""
        if self.local_sqnr_db is not None:
            return -self.local_sqnr_db if self.local_sqnr_db != math.inf else -999.0
        if self.local_drop_db is not None:
            return self.local_drop_db
        return -999.0

    @property
    def evidence(self) -> str:
        """Why this layer ranks where it does, in words."""
        if self.local_sqnr_db is not None:
            return f"alone in reduced precision: {self.local_sqnr_db:.1f} dB SQNR"
        if self.local_drop_db is not None:
            return f"costs {self.local_drop_db:.1f} dB of SQNR"
        return "not measured"

    @property
    def label(self) -> str:
        return f"{self.module} [{self.node}]" if self.module and self.module != self.node else self.node


@dataclass
class Diagnosis:
    artifact: str
    method: str  # how tensors were matched and what "local" means for this artifact kind
    rows: list[LayerRow]
    samples: int
    notes: list[str] = field(default_factory=list)

    def ranking(self, quantized_only: bool = True) -> list[LayerRow]:
        pool = [r for r in self.rows if r.quantized or not quantized_only]
        return sorted(pool, key=lambda r: -r.sensitivity)

    def first_jump(self) -> LayerRow | None:
        best = math.inf
        for r in sorted(self.rows, key=lambda r: r.depth):
            if r.sqnr_db is None or r.sqnr_db == math.inf:
                continue
            if best != math.inf and r.sqnr_db < best - JUMP_DB:
                return r
            best = min(best, r.sqnr_db)
        return None

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        jump = self.first_jump()
        return {
            "artifact": self.artifact, "method": self.method, "samples": self.samples,
            "first_jump": jump.label if jump else None,
            "top": [r.label for r in self.ranking()[:top]],
            "rows": [{**asdict(r), "sensitivity": r.sensitivity, "label": r.label} for r in self.rows],
            "notes": self.notes,
        }

    def to_markdown(self, top: int = 10) -> str:
        def f(v: float | None, spec: str = ".1f") -> str:
            if v is None:
                return "-"
            if v == math.inf:
                return "inf"
            return format(v, spec)

        jump = self.first_jump()
        lines = [f"# vitedge diagnose: {self.artifact}", "", self.method, "",
                 f"Compared on {self.samples} inputs. First jump (output SQNR falls more than {JUMP_DB:g} dB "
                 f"below every earlier layer): **{jump.label if jump else 'none'}**.", "",
                 f"## Top {top} most sensitive layers", "",
                 "| rank | layer | op | layer-alone SQNR dB | its input quant. SQNR dB | its weight quant. SQNR dB "
                 "| fp16 local drop dB | output SQNR dB (accumulated) | cosine |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for i, r in enumerate(self.ranking()[:top], 1):
            lines.append(f"| {i} | {r.label} | {r.op} | {f(r.local_sqnr_db)} | {f(r.act_sqnr_db)} | "
                         f"{f(r.weight_sqnr_db)} | {f(r.local_drop_db)} | {f(r.sqnr_db)} | {f(r.cosine, '.5f')} |")
        lines += ["", "## Every layer, in depth order", "",
                  "| depth | layer | op | quantized | output SQNR dB | cosine | rel err |", "|---|---|---|---|---|---|---|"]
        for r in sorted(self.rows, key=lambda r: r.depth):
            lines.append(f"| {r.depth} | {r.label} | {r.op} | {'yes' if r.quantized else ''} | {f(r.sqnr_db)} | "
                         f"{f(r.cosine, '.5f')} | {f(r.rel_err, '.2e')} |")
        lines += [f"- note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def plot_depth(diag: Diagnosis, path: Path, top: int = 3) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = sorted([r for r in diag.rows if r.sqnr_db is not None], key=lambda r: r.depth)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ys = [min(r.sqnr_db, 80.0) if r.sqnr_db is not None else None for r in rows]
    ax.plot([r.depth for r in rows], ys, "-o", ms=3, color="tab:blue", label="output SQNR vs fp32 reference")
    local = [(r.depth, min(-r.sensitivity, 80.0)) for r in rows if r.quantized and r.sensitivity > -999]
    if local:
        ax.scatter(*zip(*local, strict=True), s=18, color="tab:orange", zorder=3,
                   label="local quantisation SQNR (this layer alone)")
    for r in diag.ranking()[:top]:
        y = min(-r.sensitivity, 80.0) if r.sensitivity > -999 else (r.sqnr_db or 0)
        ax.annotate(r.label, (r.depth, y), textcoords="offset points", xytext=(4, -12), fontsize=7, color="tab:red")
    jump = diag.first_jump()
    if jump is not None:
        ax.axvline(jump.depth, color="tab:red", alpha=0.4, ls="--", label=f"first jump: {jump.label}")
    ax.set_xlabel("layer depth (compute layers in graph order)")
    ax.set_ylabel("SQNR (dB, higher is better)")
    ax.set_title(f"error vs depth: {diag.artifact}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
