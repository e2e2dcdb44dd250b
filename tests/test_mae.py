"""MAE pretraining (masking, encoder on visible tokens, decoder mask tokens, masked-only loss),
its checkpoint feeding `train --init` and `probe`, and the linear probe itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitedge.errors import UsageError
from vitedge.models.resolve import load_model, new_card
from vitedge.models.vit import VisionTransformer
from vitedge.train import mae as mae_mod
from vitedge.train.mae import PretrainConfig, pretrain
from vitedge.train.mae_model import MaskedAutoencoder, patchify, random_masking, unpatchify
from vitedge.train.probe import extract_features, fit_logistic, linear_probe

# A 2-block ViT at 32 px with 8-px patches: 16 patches, like vit-tiny's 4x4 grid at 64 px.
FAST = {"depth": 2, "embed_dim": 96, "num_heads": 3, "patch_size": 8}


def _mae(img=32, patch=8, ratio=0.75) -> MaskedAutoencoder:
    torch.manual_seed(0)
    enc = VisionTransformer(img_size=img, patch_size=patch, embed_dim=96, depth=2, num_heads=3)
    return MaskedAutoencoder(enc, img, decoder_dim=64, decoder_depth=1, mask_ratio=ratio)


@pytest.mark.parametrize("num_patches", [16, 64, 196])
def test_exactly_75_percent_of_patches_are_hidden_per_image(num_patches):
    g = torch.Generator().manual_seed(0)
    ids_keep, mask, ids_restore = random_masking(32, num_patches, 0.75, g)
    assert mask.shape == (32, num_patches)
    assert torch.all(mask.sum(1) == num_patches * 3 // 4)  # every image, exactly
    assert ids_keep.shape == (32, num_patches // 4)
    # The kept ids are exactly the visible positions, and the masks differ between images.
    for i in range(32):
        assert set(ids_keep[i].tolist()) == set(torch.nonzero(mask[i] == 0).flatten().tolist())
    assert len({tuple(m.tolist()) for m in mask}) > 1
    assert torch.equal(ids_restore.argsort(1)[:, : num_patches // 4], ids_keep)
    # Seeded: the same generator state gives the same masks (resume replays them).
    again = random_masking(32, num_patches, 0.75, torch.Generator().manual_seed(0))[1]
    assert torch.equal(mask, again)


def test_patchify_matches_the_patch_embedding_order():
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(unpatchify(patchify(x, 8), 8, 32, 32), x)
    enc = _mae().encoder
    w = enc.patch_embed.proj.weight  # (D, 3, 8, 8) -> per-patch (p, p, C) order
    manual = patchify(x, 8) @ w.permute(0, 2, 3, 1).reshape(w.shape[0], -1).T + enc.patch_embed.proj.bias
    assert torch.allclose(manual, enc.patch_embed(x), atol=1e-5)


def test_encoder_runs_on_the_visible_tokens_only():
    m = _mae()
    seen = []
    m.encoder.blocks.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape))
    loss, pred, mask = m(torch.randn(5, 3, 32, 32), torch.Generator().manual_seed(1))
    assert seen == [torch.Size([5, 1 + 4, 96])]  # CLS + the 4 visible of 16 patches
    assert pred.shape == (5, 16, 8 * 8 * 3) and mask.shape == (5, 16)


def test_decoder_sees_mask_tokens_at_the_hidden_positions():
    m = _mae()
    x = torch.randn(3, 3, 32, 32)
    ids_keep, mask, ids_restore = random_masking(3, 16, 0.75, torch.Generator().manual_seed(2))
    latent = m.encode(x, ids_keep)
    tokens = m.decoder_tokens(latent, ids_restore)  # (N, 1 + 16, Dd), before position embedding
    embedded = m.decoder_embed(latent)
    assert tokens.shape == (3, 17, 64)
    for i in range(3):
        hidden = torch.nonzero(mask[i] == 1).flatten()
        assert torch.equal(tokens[i, 1 + hidden], m.mask_token[0].expand(len(hidden), -1))
        # Visible positions carry the encoder's tokens, back in image order.
        assert torch.allclose(tokens[i, 1 + ids_keep[i]], embedded[i, 1:])
    # The mask token is learned: the loss reaches it.
    loss, _, _ = m(x, torch.Generator().manual_seed(2))
    loss.backward()
    assert m.mask_token.grad is not None and m.mask_token.grad.abs().sum() > 0


def test_loss_counts_only_the_hidden_patches():
    m = _mae()
    x = torch.randn(4, 3, 32, 32)
    ids_keep, mask, ids_restore = random_masking(4, 16, 0.75, torch.Generator().manual_seed(3))
    pred = m.decode(m.encode(x, ids_keep), ids_restore).detach().requires_grad_(True)
    target = m.target(x)
    loss = m.masked_mse(pred, target, mask)
    loss.backward()
    per_patch_grad = pred.grad.abs().sum(-1)
    assert torch.all(per_patch_grad[mask == 0] == 0)  # visible patches: no gradient at all
    assert torch.all(per_patch_grad[mask == 1] > 0)
    # Changing a visible patch's target leaves the loss unchanged; a hidden one changes it.
    vis = (mask == 0).nonzero()[0]
    hid = (mask == 1).nonzero()[0]
    t2 = target.clone()
    t2[vis[0], vis[1]] += 5
    assert torch.equal(m.masked_mse(pred, t2, mask), loss)
    t3 = target.clone()
    t3[hid[0], hid[1]] += 5
    assert m.masked_mse(pred, t3, mask) > loss
    # The target is per-patch normalised pixels (norm-pix).
    assert torch.allclose(target.mean(-1), torch.zeros(4, 16), atol=1e-5)


def test_mask_ratio_that_leaves_nothing_visible_is_a_usage_error():
    with pytest.raises(UsageError, match="mask-ratio"):
        random_masking(2, 4, 0.95)
    with pytest.raises(UsageError, match="ViT-family"):
        mae_mod.build(PretrainConfig(model="convnext-zepto"), tuple("0123456789"))


def _cfg(tmp_path, name="mae", **kw):
    base = dict(model="vit-tiny", out=str(tmp_path / f"{name}.safetensors"), epochs=2, num_train=300,
                img_size=32, batch_size=64, lr=2e-3, decoder_dim=64, decoder_depth=1, threads=None,
                overrides=dict(FAST))
    base.update(kw)
    return PretrainConfig(**base)


@pytest.mark.slow
def test_interrupted_pretraining_resumes_to_identical_weights(tmp_path, monkeypatch):
    full = pretrain(_cfg(tmp_path, "full"))
    real_save = mae_mod._save_state
    calls = {"n": 0}

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(mae_mod, "_save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_cfg(tmp_path, "resumed"))
    assert not (tmp_path / "resumed.safetensors").exists()  # no half-finished checkpoint
    assert (tmp_path / "resumed.safetensors.pretrain-state.pt").exists()
    monkeypatch.setattr(mae_mod, "_save_state", real_save)
    with pytest.raises(UsageError, match="different pretraining options"):
        pretrain(_cfg(tmp_path, "resumed", resume=True, mask_ratio=0.5))
    resumed = pretrain(_cfg(tmp_path, "resumed", resume=True))
    a = load_model(str(full.checkpoint)).module.state_dict()
    b = load_model(str(resumed.checkpoint)).module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history == full.history
    assert not (tmp_path / "resumed.safetensors.pretrain-state.pt").exists()


@pytest.mark.slow
def test_checkpoint_is_the_encoder_that_train_init_reads_and_a_picture_is_written(tmp_path):
    from vitedge.train.trainer import TrainConfig, train

    result = pretrain(_cfg(tmp_path, epochs=1))
    loaded = load_model(str(result.checkpoint))
    assert loaded.card.arch == "vit-tiny" and loaded.card.training["method"] == "mae"
    assert loaded.card.config["patch_size"] == 8 and loaded.card.preprocess.input_size == (32, 32)
    assert "decoder" not in " ".join(loaded.module.state_dict())  # the encoder only
    # The picture: 3 rows (original / masked / reconstructed) of 8 images.
    pic = Image.open(result.picture)
    assert pic.format == "PNG" and pic.height >= 3 * 96 and pic.width > 8 * 96
    ft = train(TrainConfig(model="vit-tiny", init=str(result.checkpoint), out=str(tmp_path / "ft.safetensors"),
                           epochs=1, num_train=200, img_size=32, batch_size=50, overrides=dict(FAST)))
    tuned = load_model(str(ft.checkpoint)).module
    # Fine-tuning started from the MAE encoder (moved by one short epoch, not re-drawn).
    w0 = loaded.module.blocks[0].mlp[0].weight
    moved = (tuned.blocks[0].mlp[0].weight - w0).abs().mean()
    assert moved < 0.2 * w0.abs().mean()


def test_probe_features_are_what_the_head_reads():
    torch.manual_seed(0)
    vit, card = new_card("vit-tiny", {**FAST, "img_size": 32}, None, "random-init")
    x = np.random.default_rng(0).standard_normal((6, 3, 32, 32)).astype(np.float32)
    cls = extract_features(vit, x, "cls")
    with torch.no_grad():
        logits = vit(torch.from_numpy(x)).numpy()
    head = vit.head
    assert np.allclose(cls @ head.weight.detach().numpy().T + head.bias.detach().numpy(), logits, atol=1e-4)
    mean = extract_features(vit, x, "mean")
    assert mean.shape == (6, 96) and not np.allclose(mean, cls)
    # A CNN's "mean" features are its pooled features: what its head reads.
    conv, _ = new_card("convnext-zepto", {}, None, "random-init")
    xc = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    pooled = extract_features(conv, xc, "mean")
    with torch.no_grad():
        conv_logits = conv(torch.from_numpy(xc)).numpy()
    w, b = conv.head.weight.detach().numpy(), conv.head.bias.detach().numpy()
    assert np.allclose(pooled @ w.T + b, conv_logits, atol=1e-4)
    with pytest.raises(UsageError, match="needs a ViT"):
        extract_features(conv, xc, "cls")


def test_logistic_probe_separates_separable_features():
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    f = rng.standard_normal((300, 8)) + 4 * np.eye(8)[y]
    w, b = fit_logistic(f, y, 3, 1e-4)
    assert ((f @ w.numpy() + b.numpy()).argmax(1) == y).mean() > 0.97


@pytest.mark.slow
def test_short_mae_pretraining_beats_the_random_init_probe(tmp_path):
    # 4000 shapes10 images x 8 epochs (~30 s of pretraining on 2 cores). Measured under seed 0
    # (1000 test images): mean-pooled features 0.32 after MAE vs 0.14 at random init, and the
    # random-init encoder's best view (its CLS token) 0.28.
    result = pretrain(_cfg(tmp_path, epochs=8, num_train=4000))
    assert result.history[-1]["val_loss"] < 0.8 * result.history[0]["val_loss"]
    mae_enc = load_model(str(result.checkpoint))
    torch.manual_seed(0)
    rnd, _ = new_card("vit-tiny", {**FAST, "img_size": 32}, None, "random-init")
    spec = mae_enc.card.preprocess
    grid = (1e-4, 1e-2)
    after = linear_probe(mae_enc.module, spec, "synthetic", "mean", 0, 2000, 1000, grid)
    before = linear_probe(rnd, spec, "synthetic", "mean", 0, 2000, 1000, grid)
    before_cls = linear_probe(rnd, spec, "synthetic", "cls", 0, 2000, 1000, grid)
    assert after.n_test == 1000 and after.n_train == 2000
    assert after.top1 > before.top1 + 0.10
    assert after.top1 > before_cls.top1 + 0.02


@pytest.mark.slow
def test_cli_pretrain_and_probe_commands(tmp_path):
    from test_realdata import write_idx_set

    import vitedge.cli.pretrain_cmd  # noqa: F401  (registers the commands on the app)
    from vitedge.cli.main import main

    data = tmp_path / "fashion-mnist"
    write_idx_set(data, n_train=200, n_test=50)
    assert main(["pretrain", "--method", "simclr", "--data", str(data)]) == 2
    out = tmp_path / "enc.safetensors"
    assert main(["pretrain", "--data", str(data), "--img-size", "32", "--epochs", "1", "--batch-size", "64",
                 "--decoder-dim", "32", "--decoder-depth", "1", "--out", str(out)]) == 0
    assert out.exists() and (tmp_path / "enc.recon.png").exists()
    res = tmp_path / "probe.json"
    assert main(["probe", str(out), "--data", str(data), "--eval-n", "30", "--json", str(res)]) == 0
    import json

    r = json.loads(res.read_text())
    assert r["features"] == "mean" and r["n_test"] == 30 and 0.0 <= r["top1"] <= 1.0
    assert main(["probe", str(out), "--data", str(data), "--features", "pixels"]) == 2
    assert main(["probe", str(out), "--data", str(tmp_path / "nope")]) == 3
