"""Checkpoints: safetensors weights with the model card in the header; safe loading of anything.

A vitedge checkpoint is one `.safetensors` file whose header metadata holds the model card
(architecture, config, preprocessing, classes, metrics, provenance), so it cannot be separated
from what it needs to be rebuilt. Foreign state dicts (`.pth`/`.pt`/`.bin`, or safetensors
without a card) are read with `torch.load(weights_only=True)` / safetensors only: unpickling
that would construct arbitrary objects or call functions is refused, never executed.
"""

from __future__ import annotations

import argparse
import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from vitedge.card import ModelCard
from vitedge.errors import InputError, UnsafeInputError
from vitedge.fsutil import atomic_file

CARD_KEY = "vitedge.card"
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
# A sharded safetensors checkpoint (transformers' / timm's `save_pretrained` over a size limit):
# `NAME.safetensors.index.json` maps every tensor to one of the shard files beside it.
SHARD_INDEX_SUFFIX = ".safetensors.index.json"
# BatchNorm counts its training steps in this buffer; many published checkpoints drop it
# (gen-efficientnet, older torchvision exports). PyTorch's own `load_state_dict(strict=True)`
# fills it (BatchNorm's `_load_from_state_dict`), so it is never a mismatch here either.
BN_COUNTER = "num_batches_tracked"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a checkpoint file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file, not a checkpoint")


def read_card(path: str | Path) -> ModelCard | None:
    """The model card in a safetensors header, or None if it has none."""
    from safetensors import safe_open

    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own SafetensorError / OSError types
        raise InputError(f"{path}: not a readable safetensors file ({_short(e)})") from None
    if CARD_KEY not in meta:
        return None
    try:
        return ModelCard.from_dict(json.loads(meta[CARD_KEY]))
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: broken vitedge model card in header ({_short(e)})") from None


def read_state_dict(path: str | Path, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors or a torch state-dict file, loaded without running code."""
    return read_state_dict_info(path, use_ema)[0]


def read_state_dict_info(path: str | Path, use_ema: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """`read_state_dict` plus what was read: {"entry": the wrapper key used ("state_dict_ema",
    "model", ... or None for a bare state dict), "entries": the state-dict keys the file has,
    "stripped_prefix": a wrapper prefix removed from every key, or None}.

    Wrapped checkpoints follow timm's `load_state_dict(use_ema=...)`: with `use_ema` the EMA
    weights ("state_dict_ema", then "model_ema") win when present, else "state_dict", then "model".
    """
    path = Path(path)
    _check_file(path)
    if path.name.endswith(SHARD_INDEX_SUFFIX):
        return _find_state_dict(_read_shards(path), path, use_ema)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return _find_state_dict(load_file(str(path)), path, use_ema)
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"{path}: not a readable safetensors file ({_short(e)})") from None
    if path.suffix not in TORCH_SUFFIXES and not path.name.endswith(".pth.tar"):
        raise InputError(
            f"{path}: unknown checkpoint type {path.suffix!r}; use .safetensors or a torch "
            f"state dict ({', '.join(TORCH_SUFFIXES)}, .pth.tar)"
        )
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise InputError(f"{path}: not a readable torch checkpoint (neither a torch zip archive nor a pickle)")
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(SAFE_GLOBALS):
            warnings.simplefilter("ignore")  # torch warns about pickle protocols; the verdict is ours
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        suspicious = pickle_globals(path)
        if suspicious:
            # weights_only=True refused to build these objects: a file that would import and
            # call them when unpickled normally. Nothing was executed.
            raise UnsafeInputError(
                f"{path}: refused, unpickling it would import/call {', '.join(suspicious[:3])}; "
                "re-save it as a plain state dict or .safetensors"
            ) from None
        raise InputError(f"{path}: not a readable torch checkpoint ({_short(e)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, KeyError) as e:
        raise InputError(f"{path}: not a readable torch checkpoint ({_short(e)})") from None
    return _find_state_dict(obj, path, use_ema)


def _read_shards(index: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a sharded safetensors checkpoint, from the shards its index names."""
    from safetensors.torch import load_file

    try:
        weight_map = json.loads(index.read_text()).get("weight_map")
    except (ValueError, OSError, AttributeError) as e:
        raise InputError(f"{index}: not a readable safetensors index ({_short(e)})") from None
    if not isinstance(weight_map, dict) or not weight_map:
        raise InputError(f"{index}: has no \"weight_map\"; expected the index that save_pretrained writes")
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(map(str, weight_map.values()))):
        file = index.parent / shard
        if not file.is_file():
            raise InputError(f"{index}: names shard {shard}, which is not beside it; copy every shard")
        try:
            state.update(load_file(str(file)))
        except Exception as e:
            raise InputError(f"{file}: not a readable safetensors file ({_short(e)})") from None
    absent = [k for k in weight_map if k not in state]
    if absent:
        raise InputError(f"{index}: {len(absent)} tensor(s) it lists are in no shard (first: {absent[0]})")
    return state


# timm's training checkpoints carry the command line as an argparse.Namespace ("args"); timm's
# own loader allows exactly this class under weights_only=True. Building a Namespace only sets
# attributes (no code runs), so it is safe to allow too.
SAFE_GLOBALS: list[Any] = [argparse.Namespace]


_SAFE_GLOBAL_PREFIXES = ("torch.", "torch._utils.", "collections.OrderedDict", "_codecs.encode",
                         "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
                         "numpy.ndarray", "numpy.dtype", "builtins.set", "builtins.frozenset",
                         "argparse.Namespace")


def pickle_globals(path: Path) -> list[str]:
    """The non-tensor globals a pickle (or torch zip archive) references, found by reading its
    opcodes with pickletools - nothing is unpickled or executed."""
    import pickletools
    import zipfile

    data: bytes
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
            if name is None:
                return []
            data = z.read(name)
    else:
        data = path.read_bytes()
    found: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(str(arg))
            elif op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # a malformed pickle: report what was seen before the damage
        pass
    return sorted({g for g in found if not g.startswith(_SAFE_GLOBAL_PREFIXES)})


# Wrapper keys of training checkpoints, in timm's order of preference (EMA first when wanted).
EMA_ENTRIES = ("state_dict_ema", "model_ema")
PLAIN_ENTRIES = ("state_dict", "model")
# Prefixes that wrappers put on every key: DataParallel/DDP ("module."), torch.compile
# ("_orig_mod."), as timm's `clean_state_dict` strips them.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _find_state_dict(obj: Any, path: Path, use_ema: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    info: dict[str, Any] = {"entry": None, "entries": [], "stripped_prefix": None}
    if isinstance(obj, dict):
        info["entries"] = [k for k in (*EMA_ENTRIES, *PLAIN_ENTRIES) if isinstance(obj.get(k), dict)]
        order = (*EMA_ENTRIES, *PLAIN_ENTRIES) if use_ema else PLAIN_ENTRIES
        for key in order:
            if isinstance(obj.get(key), dict):
                obj, info["entry"] = obj[key], key
                break
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            stripped: set[str] = set()
            clean = {}
            for k, v in tensors.items():
                while k.startswith(WRAPPER_PREFIXES):
                    p = next(p for p in WRAPPER_PREFIXES if k.startswith(p))
                    stripped.add(p)
                    k = k.removeprefix(p)
                clean[k] = v
            info["stripped_prefix"] = "".join(sorted(stripped)) or None
            return clean, info
        if info["entry"] is None and not use_ema and any(k in info["entries"] for k in EMA_ENTRIES):
            raise InputError(f"{path}: holds only EMA weights ({', '.join(info['entries'])}); "
                             "load them with EMA enabled")
    raise InputError(f"{path}: holds no state dict (a dict of tensors)")


def check_finite(state: dict[str, torch.Tensor], path: Path | str) -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InputError(
            f"{path}: {len(bad)} weight tensor(s) contain NaN/Inf (first: {', '.join(bad[:3])}); "
            "the model cannot be exported faithfully"
        )


# Prefixes some training frameworks put on every key of the model they wrap (Lightning's
# `self.model`, timm-style wrappers); stripped only when every key has it and the result fits.
MODEL_PREFIXES = ("model.",)


def fit_prefix(state: dict[str, torch.Tensor], model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], str | None]:
    """`state` with a wrapper prefix removed when that makes it fit `model` better."""
    own = model.state_dict()
    hits = len(own.keys() & state.keys())
    if hits == len(own):
        return state, None
    for p in MODEL_PREFIXES:
        if state and all(k.startswith(p) for k in state):
            stripped = {k.removeprefix(p): v for k, v in state.items()}
            if len(own.keys() & stripped.keys()) > hits:
                return stripped, p
    return state, None


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path | str) -> dict[str, Any]:
    """`model.load_state_dict(state)` with a one-line error naming the first mismatches.

    Returns {"stripped_prefix": a wrapper prefix removed to make the keys fit, or None,
    "filled": how many BatchNorm step counters the file lacked and were filled}."""
    state, prefix = fit_prefix(state, model)
    own = model.state_dict()
    filled = [k for k in own if k not in state and k.rsplit(".", 1)[-1] == BN_COUNTER]
    state = {**state, **{k: own[k] for k in filled}}  # as PyTorch fills it (see BN_COUNTER)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"shape mismatch: {_first(wrong, '; ')}")
        if missing:
            parts.append(f"missing keys: {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_first(unexpected)}")
        hint = "check --arch and --num-classes"
        if missing and not unexpected and not wrong and all(_is_head(k, model) for k in missing):
            hint = ("the file has no classifier head (a backbone / self-supervised checkpoint); fine-tune a "
                    "head first (vitedge train --init FILE)")
        elif missing and unexpected:
            common = _common_prefix(unexpected)
            if common and any(k.removeprefix(common) in own for k in unexpected):
                hint = f"every unexpected key starts with {common!r}: re-save the weights without that prefix"
        raise InputError(f"{path}: weights do not fit this architecture ({' | '.join(parts)}); {hint}")
    check_finite(state, path)
    model.load_state_dict(state, strict=True)
    return {"stripped_prefix": prefix, "filled": len(filled)}


def _first(items: list[str], sep: str = ", ") -> str:
    more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
    return sep.join(items[:3]) + more


def _is_head(key: str, model: torch.nn.Module) -> bool:
    heads = getattr(model, "pretrained_cfg", {}).get("classifier", "head") if hasattr(model, "pretrained_cfg") else "head"
    heads = heads if isinstance(heads, (list, tuple)) else [heads]
    return any(key.startswith(h + ".") for h in heads)


def _common_prefix(keys: list[str]) -> str | None:
    first = keys[0].split(".", 1)[0] + "."
    return first if all(k.startswith(first) for k in keys) else None


def save_checkpoint(path: str | Path, model: torch.nn.Module, card: ModelCard) -> Path:
    """Write weights + card as one safetensors file, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_file(path) as tmp:
        save_file(state, str(tmp), metadata={CARD_KEY: card.to_json()})
    return path


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:160]
