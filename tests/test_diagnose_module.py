"""Ranking layers on the PyTorch module (for the PT2E INT8 targets' fallback): planted activation
outliers must come out on top, MultiheadAttention is ranked as one unit, and the module is left
exactly as it was (weights, hooks, attention fast path)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from vitedge.diagnose.module_layers import diagnose_module
from vitedge.models.outliers import inject_outliers
from vitedge.models.resolve import load_model

OUTLIERS = [("mlp", 1, [5, 77, 150], 500.0), ("mlp", 3, [12, 99], 500.0),
            ("qk", 2, [3, 40], 300.0), ("qk", 4, [7, 100], 300.0)]
INJECTED = {"blocks.1.mlp.0", "blocks.3.mlp.0", "blocks.2.attn", "blocks.4.attn"}


def test_planted_outliers_rank_first_and_the_module_is_untouched(tmp_path):
    module = copy.deepcopy(load_model("vit-tiny").module)
    inject_outliers(module, OUTLIERS)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    x = np.random.default_rng(0).random((8, 3, 64, 64), dtype=np.float32)
    fast = torch.backends.mha.get_fastpath_enabled()
    diag = diagnose_module(module, Path("model.pte"), x, tmp_path)
    top = [r.node for r in diag.ranking()[:4]]
    assert set(top) == INJECTED, top
    assert all(r.local_sqnr_db is not None and r.local_sqnr_db < 15 for r in diag.ranking()[:4])
    assert all(r.local_sqnr_db > 25 for r in diag.ranking()[4:])  # the rest quantise cleanly
    ops = {r.node: r.op for r in diag.rows}
    assert ops["blocks.2.attn"] == "MultiheadAttention" and ops["head"] == "Linear"
    assert "blocks.2.attn.out_proj" not in ops and "out_proj" in diag.notes[0]  # ranked via its parent
    assert diag.ranking()[0].label == diag.ranking()[0].node  # no "name [name]" duplication
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_hooks for m in module.modules())
    assert torch.backends.mha.get_fastpath_enabled() == fast
    assert torch.nn.functional.linear is torch._C._nn.linear  # the int8 stand-ins are gone
