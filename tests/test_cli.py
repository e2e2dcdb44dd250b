"""The `vitedge` command line: listing, inspecting, evaluating, and its error policy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vitedge.cli.main import main


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_models_lists_the_registry(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    for name in ("vit-tiny", "convnext-zepto", "vit-b16", "convnextv2-tiny", "timm:NAME"):
        assert name in out


def test_inspect_prints_the_seed_shapes(capsys):
    code, out, _ = run(capsys, "inspect", "vit-tiny", "--batch", "2")
    assert code == 0
    assert "2,822,602" in out
    assert "(2, 16, 192)" in out and "(2, 17, 192)" in out and "(2, 192)" in out and "(2, 10)" in out


def test_eval_builtin_reports_accuracy(capsys):
    code, out, _ = run(capsys, "eval", "convnext-zepto", "--eval-n", "200")
    assert code == 0
    assert "top-1" in out and "most often mistaken for" in out


@pytest.mark.parametrize("args, code, needle", [
    (["inspect", "vit-tinny"], 2, "Did you mean vit-tiny"),
    (["inspect", "vit-s16"], 2, "--random-init"),
    (["inspect", "vit-tiny", "--random-init", "--img-size", "70"], 2, "not divisible by patch size"),
    (["eval", "missing.safetensors"], 3, "missing.safetensors: no such file"),
    (["train", "--epochs", "0", "--out", "x.safetensors"], 2, "--epochs must be >= 1"),
    (["inspect"], 2, "Missing argument"),
])
def test_errors_are_one_line_with_the_documented_exit_code(capsys, args, code, needle):
    got, out, err = run(capsys, *args)
    assert got == code
    assert needle in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback():
    proc = subprocess.run([sys.executable, "-m", "vitedge", "--debug", "inspect", "vit-tinny"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
