"""Checkpoints: bit-identical round trip, and safe refusal of everything else."""

from __future__ import annotations

import pickle

import pytest
import torch

from vitedge.errors import InputError, UnsafeInputError, UsageError
from vitedge.models import checkpoint
from vitedge.models.resolve import load_model, new_card

SMALL = {"img_size": 32, "depth": 2, "embed_dim": 48, "num_heads": 3, "num_classes": 4}


@pytest.fixture
def small_vit():
    torch.manual_seed(0)
    module, card = new_card("vit-tiny", dict(SMALL), ("a", "b", "c", "d"), source="test")
    return module.eval(), card


def test_round_trip_gives_bit_identical_outputs(tmp_path, small_vit):
    module, card = small_vit
    path = checkpoint.save_checkpoint(tmp_path / "m.safetensors", module, card.with_(metrics={"top1": 0.5}))
    loaded = load_model(str(path))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(module(x), loaded.module(x))
    assert loaded.card.classes == ("a", "b", "c", "d")
    assert loaded.card.metrics == {"top1": 0.5}
    assert loaded.card.preprocess.input_size == (32, 32)
    assert not list(tmp_path.glob("*.partial"))  # atomic write left no temp file


class _RunsCode:
    """Unpickling this calls os.system: a checkpoint that would execute code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": {"w": _RunsCode(marker)}}, f)
    # torch.save format too (zip container with the same payload)
    evil_zip = tmp_path / "evil_zip.pt"
    torch.save({"w": _RunsCode(marker)}, evil_zip)
    for path in (evil, evil_zip):
        with pytest.raises(UnsafeInputError, match="refused"):
            checkpoint.read_state_dict(path)
        with pytest.raises(UnsafeInputError):
            load_model(str(path), arch="vit-tiny")
    assert not marker.exists()


def test_plain_state_dict_needs_arch_then_loads(tmp_path, small_vit):
    module, _ = small_vit
    path = tmp_path / "plain.pth"
    torch.save(module.state_dict(), path)
    with pytest.raises(UsageError, match="--arch"):
        load_model(str(path))
    loaded = load_model(str(path), arch="vit-tiny", overrides={k: v for k, v in SMALL.items() if k != "num_classes"})
    assert loaded.card.num_classes == 4  # inferred from the head
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(module(x), loaded.module(x))


def test_wrong_architecture_names_the_mismatched_keys(tmp_path, small_vit):
    module, _ = small_vit
    path = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file(module.state_dict(), str(path))
    with pytest.raises(InputError, match=r"shape mismatch: .*patch_embed"):
        load_model(str(path), arch="vit-tiny")  # default dim 192 vs 48
    with pytest.raises(InputError, match="missing keys"):
        load_model(str(path), arch="convnext-zepto", overrides={"num_classes": 4})


def test_nan_weights_are_refused(tmp_path, small_vit):
    module, card = small_vit
    with torch.no_grad():
        module.head.weight[0, 0] = float("nan")
    path = checkpoint.save_checkpoint(tmp_path / "nan.safetensors", module, card)
    with pytest.raises(InputError, match="NaN/Inf.*head.weight"):
        load_model(str(path))


@pytest.mark.parametrize("case", ["empty", "random", "truncated", "directory", "missing", "suffix"])
def test_broken_files_are_input_errors(tmp_path, small_vit, case):
    module, card = small_vit
    good = checkpoint.save_checkpoint(tmp_path / "good.safetensors", module, card)
    path = tmp_path / "bad.safetensors"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "random":
        path.write_bytes(bytes(range(256)) * 10)
    elif case == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case == "directory":
        path.mkdir()
    elif case == "suffix":
        path = tmp_path / "weights.npz"
        path.write_bytes(b"PK")
    with pytest.raises(InputError, match=str(path.name)):
        load_model(str(path), arch="vit-tiny")


def test_state_dict_without_batchnorm_counters_loads_as_pytorch_does(tmp_path):
    """Published checkpoints often drop BatchNorm's num_batches_tracked; PyTorch's strict load
    fills it, and so must vitedge (a convnext-zepto with BN swapped in stands for such a model)."""
    from vitedge.models.checkpoint import BN_COUNTER, load_weights

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 2, 1), torch.nn.BatchNorm2d(2))
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(BN_COUNTER)}
    assert len(state) == len(model.state_dict()) - 2
    fresh = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 2, 1), torch.nn.BatchNorm2d(2))
    fresh.load_state_dict(dict(state), strict=True)  # what PyTorch itself accepts
    info = load_weights(fresh.eval(), state, tmp_path / "bn.pth")
    assert info["filled"] == 2
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), fresh(x))
    # a real mismatch is still one line naming the key
    broken = dict(state)
    del broken["1.running_mean"]
    with pytest.raises(InputError, match=r"missing keys: 1\.running_mean"):
        load_weights(fresh, broken, tmp_path / "bn.pth")


def test_sharded_safetensors_with_an_index_loads(tmp_path, small_vit):
    import json

    from safetensors.torch import save_file

    module, _ = small_vit
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, ks in shards.items():
        save_file({k: state[k] for k in ks}, str(tmp_path / name))
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {k: n for n, ks in shards.items() for k in ks}}))
    loaded = load_model("vit-tiny", weights=index, overrides={k: v for k, v in SMALL.items() if k != "num_classes"})
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(module(x), loaded.module(x))
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(InputError, match="names shard model-00002-of-00002.safetensors"):
        load_model("vit-tiny", weights=index, overrides={k: v for k, v in SMALL.items() if k != "num_classes"})
