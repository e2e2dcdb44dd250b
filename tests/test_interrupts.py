"""SIGINT/SIGTERM handling: deferral around fragile library calls, and no swallowing by wrappers.

In-process with real signals (os.kill on ourselves); the end-to-end cases, a real export killed
mid-run, are in test_bad_inputs.py."""

from __future__ import annotations

import os
import signal

import pytest

from vitedge import interrupts
from vitedge.errors import Interrupted
from vitedge.runtimes import sigstack


@pytest.fixture(autouse=True)
def default_handlers():
    # The suite may run with SIGINT ignored (nohup, a background CI job); start from the defaults.
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _kill_self(sig: int = signal.SIGINT) -> None:
    os.kill(os.getpid(), sig)


def test_signal_raises_interrupted_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="stopped by SIGTERM"), interrupts.installed():
        _kill_self(signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    assert signal.getsignal(signal.SIGTERM) is before


def test_first_signal_is_held_until_the_fragile_block_ends():
    finished = []
    with pytest.raises(Interrupted, match="SIGINT"), interrupts.installed():
        with interrupts.deferred():
            _kill_self()
            for _ in range(1000):
                pass
            finished.append("block ran to the end")
        finished.append("must not run: the held signal is raised when the block ends")
    assert finished == ["block ran to the end"]


def test_second_signal_raises_at_once_even_when_deferred():
    reached = []
    with pytest.raises(Interrupted), interrupts.installed(), interrupts.deferred():
        _kill_self()
        for _ in range(1000):
            pass
        reached.append("after first")
        _kill_self()
        for _ in range(1000):
            pass
        reached.append("must not run")
    assert reached == ["after first"]


def test_a_library_that_rewraps_the_interrupt_cannot_turn_it_into_a_failure():
    # What torch.export does: catch everything and raise its own error type.
    def library_call():
        try:
            _kill_self()
            for _ in range(1000):
                pass
        except BaseException as e:
            raise RuntimeError("Failed to export the model") from e

    with pytest.raises(Interrupted), interrupts.installed():
        try:
            library_call()
        except Exception:
            interrupts.check()  # what vitedge's own `except Exception` wrappers do first
            pytest.fail("the interrupt was swallowed")


def test_without_the_cli_nothing_is_installed():
    # Library use (an app embedding vitedge) keeps its own handlers; deferred() is a no-op.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # an app's own choice, which vitedge must keep
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with interrupts.deferred():
        pass
    interrupts.check()
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_an_ignored_signal_stays_ignored():
    # nohup / a background job: the parent ignores SIGINT, and so must we.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with interrupts.installed():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN  # still handled
        _kill_self(signal.SIGINT)
        for _ in range(1000):
            pass
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def _tiny_onnx(path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [16, 16], np.ones(256, np.float32))
    g = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["m"]), helper.make_node("Relu", ["m"], ["logits"])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 16])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.skipif(sigstack.current() is None, reason="sigaltstack is only inspectable on Linux/glibc")
def test_openvino_leaves_our_signal_stack_alone(tmp_path):
    # OpenVINO's CPU plugin swaps the thread's sigaltstack in compile_model and may unmap it later;
    # the next Ctrl-C then segfaults (exit 139; seen in CI after an OpenVINO test). The runner
    # must hand the thread back with the stack it had.
    import numpy as np
    import openvino as ov

    from vitedge.runtimes.openvino_runner import OpenVinoRunner

    model = _tiny_onnx(tmp_path / "tiny.onnx")
    before = sigstack.current()
    with sigstack.preserved():
        raw = ov.Core().compile_model(str(model), "CPU")
        swapped = sigstack.current() != before  # what unguarded OpenVINO does (documents the hazard)
        del raw
    assert sigstack.current() == before
    with OpenVinoRunner(model, threads=1) as r:
        np.testing.assert_array_equal(r.infer({"input": np.ones((2, 16), np.float32)})["logits"],
                                      np.full((2, 16), 16.0, np.float32))
        assert sigstack.current() == before
    assert sigstack.current() == before
    with interrupts.installed(), pytest.raises(Interrupted):
        _kill_self(signal.SIGTERM)
        for _ in range(1000):
            pass
    print(f"OpenVINO swapped the signal stack when unguarded: {swapped}")
