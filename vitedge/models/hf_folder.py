"""Hugging Face folders as MODEL: a transformers image classifier or a timm hub folder.

A folder written by `save_pretrained` (transformers: `config.json` with `model_type` and
`architectures`, `model.safetensors`, `preprocessor_config.json`), the output of the HF
Trainer, or a timm hub folder (`timm.models.push_to_hf_hub`/`save_for_hf`: `config.json` with
`architecture` and `pretrained_cfg`) is taken as it is, from local files only: nothing is
downloaded (`local_files_only=True`) and no code from the folder runs (`trust_remote_code` is
never on; the model class must be one of transformers' own). An HF cache entry
(`models--ORG--NAME`, or its `snapshots/REV`) resolves to its snapshot.

Everything comes from the folder and the card records where each value came from: classes from
`id2label` (timm: `label_names`), preprocessing from the image processor that
`preprocessor_config.json` describes (timm: `pretrained_cfg` through timm's
`resolve_data_config`). vitedge does not trust its own reading of the processor: the spec is
checked against the real processor (its PIL backend) on a few synthetic images of odd sizes
at load time, and a folder whose preprocessing vitedge cannot reproduce is refused with the
difference (a wrong mean/std costs points of top-1 silently).

The exported module is the transformers model itself behind a wrapper that returns `.logits`
(for DeiT's distilled model: the mean of its two heads, as transformers does); that module is
also the parity reference.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vitedge.errors import InputError, MissingDependencyError, UsageError

PREFIX = "hf:"
EXTRA_HINT = "pip install 'vitedge[hf]'"
CONFIG = "config.json"
TRANSFORMERS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
TIMM_WEIGHTS = ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin")


# --- finding and recognising the folder ----------------------------------------------------


def folder_of(source: str) -> Path | None:
    """The model folder `source` names ("hf:DIR", a directory, an HF cache entry), else None."""
    text = source.removeprefix(PREFIX)
    path = Path(text).expanduser()
    if not path.is_dir():
        if source.startswith(PREFIX):
            raise InputError(f"{source}: no such directory (hf:DIR takes a local folder; nothing is downloaded)")
        return None
    from vitedge.models.checkpoint import TORCH_SUFFIXES

    if path.suffix in (".safetensors", *TORCH_SUFFIXES) and not source.startswith(PREFIX):
        return None  # a directory named like a checkpoint file: the checkpoint reader names the problem
    return _snapshot(path)


def _snapshot(path: Path) -> Path:
    """An HF cache repo folder (models--ORG--NAME) or its snapshots/ -> the snapshot it points at."""
    if (path / CONFIG).is_file():
        return path
    snapshots = path / "snapshots" if (path / "snapshots").is_dir() else path if path.name == "snapshots" else None
    if snapshots is None:
        return path  # the caller names what is missing
    ref = snapshots.parent / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
        return snapshots / ref.read_text().strip()
    revs = sorted(p for p in snapshots.iterdir() if (p / CONFIG).is_file())
    if len(revs) == 1:
        return revs[0]
    raise InputError(f"{path}: an HF cache entry with {len(revs)} snapshots and no refs/main; "
                     "pass the snapshot folder (snapshots/REV) itself")


def read_config(folder: Path) -> dict[str, Any]:
    cfg_path = folder / CONFIG
    if not cfg_path.is_file():
        raise InputError(f"{folder}: no {CONFIG}; a model folder is what save_pretrained (transformers) or "
                         "save_for_hf (timm) writes")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{cfg_path}: not readable JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{cfg_path}: expected a JSON object")
    return cfg


def folder_kind(folder: Path, cfg: dict[str, Any]) -> str:
    """"timm" (config.json names an `architecture`) or "transformers" (a `model_type`)."""
    if "architecture" in cfg:
        return "timm"
    if "model_type" in cfg:
        return "transformers"
    raise InputError(f"{folder / CONFIG}: neither a transformers config (no 'model_type') nor a timm hub "
                     "config (no 'architecture')")


def weights_file(folder: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"{folder}: no weights ({' or '.join(names)}); pass --random-init to export the "
                     "architecture with untrained weights")


# --- transformers ----------------------------------------------------------------------------


def _transformers() -> Any:
    from vitedge.quiet import quiet

    try:
        with quiet():  # its import pulls torchao in, which logs on import
            import transformers
    except ImportError:
        raise MissingDependencyError(f"a transformers model folder needs transformers; install with: "
                                     f"{EXTRA_HINT}") from None
    transformers.logging.set_verbosity_error()  # load reports go to the card, not to stderr
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars: the CLI has its own
    return transformers


class HFClassifier(torch.nn.Module):
    """A transformers image classifier as `pixel_values -> logits` (what every exporter traces)."""

    def __init__(self, model: Any):  # a transformers PreTrainedModel
        super().__init__()
        self.model: Any = model
        self.num_classes = int(model.config.num_labels)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits

    @property
    def attention(self) -> str:
        return str(getattr(self.model.config, "_attn_implementation", None) or "eager")

    def set_attention(self, impl: str) -> None:
        self.model.set_attn_implementation(impl)


@contextlib.contextmanager
def eager_attention(module: torch.nn.Module) -> Iterator[bool]:
    """A transformers model with SDPA switched to its eager attention for the duration (the same
    MatMul/Softmax/MatMul maths); yields whether it switched. For the exporters that fail on a
    fused attention with a mask (see `export.onnx_export`)."""
    wrapper = module if isinstance(module, HFClassifier) else None
    if wrapper is None or wrapper.attention != "sdpa":
        yield False
        return
    wrapper.set_attention("eager")
    try:
        yield True
    finally:
        wrapper.set_attention("sdpa")


def model_class(cfg: dict[str, Any], folder: Path) -> Any:
    """transformers' own class named in config.json's `architectures` (never remote code)."""
    transformers = _transformers()
    if cfg.get("auto_map"):
        raise UsageError(f"{folder / CONFIG} maps to custom code (auto_map); vitedge never runs a folder's "
                         "own code (trust_remote_code stays off): save it with a transformers model class")
    names = cfg.get("architectures") or []
    name = next((n for n in names if "ForImageClassification" in n), None)
    if name is None:
        model_type = cfg["model_type"]
        auto = transformers.models.auto.modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
        name = auto.get(model_type)
        if name is None:
            raise UsageError(f"{folder}: {names or model_type} is not an image classifier "
                             "(no *ForImageClassification class); vitedge exports image classifiers")
    cls = getattr(transformers, name, None)
    if cls is None or not issubclass(cls, transformers.PreTrainedModel):
        raise UsageError(f"{folder / CONFIG}: architecture {name!r} is not in transformers "
                         f"{transformers.__version__}; upgrade transformers or save it with a known class")
    return cls


def load_transformers(folder: Path, cfg: dict[str, Any], random_init: bool) -> tuple[HFClassifier, dict[str, Any]]:
    """The model (eval mode) and what the card records about how it was loaded."""
    transformers = _transformers()
    cls = model_class(cfg, folder)
    config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    # SDPA where the class has it (what transformers runs by default); the exporters fall back to
    # eager attention when SDPA does not export (eager_attention), and the report says so.
    attn = "sdpa" if getattr(cls, "_supports_sdpa", False) else "eager"
    info: dict[str, Any] = {"class": cls.__name__, "attention": attn, "transformers": transformers.__version__}
    with _quiet_load():
        if random_init:
            torch.manual_seed(0)
            model = cls._from_config(config, attn_implementation=attn)
        else:
            weights = weights_file(folder, TRANSFORMERS_WEIGHTS)
            info["weights"] = weights.name
            try:
                model, load = cls.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False,
                                                  attn_implementation=attn, output_loading_info=True,
                                                  use_safetensors=True)
            except (OSError, ValueError, RuntimeError) as e:
                raise InputError(f"{folder}: transformers could not load the model ({str(e).splitlines()[0][:200]})") from None
            missing = sorted(load.get("missing_keys") or [])
            if missing:
                raise InputError(f"{weights}: {len(missing)} weights of {cls.__name__} are missing "
                                 f"(e.g. {missing[0]}): the weights do not belong to this config.json")
            if load.get("mismatched_keys"):
                key = load["mismatched_keys"][0]
                raise InputError(f"{weights}: shape of {key[0] if isinstance(key, tuple) else key} does not match "
                                 "config.json")
            if load.get("unexpected_keys"):
                info["unused_weights"] = sorted(load["unexpected_keys"])[:10]
    model.eval()
    if cls.__name__.endswith("WithTeacher"):
        info["heads"] = "mean of the class-token and distillation heads (transformers' own inference output)"
    return HFClassifier(model), info


def build(card_config: dict[str, Any]) -> HFClassifier:
    """The module of an `hf:` card rebuilt from its stored config (random weights)."""
    transformers = _transformers()
    hf = dict(card_config["hf_config"])
    with _quiet_load():  # the class's module (and torchao) is imported lazily: it logs on import
        config = transformers.AutoConfig.for_model(hf.pop("model_type"), **hf)
        cls = getattr(transformers, card_config["hf_class"])
        return HFClassifier(cls._from_config(config).eval())


@contextlib.contextmanager
def _quiet_load() -> Iterator[None]:
    from vitedge.quiet import quiet

    with quiet():
        logging.getLogger("transformers").setLevel(logging.ERROR)
        yield


def classes_from(cfg: dict[str, Any]) -> tuple[str, ...] | None:
    labels = cfg.get("id2label")
    if not isinstance(labels, dict) or not labels:
        return None
    try:
        ordered = sorted(labels.items(), key=lambda kv: int(kv[0]))
    except ValueError:
        return None
    if [int(k) for k, _ in ordered] != list(range(len(ordered))):
        return None
    return tuple(str(v) for _, v in ordered)


# --- timm hub folders ------------------------------------------------------------------------


def timm_folder_config(folder: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(timm model name, pretrained_cfg, model_args) by timm's own reader of a hub folder."""
    from vitedge.models.timm_models import _timm

    hub = _timm().models._hub
    pretrained_cfg, name, model_args = hub.load_model_config_from_path(folder)
    return name, dict(pretrained_cfg), dict(model_args or {})


def timm_label_names(pretrained_cfg: dict[str, Any]) -> tuple[str, ...] | None:
    names = pretrained_cfg.get("label_names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=lambda k: int(k))]
    return tuple(str(n) for n in names) if names else None
