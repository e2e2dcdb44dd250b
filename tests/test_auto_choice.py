"""auto-cpu's decision on given measurements (no timing here): it picks what was measured
fastest among the candidates that passed, so INT8 wins only where its kernels pay."""

from __future__ import annotations

from vitedge.auto import auto_candidates, choose, explain_choice, explain_threads, fewer_threads
from vitedge.bench.latency import summarize

# p50 ms measured side by side (shapes of real runs: vit-tiny on an AVX-512 VNNI CPU, and the
# same candidates on an AVX2-only CPU where u8s8 int8 matmuls saturate and are emulated).
VNNI = {"onnx-fp32": 1.03, "ov-fp32": 1.10, "ov-fp16": 1.08, "ort-int8": 0.74, "ov-int8": 0.69,
        "inductor-int8": 0.81}
NO_VNNI = {"onnx-fp32": 1.65, "ov-fp32": 1.58, "ov-fp16": 1.61, "ort-int8": 2.10, "ov-int8": 1.92,
           "inductor-int8": 2.40}
PRECISION = {"onnx-fp32": "fp32", "ov-fp32": "fp32", "ov-fp16": "fp16", "ort-int8": "int8", "ov-int8": "int8",
             "inductor-int8": "int8"}


class _Report:
    def __init__(self, precision: str):
        self.precision = precision


def _reason(p50: dict[str, float]) -> tuple[str, str]:
    chosen = choose(p50)
    stats = {n: summarize([v] * 5, 1, 0) for n, v in p50.items()}
    return chosen, explain_choice(chosen, list(p50), stats, {n: _Report(PRECISION[n]) for n in p50})


def test_on_a_vnni_cpu_the_fastest_int8_artifact_wins():
    chosen, reason = _reason(VNNI)
    assert chosen == "ov-int8" and "INT8 pays" in reason


def test_without_vnni_int8_is_slower_and_fp32_is_chosen():
    chosen, reason = _reason(NO_VNNI)
    assert chosen == "ov-fp32" and "INT8 does not pay" in reason


def test_a_candidate_that_failed_parity_is_never_offered_to_the_choice():
    # choose() sees only passing candidates; the fastest measured artifact that failed its gate
    # is filtered before (export_auto), so removing it changes the pick.
    passing = {k: v for k, v in VNNI.items() if k != "ov-int8"}
    assert choose(passing) == "ort-int8"


def test_ties_break_by_name_so_the_pick_is_reproducible():
    assert choose({"b-target": 1.0, "a-target": 1.0}) == "a-target"


def test_thread_counts_tried_halve_down_to_one():
    assert fewer_threads(1) == [] and fewer_threads(2) == [1] and fewer_threads(8) == [4, 2, 1]
    assert fewer_threads(6) == [3, 1]


# p50 ms of the three fastest candidates re-timed on 2 and 1 threads (vit-tiny, 64 px, batch 1,
# this machine kind: a second thread's synchronisation costs more than it saves) and ViT-S/16
# at 224 px, where the work splits well.
SMALL = {("ov-int8 (transformer=False)", 2): 0.854, ("ov-int8 (transformer=False)", 1): 0.669,
         ("ort-int8", 2): 0.871, ("ort-int8", 1): 0.74}
LARGE = {("ov-int8", 2): 8.3, ("ov-int8", 1): 15.9, ("ort-int8", 2): 9.4, ("ort-int8", 1): 17.8}


def test_a_small_model_runs_on_fewer_threads_and_says_so():
    name, threads = choose(SMALL)
    assert (name, threads) == ("ov-int8 (transformer=False)", 1)
    text = explain_threads(name, threads, 2, SMALL)
    assert "fastest on 1 of 2 threads" in text and "max_threads=1" in text


def test_a_large_model_keeps_every_thread():
    name, threads = choose(LARGE)
    assert (name, threads) == ("ov-int8", 2)
    assert "is fastest on all 2" in explain_threads(name, threads, 2, LARGE)


def test_the_re_timing_names_a_changed_pick():
    text = explain_threads("ort-int8", 1, 2, SMALL, first="ov-int8 (transformer=False)")
    assert "ort-int8 (not ov-int8 (transformer=False)) runs fastest on 1 of 2 threads" in text


def test_a_thread_tie_goes_to_fewer_threads():
    assert choose({("a", 2): 1.0, ("a", 1): 1.0}) == ("a", 1)


def test_auto_cpu_considers_the_new_inductor_target_and_no_eager_torchao():
    names = {t.name for t in auto_candidates("auto-cpu")}
    assert "inductor-int8" in names
    assert not {"torchao-int8", "torchao-int8-wo"} & names


# -- which builds auto measures (no building here) -------------------------------------------------

def _card(family: str):  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    return SimpleNamespace(family=family)


def _request(**kw):  # type: ignore[no-untyped-def]
    from pathlib import Path

    from vitedge.request import ExportRequest

    return ExportRequest(target="auto-cpu", out=Path("unused"), calibration=object(), **kw)


def _bf16_variants() -> list[dict]:  # what this CPU adds: bf16 float parts where it has bf16
    from vitedge.targets.registry import get_target

    return [] if get_target("ov-bf16").unsupported() else [{"ov-float-precision": "bf16"}]


def test_a_vit_also_gets_nncf_default_model_type_as_a_candidate():
    from vitedge.auto import candidates_for

    cands, _ = candidates_for("auto-cpu", _request(), _card("vit"))
    variants = [c for c in cands if c.target == "ov-int8" and c.label != "ov-int8"]
    expected = _bf16_variants() + [{"ov-transformer": False}] + [{"ov-transformer": False, **v} for v in _bf16_variants()]
    assert [c.options for c in variants] == expected
    assert "ov-int8 (transformer=False)" in [c.label for c in variants]
    assert len({c.slot for c in cands}) == len(cands)  # each build has its own directory


def test_a_convnet_gets_no_duplicate_build_and_user_choices_are_kept():
    from vitedge.auto import candidates_for

    conv, _ = candidates_for("auto-cpu", _request(), _card("convnext"))
    # Its default already is NNCF's default model type: no second build of the same thing.
    assert [c.options for c in conv if c.target == "ov-int8"] == [{}] + _bf16_variants()
    # The user set an option a variant changes (by flag key): no variant overrides their setting.
    mine, _ = candidates_for("auto-cpu", _request(options={"ov-transformer": True}), _card("vit"))
    ov = [c for c in mine if c.target == "ov-int8"]
    assert [c.options for c in ov] == [{"ov-transformer": True, **v} for v in [{}] + _bf16_variants()]


def test_auto_builds_for_the_batch_it_measures_unless_told_otherwise():
    from dataclasses import replace

    from vitedge.auto import auto_export_config
    from vitedge.export.config import ExportConfig

    cfg, note = auto_export_config(_request())
    assert cfg.static_batch == 1 and "static batch of 1" in note
    given = _request(export=replace(ExportConfig(), static_batch=4))
    assert auto_export_config(given) == (given.export, None)
    dynamic = _request(export=replace(ExportConfig(), dynamic_size=True))
    assert auto_export_config(dynamic)[0].static_batch is None
