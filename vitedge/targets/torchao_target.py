"""torchao-int8 / torchao-int8-wo: PyTorch-native INT8 with torchao's `quantize_`.

`int8-dynamic`: int8 per-channel weights with per-token dynamic int8 activations
(`Int8DynamicActivationInt8WeightConfig`); `int8-weight-only`: int8 weights, float activations
(`Int8WeightOnlyConfig`). Only `nn.Linear` layers are quantised (torchao's default filter):
attention's packed `in_proj_weight` in `nn.MultiheadAttention` is a bare parameter and stays
float, so the artifact is smaller than fp32 but not 4x.

The artifact is the quantised state dict plus the model card in one `torch.save` file that
loads with `torch.load(weights_only=True)` (torchao's tensor subclasses are on torch's safe
list). A `torch.export` program (.pt2) was rejected: `torch.export.load` falls back to full
unpickling, which vitedge never does for a file it may receive from someone else.
On CPUs like this one these kernels are often slower than fp32 eager; the report shows it.
"""

from __future__ import annotations

import copy

from vitedge.runtimes.torchao_runner import MODES, torchao_config
from vitedge.targets.context import BuildContext
from vitedge.targets.registry import Artifact, Hooks, Target, register_target

MODEL_FILE = "model.torchao.pt"


def _build(ctx: BuildContext, mode: str) -> Artifact:
    import torch

    from vitedge.quiet import quiet

    with quiet():
        import torchao
        from torchao.quantization import quantize_

        module = copy.deepcopy(ctx.loaded.module).eval()
        quantize_(module, torchao_config(mode))
    n_linear = sum(1 for m in ctx.loaded.module.modules() if isinstance(m, torch.nn.Linear))
    torch.save({"format": "vitedge-torchao", "mode": mode, "card": ctx.loaded.card.to_json(),
                "state_dict": module.state_dict()}, ctx.bundle_dir / MODEL_FILE)
    return Artifact(MODEL_FILE, [MODEL_FILE], "torchao", {},
                    details={"quantizer": f"torchao {torchao.__version__} quantize_({MODES[mode]})",
                             "mode": mode, "quantized_linear_layers": n_linear,
                             "kept_float": "everything but nn.Linear (incl. MHA in_proj_weight, convs)"})


def build_torchao_int8(ctx: BuildContext) -> Artifact:
    return _build(ctx, "int8-dynamic")


def build_torchao_int8_wo(ctx: BuildContext) -> Artifact:
    return _build(ctx, "int8-weight-only")


_TORCHAO = dict(runtime="torchao", precision="int8", source="module", extra="torchao", requires=("torchao",))
# Who these are for: deployments that must stay in eager PyTorch (Python control flow that will
# not export) and are short of memory: Linear weights 4x smaller. They are not for speed on x86:
# timed side by side they run at 0.44-0.79x of fp32 eager (int8 matmuls in eager mode pay
# quantise/dequantise per call without fusion), so they are out of the default matrix and of
# auto-cpu; inductor-int8 is PyTorch's fast INT8 path. `--targets torchao-int8` still runs them.
register_target(Target(
    name="torchao-int8", hooks=Hooks(build=build_torchao_int8), in_matrix=False, **_TORCHAO,
    description="torchao int8 dynamic activations + int8 weights in eager PyTorch: 4x smaller Linear "
                "weights for memory-bound eager deployments; slower than fp32 eager on x86"))
register_target(Target(
    name="torchao-int8-wo", hooks=Hooks(build=build_torchao_int8_wo), in_matrix=False, **_TORCHAO,
    description="torchao int8 weight-only in eager PyTorch: 4x smaller Linear weights, float compute"))
