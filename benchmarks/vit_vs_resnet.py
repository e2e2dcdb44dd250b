"""ViT-S/16 vs ResNet-18 (both from timm): same data, same fine-tuning budget, then each one's
best edge artifact (issue 15; the seed lesson's exercise 2).

    python benchmarks/vit_vs_resnet.py                                   # Fashion-MNIST, 64 px
    python benchmarks/vit_vs_resnet.py --vit-init vit_s16.safetensors --resnet-init r18.safetensors

No ImageNet weights are reachable on these machines, so unless you pass --vit-init /
--resnet-init (e.g. timm's pretrained weights saved as safetensors), the initialisations are
vitedge's own and are labelled as such in the results:
- ViT-S/16: `vitedge pretrain --method mae` on the same training images (labels unused);
- ResNet-18: random init (vitedge's MAE needs a ViT; there is no CNN self-supervised method
  built in), i.e. trained from scratch;
- ViT-S/16 from scratch is run too, so the MAE effect and the architecture effect are separate.

Every step is the `vitedge` command a user would run (printed, wall time measured). Then
`vitedge matrix` on each fine-tuned checkpoint (x86 CPU targets, accuracy on the test split)
gives its fastest passing artifact and its INT8 accuracy delta. The seed's version runs at
224 px; its cost is estimated from the measured time scaled by the models' FLOPs at 224 px.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _results import RESULTS, heading, publish, run

FASHION = "/usr/share/datasets/fashion-mnist"
VIT, RESNET = "timm:vit_small_patch16_224", "timm:resnet18"
TARGETS = "onnx-fp32,ort-int8,ov-fp32,ov-int8,inductor-int8"


def gflops(model: str, size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vitedge.models.resolve import load_model

    module = load_model(model, random_init=True, overrides={"img_size": size, "num_classes": 10}).module.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def best_artifacts(matrix_dir: Path) -> dict:
    rows = json.loads((matrix_dir / "matrix.json").read_text())["rows"]
    passed = [r for r in rows if r["status"] == "passed" and r["p50_ms"] is not None]
    fastest = min(passed, key=lambda r: r["p50_ms"]) if passed else None
    int8 = [r for r in rows if r["target"].endswith("int8") and r["accuracy"] is not None]
    best_int8 = min(int8, key=lambda r: r["p50_ms"] or 1e9) if int8 else None
    fp32 = next((r for r in rows if r["target"] == "onnx-fp32"), None)
    return {"fastest": fastest, "int8": best_int8, "fp32": fp32, "reference": rows[0]["reference_accuracy"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=FASHION, help="training/test data ('synthetic', an image folder, an IDX set)")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--num-train", type=int, default=10000, help="training images (a seeded subset)")
    ap.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs, the same for every model")
    ap.add_argument("--mae-epochs", type=int, default=5, help="MAE pretraining epochs for ViT-S/16 (no --vit-init)")
    ap.add_argument("--vit-init", type=Path, default=None, help="ViT-S/16 weights to start from (e.g. ImageNet)")
    ap.add_argument("--resnet-init", type=Path, default=None, help="ResNet-18 weights to start from")
    ap.add_argument("--eval-n", type=int, default=None, help="test images for the matrix (default: all)")
    ap.add_argument("--targets", default=TARGETS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    from vitedge.models.checkpoint import read_card

    t_all = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="vitedge-vit-vs-resnet-"))
    work.mkdir(parents=True, exist_ok=True)
    common = ["--data", args.data, "--img-size", str(args.img_size), "--threads", str(args.threads),
              "--num-train", str(args.num_train)]
    runs: list[tuple[str, str, str, Path | None, float]] = []  # label, model, init label, init file, init secs
    if args.vit_init:
        runs.append(("ViT-S/16", VIT, f"given weights ({args.vit_init.name})", args.vit_init, 0.0))
    else:
        mae = work / "vit-s16-mae.safetensors"
        secs = run(["vitedge", "pretrain", "--method", "mae", "--model", VIT, "--epochs", str(args.mae_epochs),
                    "--out", str(mae), *common])
        runs.append(("ViT-S/16", VIT, f"vitedge MAE, {args.mae_epochs} epochs on the same images (not ImageNet)",
                     mae, secs))
        runs.append(("ViT-S/16", VIT, "random init (scratch)", None, 0.0))
    runs.append(("ResNet-18", RESNET, f"given weights ({args.resnet_init.name})" if args.resnet_init else
                 "random init (scratch; vitedge has no CNN self-supervised method)", args.resnet_init, 0.0))

    results = []
    for i, (label, model, init_label, init, init_s) in enumerate(runs):
        ckpt = work / f"ft-{i}.safetensors"
        cmd = ["vitedge", "train", "--model", model, "--epochs", str(args.epochs), "--out", str(ckpt), *common]
        if init is not None:
            cmd += ["--init", str(init)]
        secs = run(cmd)
        metrics = read_card(ckpt).metrics
        results.append({"label": label, "model": model, "init": init_label, "init_s": init_s, "train_s": secs,
                        "top1": metrics.get("test_top1"), "ckpt": ckpt})
    # The edge artifacts of the better-initialised run of each architecture.
    edge: dict[str, dict] = {}
    for r in results:
        if r["label"] in edge:
            continue
        mdir = work / f"matrix-{r['label'].replace('/', '')}"
        cmd = ["vitedge", "matrix", str(r["ckpt"]), "--targets", args.targets, "--out", str(mdir),
               "--calib", args.data, "--eval", args.data, "--threads", str(args.threads)]
        if args.eval_n:
            cmd += ["--eval-n", str(args.eval_n)]
        r["matrix_s"] = run(cmd)
        edge[r["label"]] = best_artifacts(mdir)

    data_name = "shapes10" if args.data == "synthetic" else Path(args.data).name
    lines = heading(f"ViT-S/16 vs ResNet-18 on {data_name}", args.threads) + [
             f"{args.num_train} training images at "
             f"{args.img_size} px, {args.epochs} fine-tuning epochs for every model, top-1 on the test split. "
             "**No ImageNet weights were used**: the initialisations are named in the table.", "",
             "| model | initialisation | params | GFLOP / image | init time | fine-tune time | test top-1 |",
             "|---|---|---|---|---|---|---|"]
    flops = {m: gflops(m, args.img_size) for m in (VIT, RESNET)}
    flops224 = {m: gflops(m, 224) for m in (VIT, RESNET)}
    params = {}
    for r in results:
        if r["model"] not in params:
            from vitedge.models.resolve import load_model

            params[r["model"]] = sum(p.numel() for p in load_model(str(r["ckpt"])).module.parameters()) / 1e6
        top1 = "-" if r["top1"] is None else f"{r['top1']:.2%}"  # no test split in a plain folder
        lines.append(f"| {r['label']} | {r['init']} | {params[r['model']]:.1f}M | {flops[r['model']]:.2f} | "
                     f"{r['init_s'] / 60:.1f} min | {r['train_s'] / 60:.1f} min | {top1} |")
    lines += ["", "Best edge artifact of each (`vitedge matrix`, targets " + args.targets + "; latency batch 1, "
              "side by side in own processes; INT8 delta on the test split):", "",
              "| model | fastest passing target | p50 ms | size MB | vs PyTorch | onnx-fp32 p50 ms | "
              "fastest INT8 target | its accuracy delta (pts) |", "|---|---|---|---|---|---|---|---|"]
    for label, e in edge.items():
        f, q, fp = e["fastest"], e["int8"], e["fp32"]
        lines.append(
            f"| {label} | {f['target'] if f else '-'} | {f['p50_ms']:.2f} | {f['size_mb']:.1f} | "
            f"{f['speedup_vs_pytorch']:.2f}x | {fp['p50_ms']:.2f} | {q['target'] if q else '-'} | "
            f"{q['delta_pts']:+.2f} ({q['status']}) |" if f and fp and q else f"| {label} | no passing target | | | | | | |")
    scale = {m: flops224[m] / flops[m] for m in flops}
    vit_t = next(r["train_s"] for r in results if r["model"] == VIT)
    res_t = next(r["train_s"] for r in results if r["model"] == RESNET)
    full = 60000 * 10 / (args.num_train * args.epochs)  # a full-data-set run relative to this one
    lines += ["", f"At the seed's 224 px the same budget costs ~{scale[VIT]:.0f}x (ViT-S/16: {flops224[VIT]:.1f} "
              f"GFLOP / image) and ~{scale[RESNET]:.0f}x (ResNet-18: {flops224[RESNET]:.1f}) more compute per image: "
              f"about {vit_t * scale[VIT] / 3600:.1f} h and {res_t * scale[RESNET] / 3600:.1f} h for this budget "
              f"({args.num_train} images x {args.epochs} epochs) on these 2 cores (FLOP-scaled from the times above); "
              f"60,000 images x 10 epochs would take ~{vit_t * scale[VIT] * full / 3600:.0f} h and "
              f"~{res_t * scale[RESNET] * full / 3600:.0f} h here: a GPU job.",
              ""]
    publish(lines, args.out, t_all)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
