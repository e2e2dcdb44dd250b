"""From what the user typed to a ready `nn.Module` + its model card.

`MODEL` on the command line can be
- a built-in name ("vit-tiny", "convnext-zepto"): trained weights shipped in the package;
- any registry name or "timm:NAME" with `--weights FILE` (a state dict), or `--random-init`
  (untrained weights, for benchmarking only: the card says so);
- a vitedge checkpoint (`.safetensors` with a model card in its header);
- a foreign state dict (`.safetensors`/`.pth`/`.bin`) with `--arch NAME`;
- a Hugging Face folder (`DIR` or `hf:DIR`): a transformers image classifier saved with
  `save_pretrained`, or a timm hub folder (see vitedge.models.hf_folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from vitedge.calib.preprocess import PreprocessSpec
from vitedge.card import ModelCard
from vitedge.errors import InputError, UsageError
from vitedge.models import checkpoint, hf_folder, timm_models, untrained
from vitedge.models.registry import build_model, get_entry


@dataclass
class LoadedModel:
    module: torch.nn.Module  # in eval mode
    card: ModelCard


def builtin_weights_path(name: str) -> Path | None:
    entry = get_entry(name)
    if not entry.builtin_weights:
        return None
    return Path(str(resources.files("vitedge") / "weights" / entry.builtin_weights))


def build_from_card(card: ModelCard) -> torch.nn.Module:
    if card.arch.startswith(hf_folder.PREFIX):
        return hf_folder.build(card.config)
    if card.arch.startswith(timm_models.PREFIX):
        return timm_models.build_timm(card.arch.removeprefix(timm_models.PREFIX), **card.config)
    return build_model(card.arch, **card.config)


def preprocess_for(arch: str, overrides: dict[str, Any]) -> PreprocessSpec:
    """The preprocessing of `arch` built with `overrides`, without building the model."""
    if arch.startswith(timm_models.PREFIX):
        # timm's resolve_data_config on the model's pretrained cfg, at the requested size
        return timm_models.pretrained_preprocess(arch.removeprefix(timm_models.PREFIX), overrides.get("img_size"))
    spec = get_entry(arch).preprocess
    size = overrides.get("img_size")
    if size is not None:
        spec = PreprocessSpec.from_dict({**spec.to_dict(), "input_size": [int(size), int(size)]})
    return spec


def new_card(
    arch: str,
    overrides: dict[str, Any],
    classes: tuple[str, ...] | None,
    source: str,
) -> tuple[torch.nn.Module, ModelCard]:
    """Build `arch` with `overrides` (random weights) and the card that describes it."""
    if arch.startswith(timm_models.PREFIX):
        name = arch.removeprefix(timm_models.PREFIX)
        config, notes = timm_models.model_config(name, overrides, classes)
        module = timm_models.build_timm(name, **config)
        # timm.data.resolve_data_config({}, model=module) at the size it was asked for
        preprocess = timm_models.model_preprocess(module, name, overrides.get("img_size"))
        # family (probe forward), classifier check, size facts: kept in the card for the device side
        config[timm_models.META_KEY] = timm_models.describe(module, name, preprocess, notes)
        n = int(getattr(module, "num_classes", 1000))
    else:
        preprocess = preprocess_for(arch, overrides)
        config = {**get_entry(arch).config, **overrides}
        module = build_model(arch, **overrides)
        n = int(config["num_classes"])
    if classes is None:
        classes = tuple(f"class_{i}" for i in range(n))
    elif len(classes) != n:
        raise UsageError(f"{len(classes)} class names given but the model has {n} classes")
    card = ModelCard(arch=arch, config=config, preprocess=preprocess, classes=classes, source=source)
    return module, card


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """Class names from a text file (one per line) or a JSON list."""
    import json

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{p}: cannot read class names ({e.strerror})") from None
    if p.suffix == ".json":
        try:
            names = json.loads(text)
        except ValueError as e:
            raise InputError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(names, list):
            raise InputError(f"{p}: expected a JSON list of class names")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise InputError(f"{p}: no class names in file")
    return tuple(str(n) for n in names)


def load_model(
    source: str,
    *,
    arch: str | None = None,
    weights: str | Path | None = None,
    classes: tuple[str, ...] | None = None,
    random_init: bool = False,
    overrides: dict[str, Any] | None = None,
    use_ema: bool = True,
) -> LoadedModel:
    """`use_ema`: from a training checkpoint holding EMA weights, load those (timm's
    `load_checkpoint(use_ema=True)` convention); the card records which entry was used."""
    overrides = dict(overrides or {})
    folder = hf_folder.folder_of(source)
    if folder is not None:
        if weights is not None or arch is not None:
            raise UsageError(f"{source} is a model folder with its own architecture and weights; drop "
                             f"{'--weights' if weights is not None else '--arch'}")
        return _from_folder(folder, classes, random_init, overrides)
    path = Path(source)
    looks_like_file = path.suffix in (".safetensors", *checkpoint.TORCH_SUFFIXES) or path.exists()

    if looks_like_file:
        if weights is not None:
            raise UsageError("give either a checkpoint file as MODEL or --weights, not both")
        card = checkpoint.read_card(path) if path.suffix == ".safetensors" else None
        if card is not None:
            if arch and arch != card.arch:
                raise UsageError(f"--arch {arch} contradicts the checkpoint's own {card.arch}")
            module = build_from_card(card)
            checkpoint.load_weights(module, checkpoint.read_state_dict(path), path)
            return LoadedModel(module.eval(), _with_timm_meta(module, card).with_(source=str(path)))
        if arch is None:
            checkpoint.read_state_dict(path)  # report unreadable/unsafe files first
            raise UsageError(
                f"{path} is a plain state dict; say which architecture it is with --arch "
                "(e.g. --arch vit-tiny or --arch timm:vit_small_patch16_224)"
            )
        return _with_weights(arch, path, classes, overrides, use_ema)

    if random_init and weights is not None:
        raise UsageError("--random-init and --weights exclude each other")
    if weights is not None:
        return _with_weights(source, Path(weights), classes, overrides, use_ema)
    if random_init:
        module, card = new_card(source, overrides, classes, source="random-init")
        return LoadedModel(module.eval(), card)
    if source.startswith(timm_models.PREFIX):
        timm_models.check_name(source.removeprefix(timm_models.PREFIX))
        raise UsageError(
            f"{source}: timm weights are never downloaded; pass a local file with --weights "
            "(or --random-init for an untrained model)"
        )
    builtin = builtin_weights_path(source)
    if builtin is None:
        raise UsageError(
            f"{source} has no built-in weights; pass a checkpoint, --weights FILE, or "
            "--random-init (untrained, for benchmarking only)"
        )
    if overrides:
        raise UsageError(f"the built-in {source} is trained at a fixed configuration; "
                         f"options {sorted(overrides)} need --random-init or --weights")
    if not builtin.exists():
        raise InputError(
            f"built-in weights for {source} are missing ({builtin}); recreate them with "
            f"`vitedge train --model {source} --builtin`"
        )
    card = checkpoint.read_card(builtin)
    if card is None:
        raise InputError(f"{builtin}: built-in checkpoint has no model card")
    module = build_from_card(card)
    checkpoint.load_weights(module, checkpoint.read_state_dict(builtin), builtin)
    return LoadedModel(module.eval(), card.with_(source=f"builtin:{source}"))


def _with_timm_meta(module: torch.nn.Module, card: ModelCard) -> ModelCard:
    """A timm card written before vitedge recorded the family: probe the model once now, so
    the card that travels to the device carries it."""
    if not card.arch.startswith(timm_models.PREFIX) or timm_models.META_KEY in card.config:
        return card
    name = card.arch.removeprefix(timm_models.PREFIX)
    meta = timm_models.describe(module, name, card.preprocess, [])
    return card.with_(config={**card.config, timm_models.META_KEY: meta})


def _with_weights(
    arch: str, path: Path, classes: tuple[str, ...] | None, overrides: dict[str, Any], use_ema: bool = True
) -> LoadedModel:
    state, info = checkpoint.read_state_dict_info(path, use_ema)
    is_timm = arch.startswith(timm_models.PREFIX)
    name = arch.removeprefix(timm_models.PREFIX) if is_timm else None
    if "num_classes" not in overrides:
        n = len(classes) if classes else timm_models.infer_num_classes(state, name)
        if n is None and is_timm:
            n = timm_models.infer_num_classes({k.removeprefix("model."): v for k, v in state.items()}, name)
        if n is not None:
            overrides["num_classes"] = n
    module, card = new_card(arch, overrides, classes, source=str(path))
    if not is_timm:
        checkpoint.load_weights(module, state, path)
        return LoadedModel(module.eval(), card)
    state, prefix = checkpoint.fit_prefix(state, module)  # before timm's filter, which expects its own keys
    trained_at = timm_models.weights_input_size(state, module)
    adapted = timm_models.adapt_state_dict(state, module, drop_head=False)
    checkpoint.load_weights(module, adapted, path)
    weights = {
        "file": path.name,
        "entry": info["entry"],  # e.g. "state_dict_ema": the EMA weights of a training checkpoint
        "entries": info["entries"],
        "stripped_prefix": "".join(p for p in (info["stripped_prefix"], prefix) if p) or None,
        "input_size": trained_at,  # what a ViT-style checkpoint was trained at (from pos_embed)
        "resampled": timm_models.resampled(state, adapted),  # e.g. pos_embed to a new grid
    }
    meta = {**card.config[timm_models.META_KEY], "weights": weights}
    return LoadedModel(module.eval(), card.with_(config={**card.config, timm_models.META_KEY: meta}))


def _from_folder(folder: Path, classes: tuple[str, ...] | None, random_init: bool,
                 overrides: dict[str, Any]) -> LoadedModel:
    """A transformers or timm hub folder: architecture, weights, classes and preprocessing all
    from the folder's own files (vitedge.models.hf_folder)."""
    cfg = hf_folder.read_config(folder)
    if hf_folder.folder_kind(folder, cfg) == "timm":
        return _from_timm_folder(folder, classes, random_init, overrides)
    if overrides:
        raise UsageError(f"{folder} is a transformers model folder; options {sorted(overrides)} do not apply "
                         "(its config.json fixes them)")
    from vitedge.models.family import probe, recipe_for
    from vitedge.models.hf_preprocess import hf_preprocess
    from vitedge.quiet import quiet

    with quiet():  # transformers imports its model modules (and torchao) lazily: they log on import
        module, info = hf_folder.load_transformers(folder, cfg, random_init)
        spec, pre = hf_preprocess(folder, cfg["model_type"])
    # only transformers' from_config init was measured giving image-blind logits (models.untrained)
    signal = untrained.give_signal(module, spec) if random_init else None
    n = module.num_classes
    classes = classes or hf_folder.classes_from(cfg) or tuple(f"class_{i}" for i in range(n))
    if len(classes) != n:
        raise UsageError(f"{len(classes)} class names given but {folder} has {n} classes (config.json num_labels)")
    report = probe(module, spec.input_size)
    if report.error is not None or report.output_shape != (1, n):
        raise UsageError(f"{folder}: {info['class']} does not give (N, {n}) logits on a "
                         f"{spec.height}x{spec.width} image ({report.error or report.output_shape})")
    meta: dict[str, Any] = {
        "family": report.family, "family_reason": report.reason, "family_evidence": report.evidence,
        "input_size": list(spec.input_size), "native_input_size": list(spec.input_size),
        # the transformers graph is traced at the processor's size (a size-changing export of
        # their interpolate_pos_encoding path is not something vitedge has proven)
        "spatial_size": "fixed",
        "hf": {**info, "kind": "transformers", "folder": str(folder), "preprocess": pre},
    }
    if report.family == "unknown":
        meta["notes"] = list(recipe_for("unknown").notes)
    if signal:
        meta["random_init"] = signal
    config = {"hf_class": info["class"], "hf_config": module.model.config.to_dict(), timm_models.META_KEY: meta}
    card = ModelCard(arch=hf_folder.PREFIX + str(cfg["model_type"]), config=config, preprocess=spec,
                     classes=tuple(classes), source="random-init" if random_init else str(folder))
    return LoadedModel(module.eval(), card)


def _from_timm_folder(folder: Path, classes: tuple[str, ...] | None, random_init: bool,
                      overrides: dict[str, Any]) -> LoadedModel:
    """A timm hub folder: timm's own reader gives the architecture, model_args, label names and
    pretrained_cfg; the weights go through vitedge's safe loader like any timm checkpoint."""
    name, pcfg, model_args = hf_folder.timm_folder_config(folder)
    arch = timm_models.PREFIX + name
    classes = classes or hf_folder.timm_label_names(pcfg)
    overrides = {**model_args, **overrides}
    if "num_classes" not in overrides and pcfg.get("num_classes"):
        overrides["num_classes"] = int(pcfg["num_classes"])
    if random_init:
        module, card = new_card(arch, overrides, classes, source="random-init")
        loaded = LoadedModel(module.eval(), card)
    else:
        loaded = _with_weights(arch, hf_folder.weights_file(folder, hf_folder.TIMM_WEIGHTS), classes, overrides)
    data = timm_models._timm().data.resolve_data_config(
        timm_models._size_args(overrides.get("img_size")), pretrained_cfg=pcfg)
    spec = timm_models.to_preprocess(data, name)
    meta = {**loaded.card.config[timm_models.META_KEY],
            "hf": {"kind": "timm", "folder": str(folder),
                   "preprocess": {"from": {"processor": f"{hf_folder.CONFIG}: pretrained_cfg "
                                                        "(timm.data.resolve_data_config)"}},
                   "classes_from": "label_names" if hf_folder.timm_label_names(pcfg) else None}}
    card = loaded.card.with_(preprocess=spec, config={**loaded.card.config, timm_models.META_KEY: meta},
                             source="random-init" if random_init else str(folder))
    return LoadedModel(loaded.module, card)
