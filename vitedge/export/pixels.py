"""--embed-preprocessing: artifacts that take what a camera or decoder gives.

An embedded artifact's input is `pixels`: uint8, NHWC, RGB. Inside, it does what
`vitedge.calib.preprocess` does in Python (the same `resize_rule` / `resized_size` /
`crop_start` numbers): resize (aspect kept, shorter side to S; or exactly H x W), centre crop,
scale, mean/std, channel order, NCHW. Three ways in, one per artifact kind:

- ONNX (onnx-fp32, ort-int8): a small opset-18+ graph in front of the model (`onnx_pixel_graph`,
  merged with onnx.compose). Resize with antialias=1 and cubic_coeff_a=-0.5 is Pillow's filter;
  sizes come from the input's shape, so any image size works (batch of one size at a time).
- OpenVINO IR: PrePostProcessor with the same steps as OpenVINO ops (vitedge.targets.openvino).
  OpenVINO's ONNX reader ignores Resize's antialias (measured: up to 80 levels off on a
  downscaled photo), its own Interpolate `bicubic_pillow`/`bilinear_pillow` modes do not.
- Module-based mobile targets (litert): `PixelsModule` wraps the network for a fixed input of
  the model's size: the app resizes and crops with the platform's scaler (Android Bitmap,
  vImage), the artifact scales, normalises and transposes. Why fixed: LiteRT's converter has no
  antialiased resize; a plain bilinear downscale aliases and would not match the Python path.

Resized pixels are rounded and clipped to 0..255 inside, as Pillow's uint8 output is; what is
left is Pillow's own rounding between its two passes. Measured on scikit-image's photos against
the Python preprocessing (tests/test_embed_preprocessing.py): OpenVINO at most 5 of 255 levels,
mean 0.09-0.2; ONNX Runtime the same mean, but its antialiased linear filter strays up to 13
levels on ~1% of the pixels of an 8x downscale. The parity gate judges the result on the logits
(vitedge.verify.tolerances.PIXELS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vitedge.calib.preprocess import PreprocessSpec, resize_rule
from vitedge.runtimes.base import PIXELS_NAME

PIXELS = PIXELS_NAME  # the input name of every embedded artifact
MIN_OPSET = 18  # Resize's antialias attribute
# Resize modes per interpolation in ONNX; lanczos has no ONNX or OpenVINO equivalent.
ONNX_MODES = {"bicubic": "cubic", "bilinear": "linear", "nearest": "nearest"}


class EmbedError(ValueError):
    """A model/target this cannot embed for; the caller turns it into one usage line."""


def check_embeddable(spec: PreprocessSpec) -> None:
    if spec.interpolation not in ONNX_MODES:
        raise EmbedError(f"its preprocessing resizes with {spec.interpolation}, which no runtime graph "
                         f"reproduces (only {', '.join(ONNX_MODES)})")


def input_info(spec: PreprocessSpec, any_size: bool, interpolation: str, batch: int | str = "batch") -> dict[str, Any]:
    """The manifest's `input` for an embedded artifact: what an app feeds, in its own terms."""
    h, w = spec.input_size
    kind, size = resize_rule(spec)
    return {
        "name": PIXELS, "dtype": "uint8", "layout": "NHWC", "channels": "RGB",
        "shape": [batch, "height", "width", 3] if any_size else [batch, h, w, 3],
        "embedded_preprocessing": {
            "size": "any" if any_size else [h, w],
            "inside": (spec.describe() if any_size else
                       f"x*{spec.rescale:g}, subtract mean {list(spec.mean)}, divide by std {list(spec.std)}, "
                       f"{spec.channel_order}, NCHW"),
            "app_does": ("decode to RGB uint8 (any size at least "
                         f"{size[0] if kind == 'shorter' else f'{size[0]}x{size[1]}'} is best; smaller is upscaled)"
                         if any_size else f"decode to RGB uint8, then {_app_resize(spec)}"),
            "interpolation": interpolation,
        },
    }


def _app_resize(spec: PreprocessSpec) -> str:
    kind, size = resize_rule(spec)
    h, w = spec.input_size
    how = (f"resize ({spec.interpolation}) the shorter side to {size[0]}" if kind == "shorter"
           else f"resize ({spec.interpolation}) to exactly {size[0]}x{size[1]}")
    return f"{how} and centre-crop {h}x{w} ({spec.crop_rounding} offset)"


# -- ONNX --------------------------------------------------------------------------------------

def onnx_pixel_graph(spec: PreprocessSpec, opset: int, ir_version: int, out_name: str) -> Any:
    """uint8 (N, H, W, 3) of any H, W -> the model's float32 (N, 3, h, w) input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    check_embeddable(spec)
    h, w = spec.input_size
    kind, size = resize_rule(spec)

    def N(name: str) -> str:  # noqa: N802 - names apart from the model's own ("scale"s in a QDQ graph)
        return f"vitedge_pixels/{name}"

    def const(name: str, value: Any, dtype: Any) -> Any:
        return numpy_helper.from_array(np.asarray(value, dtype), name)

    scale = np.float32(spec.rescale)
    inits = [const(N("crop"), [h, w], np.int64), const(N("two"), 2.0, np.float32), const(N("axes"), [1, 2], np.int64),
             const(N("lo"), 0.0, np.float32), const(N("hi"), 255.0, np.float32),
             const(N("mean"), (np.asarray(spec.mean, np.float32) / scale).reshape(1, 3, 1, 1), np.float32),
             const(N("std"), (np.asarray(spec.std, np.float32) / scale).reshape(1, 3, 1, 1), np.float32)]
    n = helper.make_node
    # Resize and crop in NHWC, transpose the small crop: less to move, and ONNX Runtime's transpose
    # optimizer, pushing an early Transpose through Resize, broke its `sizes` on a QDQ graph.
    nodes = [n("Cast", [PIXELS], [N("f")], to=TensorProto.FLOAT)]
    if kind == "exact":
        inits.append(const(N("new_hw"), size, np.int64))
    else:  # integer arithmetic: the longer side is floor(S * long / short), as resized_size
        inits += [const(N("hw_idx"), [1, 2], np.int64), const(N("S"), size[0], np.int64)]
        nodes += [n("Shape", [PIXELS], [N("shape")]), n("Gather", [N("shape"), N("hw_idx")], [N("hw")]),
                  n("ReduceMin", [N("hw")], [N("short")], keepdims=0), n("Mul", [N("hw"), N("S")], [N("hw_s")]),
                  n("Div", [N("hw_s"), N("short")], [N("new_hw")])]
    nodes += [
        n("Resize", [N("f"), "", "", N("new_hw")], [N("resized")], mode=ONNX_MODES[spec.interpolation], antialias=1,
          axes=[1, 2], cubic_coeff_a=-0.5, coordinate_transformation_mode="half_pixel"),
        n("Sub", [N("new_hw"), N("crop")], [N("margin")]),
    ]
    if spec.crop_rounding == "floor":
        inits.append(const(N("two_i"), 2, np.int64))
        nodes.append(n("Div", [N("margin"), N("two_i")], [N("start")]))
    else:  # Round is half to even, like Python's round()
        nodes += [n("Cast", [N("margin")], [N("margin_f")], to=TensorProto.FLOAT), n("Div", [N("margin_f"), N("two")], [N("half")]),
                  n("Round", [N("half")], [N("start_f")]), n("Cast", [N("start_f")], [N("start")], to=TensorProto.INT64)]
    last = N("x_rgb") if spec.channel_order == "BGR" else out_name
    nodes += [n("Add", [N("start"), N("crop")], [N("end")]), n("Slice", [N("resized"), N("start"), N("end"), N("axes")], [N("cropped")]),
              n("Clip", [N("cropped"), N("lo"), N("hi")], [N("clipped")]), n("Round", [N("clipped")], [N("px_hwc")]),
              n("Transpose", [N("px_hwc")], [N("px")], perm=[0, 3, 1, 2]),
              n("Sub", [N("px"), N("mean")], [N("centred")]), n("Div", [N("centred"), N("std")], [last])]
    if spec.channel_order == "BGR":
        inits.append(const(N("bgr"), [2, 1, 0], np.int64))
        nodes.append(n("Gather", [last, N("bgr")], [out_name], axis=1))
    graph = helper.make_graph(nodes, "vitedge_pixels", [helper.make_tensor_value_info(
        PIXELS, TensorProto.UINT8, ["batch", "height", "width", 3])], [helper.make_tensor_value_info(
            out_name, TensorProto.FLOAT, ["batch", 3, h, w])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    onnx.checker.check_model(model)
    return model


def embed_onnx_file(path: Path, spec: PreprocessSpec) -> None:
    """Put the pixel graph in front of the ONNX model at `path` (rewritten in place, external
    data kept external)."""
    import onnx
    from onnx import compose

    model = onnx.load(str(path))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < MIN_OPSET:
        raise EmbedError(f"the ONNX export is opset {opset}; an antialiased resize needs opset {MIN_OPSET}+ "
                         f"(export with --opset {MIN_OPSET} or newer)")
    first = model.graph.input[0]
    elem = first.type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        raise EmbedError(f"the model's input is {onnx.TensorProto.DataType.Name(elem)}, not float32")
    pre = onnx_pixel_graph(spec, opset, model.ir_version, "vitedge_pixels_out")
    merged = compose.merge_models(pre, model, io_map=[("vitedge_pixels_out", first.name)],
                                  doc_string=model.doc_string, producer_name=model.producer_name)
    seen = {}  # merge_models lists a domain of both models twice
    for o in merged.opset_import:
        seen.setdefault(o.domain, o.version)
    del merged.opset_import[:]
    merged.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in seen.items())
    del merged.metadata_props[:]
    merged.metadata_props.extend(model.metadata_props)
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
        onnx.save(merged, str(path), save_as_external_data=True, location=data.name)
    else:
        onnx.save(merged, str(path))


# -- PyTorch (module-based targets) -------------------------------------------------------------

def pixels_module(module: Any, spec: PreprocessSpec) -> Any:
    """The network behind a fixed-size pixel input: uint8 (N, h, w, 3) -> logits."""
    import torch

    class PixelsModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = module
            scale = float(spec.rescale)
            mean = torch.tensor(spec.mean, dtype=torch.float32).reshape(1, 3, 1, 1) / scale
            std = torch.tensor(spec.std, dtype=torch.float32).reshape(1, 3, 1, 1) / scale
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)
            self.bgr = spec.channel_order == "BGR"

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            x = pixels.permute(0, 3, 1, 2).to(torch.float32)
            x = (x - self.mean) / self.std
            if self.bgr:
                x = x.flip(1)
            return self.net(x)

    return PixelsModule().eval()
