"""Training: beats chance quickly, is deterministic, resumes exactly; fine-tuning from timm."""

from __future__ import annotations

import pytest
import torch
from cores import THREADS

from vitedge.models.resolve import load_model
from vitedge.train import trainer
from vitedge.train.trainer import TrainConfig, train

FAST = {"depth": 2, "embed_dim": 96, "num_heads": 3}


def _cfg(tmp_path, name="m", **kw):
    base = dict(model="vit-tiny", out=str(tmp_path / f"{name}.safetensors"), epochs=2,
                num_train=1500, img_size=32, batch_size=64, lr=1e-3, threads=THREADS,
                overrides=dict(FAST))
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_short_training_run_beats_chance(tmp_path):
    result = train(_cfg(tmp_path, epochs=3))
    # Chance is 0.10 +- 0.007 (2000 test images); 1500 images x 3 epochs of a 2-block ViT
    # reach ~0.23 deterministically under the seed.
    assert result.card.metrics["test_top1"] > 0.18
    assert result.checkpoint.exists()
    assert not (tmp_path / "m.safetensors.train-state.pt").exists()  # cleaned up when done
    loaded = load_model(str(result.checkpoint))
    assert loaded.card.training["recipe"]["epochs"] == 3
    assert len(loaded.card.training["history"]) == 3


def test_interrupted_run_resumes_to_identical_weights(tmp_path, monkeypatch):
    full = train(_cfg(tmp_path, "full"))
    real_save = trainer._save_state
    calls = {"n": 0}

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tmp_path, "resumed"))
    assert not (tmp_path / "resumed.safetensors").exists()  # no half-finished checkpoint
    monkeypatch.setattr(trainer, "_save_state", real_save)
    resumed = train(_cfg(tmp_path, "resumed", resume=True))
    a = load_model(str(full.checkpoint)).module.state_dict()
    b = load_model(str(resumed.checkpoint)).module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_fine_tune_from_a_timm_checkpoint(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    src = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1000)
    weights = tmp_path / "vit_tiny_in1k.safetensors"
    save_file(src.state_dict(), str(weights))
    result = train(TrainConfig(
        model="timm:vit_tiny_patch16_224", init=str(weights), out=str(tmp_path / "ft.safetensors"),
        epochs=1, num_train=400, img_size=32, batch_size=50, threads=THREADS,
    ))
    loaded = load_model(str(result.checkpoint))
    assert loaded.card.arch == "timm:vit_tiny_patch16_224"
    assert loaded.card.num_classes == 10 and loaded.card.preprocess.input_size == (32, 32)
    # The transformer blocks started from the checkpoint (moved by one short epoch, not re-drawn).
    moved = (loaded.module.blocks[0].attn.qkv.weight - src.blocks[0].attn.qkv.weight).abs().mean()
    assert moved < 0.1 * src.blocks[0].attn.qkv.weight.abs().mean()


@pytest.mark.slow
def test_a_timm_resnet_trains_and_exports_with_parity_like_any_model(tmp_path):
    # ViT vs CNN (issue 15): a timm ResNet goes through `vitedge train` and the export pipeline
    # under the *trained* gate (fp32: max abs 1e-4, agreement 1.0; int8: accuracy and agreement),
    # with BatchNorm folded by the exporters. ResNet-10-T (timm's smallest ResNet, the same
    # BasicBlocks and BatchNorm as ResNet-18) keeps the suite fast: 4 epochs on 3,000 images took
    # 51 s on one core against ResNet-18's 78 s, for top-1 0.965 against 0.911 (2026-12-05); 3
    # epochs reach val 0.922 and pass the INT8 gate (2 epochs on 2,000: 0.564, and INT8 failed).
    # ResNet-18 itself exports in test_timm_zoo_sample.
    pytest.importorskip("timm")
    from vitedge.calib.source import load_calibration
    from vitedge.pipeline import BenchConfig, ExportRequest, export_target

    result = train(TrainConfig(model="timm:resnet10t", out=str(tmp_path / "r10.safetensors"), epochs=3,
                               num_train=3000, img_size=32, batch_size=64, threads=THREADS))
    loaded = load_model(str(result.checkpoint))
    assert loaded.card.arch == "timm:resnet10t" and not loaded.card.untrained
    # Learned something (chance is 0.10 +- 0.007 on 2,000 test images; 0.965 measured at 4 epochs; val 0.922 at 3)
    assert result.card.metrics["test_top1"] > 0.5
    fast = BenchConfig(warmup=2, min_runs=5, budget_s=0.3)
    fp32 = export_target(loaded, ExportRequest(target="onnx-fp32", out=tmp_path / "fp32", eval_n=500, bench=fast))
    assert fp32.passed and fp32.parity.worst("max_abs") < 1e-4 and fp32.parity.worst("top1_agreement") == 1.0
    calib = load_calibration("synthetic", loaded.card.preprocess, 200)
    int8 = export_target(loaded, ExportRequest(target="ort-int8", out=tmp_path / "int8", eval_n=500, bench=fast,
                                               calibration=calib))
    d = int8.to_dict()
    assert int8.passed and abs(d["accuracy"]["delta_pts"]) <= 0.5 and d["parity"]["top1_agreement"] >= 0.98
