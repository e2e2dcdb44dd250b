"""The seed lesson's MAE exercise, on shapes10 and on a real data set (issue 15).

    python benchmarks/mae_exercise.py                       # shapes10 + Fashion-MNIST (Debian package)
    python benchmarks/mae_exercise.py --data synthetic --pretrain-epochs 2 --finetune-epochs 1   # quick look

For each data set, every step is the `vitedge` command a user would run (printed, and timed as
wall clock on this machine):

1. `vitedge pretrain --method mae` on the training split (labels unused);
2. `vitedge probe` (frozen mean-pooled patch features + a logistic-regression head, top-1 on the
   test split) of the random-init vit-tiny and of the MAE encoder; the same probe of a model
   trained *with* labels is shown as the ceiling when one is given (--supervised DATA=CKPT);
3. fine-tuning at equal epochs and data: `vitedge train --init MAE` vs from scratch.

The markdown table is printed and appended to benchmarks/RESULTS.md with the date and the CPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _results import RESULTS, heading, publish, run

FASHION = "/usr/share/datasets/fashion-mnist"


def card_metrics(ckpt: Path) -> dict:
    from vitedge.models.checkpoint import read_card

    return read_card(ckpt).metrics


def probe(model: list[str], data: str, out: Path, threads: int, num_train: int | None) -> tuple[dict, float]:
    cmd = ["vitedge", "probe", *model, "--data", data, "--features", "mean", "--threads", str(threads),
           "--json", str(out)]
    if num_train:
        cmd += ["--num-train", str(num_train)]
    s = run(cmd)
    return json.loads(out.read_text()), s


def one_data_set(data: str, args: argparse.Namespace, work: Path) -> list[str]:
    name = "shapes10" if data == "synthetic" else Path(data).name
    t = str(args.threads)
    sub = ["--num-train", str(args.num_train)] if args.num_train else []
    mae = work / f"mae-{name}.safetensors"
    pre_s = run(["vitedge", "pretrain", "--method", "mae", "--model", args.model, "--data", data, "--epochs",
                 str(args.pretrain_epochs), "--threads", t, "--out", str(mae), *sub])
    recon = card_metrics(mae).get("val_recon_loss")
    rows: list[tuple[str, str, str]] = []
    rand, rand_s = probe([args.model, "--random-init"], data, work / f"probe-rand-{name}.json", args.threads,
                         args.probe_train)
    maep, mae_s = probe([str(mae)], data, work / f"probe-mae-{name}.json", args.threads, args.probe_train)
    rows.append(("linear probe, random init", f"{rand['top1']:.2%}", f"{rand_s:.0f} s"))
    rows.append((f"linear probe, MAE ({args.pretrain_epochs} epochs)", f"{maep['top1']:.2%}",
                 f"{mae_s:.0f} s (+ pretraining {pre_s / 60:.1f} min)"))
    sup = dict(s.split("=", 1) for s in args.supervised).get(data) or dict(
        s.split("=", 1) for s in args.supervised).get(name)
    if sup:
        supp, sup_s = probe([sup], data, work / f"probe-sup-{name}.json", args.threads, args.probe_train)
        rows.append((f"linear probe, trained with labels ({Path(sup).name}; ceiling)", f"{supp['top1']:.2%}",
                     f"{sup_s:.0f} s"))
    ft = {}
    for init in ("scratch", "mae"):
        ckpt = work / f"ft-{init}-{name}.safetensors"
        cmd = ["vitedge", "train", "--model", args.model, "--data", data, "--epochs", str(args.finetune_epochs),
               "--threads", t, "--out", str(ckpt), *sub]
        if init == "mae":
            cmd += ["--init", str(mae)]
        secs = run(cmd)
        ft[init] = (card_metrics(ckpt)["test_top1"], secs)
    rows.append((f"fine-tune {args.finetune_epochs} epochs from scratch", f"{ft['scratch'][0]:.2%}",
                 f"{ft['scratch'][1] / 60:.1f} min"))
    rows.append((f"fine-tune {args.finetune_epochs} epochs from MAE", f"{ft['mae'][0]:.2%}",
                 f"{ft['mae'][1] / 60:.1f} min"))
    n_desc = f"{args.num_train} training images" if args.num_train else "the whole training split"
    lines = [f"#### {args.model} on {name} ({n_desc}; top-1 on the test split)", "",
             f"MAE: 75% of patches hidden, decoder {128}-wide x 2 blocks, {args.pretrain_epochs} epochs; "
             f"masked-patch loss on validation images {recon:.4f}. Probe: mean-pooled patch tokens after the "
             f"final norm, logistic regression, L2 picked on a validation part"
             + (f", fitted on {args.probe_train} images" if args.probe_train else "") + ".", "",
             "| run | top-1 | wall time (2 cores) |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return lines + [""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=f"synthetic,{FASHION}", help="comma-separated data sets")
    ap.add_argument("--model", default="vit-tiny")
    ap.add_argument("--pretrain-epochs", type=int, default=10)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--num-train", type=int, default=None, help="training images per data set (default: all)")
    ap.add_argument("--probe-train", type=int, default=None, help="images the probe is fitted on (default: all)")
    ap.add_argument("--supervised", action="append", default=[], metavar="DATA=CKPT",
                    help="a checkpoint trained with labels on DATA (probed as the ceiling); repeatable")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="keep checkpoints here (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    t0 = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="vitedge-mae-"))
    work.mkdir(parents=True, exist_ok=True)
    lines = heading("MAE pretraining + linear probe, fine-tuning from MAE vs scratch", args.threads)
    for data in args.data.split(","):
        lines += one_data_set(data, args, work)
    publish(lines, args.out, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
