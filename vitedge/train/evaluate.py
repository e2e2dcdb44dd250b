"""Evaluate a PyTorch model on labelled images (top-1/top-5 + confusion matrix)."""

from __future__ import annotations

import numpy as np
import torch

from vitedge.calib.datasets import LabelledImages
from vitedge.calib.preprocess import PreprocessSpec
from vitedge.verify.metrics import Accuracy, accuracy


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, 3, H, W) float32 -> (N, C) float32 logits, in eval mode."""
    was_training = model.training
    model.eval()
    out = [model(torch.from_numpy(inputs[i : i + batch_size])).float().numpy()
           for i in range(0, len(inputs), batch_size)]
    model.train(was_training)
    return np.concatenate(out)


def evaluate(model: torch.nn.Module, data: LabelledImages, spec: PreprocessSpec,
             batch_size: int = 256) -> Accuracy:
    return accuracy(predict_logits(model, data.as_inputs(spec), batch_size), data.labels)
