"""Every benchmark's ``--quick`` smoke run (issue 28): a change that breaks a benchmark
fails the suite.

Each run goes through the script's own ``main(argv)`` (what ``python bench/X.py`` calls)
and must return 0, print its table and write its report (``--out`` into ``tmp_path``)
with the figures a reader relies on present and finite and ``quick`` true: a crash or a
silently empty result fails. The scripts that need Ray (Ray Data: bucketing, ingest,
video) are marked ``ray`` and run on the session head; the others run in the tier without
Ray. No shared data is read: bucketing and ingest run on generated stand-ins (``FALLBACK:*``), music
and serve on tiny fixtures. Three scripts are smoke-run beside their applications'
tests instead (``ELSEWHERE``); the last test checks that every script of bench/ has one.
"""

from __future__ import annotations

import importlib
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT

if str(ROOT) not in sys.path:  # bench/ is a folder of scripts; bench.machine is shared
    sys.path.insert(0, str(ROOT))


def bench(name: str):
    return importlib.import_module(f"bench.{name}")


def figures(value: Any) -> list[float]:
    """Every number in a JSON value (booleans are not figures)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    items = value.values() if isinstance(value, dict) else value
    return [x for item in items for x in figures(item)]


def positive(*values: Any) -> None:
    """Measured rates: present, finite and above zero."""
    for value in values:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), value
        assert math.isfinite(value) and value > 0, value


def read_report(out: Path, dated: bool = True) -> dict[str, Any]:
    """The report at ``out``: a ``--quick`` one, every number in it finite (``json``
    writes NaN and Infinity, and reads them back), and when ``dated``, its date and machine."""
    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert all(math.isfinite(x) for x in figures(report))
    if dated:
        assert report["date"] and report["machine"]["cpu_count"] >= 1
    return report


# ---------------------------------------------------------------------------- without Ray


def test_rnn_dense_quick(tmp_path, capfd, torch_threads):
    out = tmp_path / "rnn_dense.json"
    assert bench("rnn_dense").main(["--quick", "--out", str(out)]) == 0
    assert "dense speedup" in capfd.readouterr().out
    report = read_report(out)
    rows = report["results"]
    assert [(r["cell"], r["padding"] <= 0.6) for r in rows] == [(c, True) for c in ("lstm", "gru") for _ in range(7)]
    for row in rows:
        positive(row["packed_s"], row["dense_s"], row["dense_speedup"])


def test_pipeline_quick(tmp_path, capfd, torch_threads):
    """Two gloo processes, every arm (rayseq pp=1, GPipe, 1F1B, wavefront at m x k and
    wider; torch's GPipe and 1F1B) on fixed and bucketed data, the header probe, and the
    translation model at pp=1, pp=2 1F1B and pp=2 wavefront."""
    out = tmp_path / "pipeline.json"
    assert bench("pipeline").main(["--quick", "--out", str(out)]) == 0
    printed = capfd.readouterr().out
    assert "dedicated-core estimate" in printed and "goal bucketed 1f1b_ge_1.3x_torch" in printed
    report = read_report(out)
    assert set(report["results"]) == {"fixed", "bucketed"}
    for result in report["results"].values():
        assert len(result["arms"]) == 9
        assert {"rayseq wavefront m=4 k=4", "rayseq wavefront m=2 k=4", "rayseq wavefront m=1 k=8"} <= set(
            result["arms"])
        assert result["arms"]["rayseq 1f1b"]["headers_per_step"] == 4  # stage 1 reads one per activation
        for name, arm in result["arms"].items():
            positive(arm["tokens_per_s"], arm["tokens_per_cpu_s"])
            if arm["pp"] == 2:
                assert 0 <= arm["bubble"] < 1 and 0 < arm["bubble_theory"] < 1, name
        positive(result["speedups"]["measured"]["gpipe_vs_pp1"], result["speedups"]["measured"]["1f1b_vs_torch"])
    assert {"1f1b", "wavefront"} == set(report["header_probe"])
    positive(*(p["headed_ms"] for p in report["header_probe"].values()))
    assert "header probe" in printed and "wavefront_m1_k8_ge_1.1x_torch" in printed
    seq2seq = report["seq2seq"]["arms"]
    assert list(seq2seq) == ["rayseq pp=1 m=1", "rayseq 1f1b", "rayseq wavefront m=2 k=4"]
    for arm in seq2seq.values():
        positive(arm["tokens_per_s"], arm["vs_pp1"])
    assert 0 <= seq2seq["rayseq wavefront m=2 k=4"]["bubble"] < 1 and "seq2seq (translation" in printed
    assert (tmp_path / "pipeline.png").stat().st_size > 1000


def test_music_quick(tiny_music, tmp_path, capfd, monkeypatch):
    """An untrained music checkpoint against generated chorales; ``--quick`` without
    ``--out`` writes nothing (it used to overwrite bench/results/music.json)."""
    from pipelines.apps.music.generate import write_chorales

    data = write_chorales(tmp_path / "chorales", size=16, seed=0)  # valid/: 4 pieces
    music = bench("music")
    monkeypatch.setattr(music, "ROOT", tmp_path / "repo")  # where the default report would go
    argv = [str(tiny_music), "--quick", "--data", str(data), "--reference", "valid"]
    assert music.main(argv) == 0
    assert not (tmp_path / "repo").exists()
    out = tmp_path / "music.json"
    assert music.main([*argv, "--out", str(out)]) == 0
    assert "from nothing" in capfd.readouterr().out
    report = read_report(out, dated=False)  # its own date and machine fields, strings
    assert report["steps"] == 32 and report["date"]
    assert set(report["rows"]) == {"bach (validation)", "primed", "from nothing"}
    for row in report["rows"].values():
        assert row["pieces"] == 4 and 0 <= row["real_or_generated_1nn"] <= 1
        assert 0 <= row["pitch_class_distance"] and len(row["in_range"]) == 4


def _run_folder(work: Path, name: str, checkpoint: Path, data: dict[str, Any], **sections: dict) -> None:
    """``work/name`` as ``rayseq train --output`` leaves it: the recipe (``config.yaml``,
    whose data the load is drawn from) beside a copy of the checkpoint, both with
    ``sections`` merged into their recipe."""
    run = work / name
    shutil.copytree(checkpoint, run / "checkpoint")
    recipe = yaml.safe_load((checkpoint / "config.yaml").read_text())
    for key, values in sections.items():
        recipe[key].update(values)
    (run / "checkpoint" / "config.yaml").write_text(yaml.safe_dump(recipe))
    recipe["data"].update(data)
    (run / "config.yaml").write_text(yaml.safe_dump(recipe))


def test_serve_quick_against_the_peer(tiny_checkpoint, tiny_translator, sentiment_dir, tmp_path, capfd):
    """bench/serve.py's peer arm (one uvicorn process, no Ray) on the tiny classifier and
    translator: checkpoints found, request bodies, load levels, server CPU, report and
    plot. The Serve arms start a local Ray each (they drop ``RAY_ADDRESS``): not here."""
    from pipelines.apps.translate.generate import write_translation

    work = tmp_path / "work"
    _run_folder(work, "demo_sentiment", tiny_checkpoint, {"root": str(sentiment_dir), "valid": "valid.txt"})
    pairs = write_translation(tmp_path / "pairs", size=40, seed=0)
    # Untrained, it decodes to the length cap: a short cap keeps beam 4 at 8 clients cheap.
    _run_folder(work, "demo_translation", tiny_translator, {"root": str(pairs), "valid": "valid"},
                decode={"max_length": 6})
    (ROOT / "runs").mkdir(exist_ok=True)  # serve.py logs each server to runs/bench_serve_<arm>.log
    out = tmp_path / "serve.json"
    assert bench("serve").main(["--quick", "--arms", "peer", "--work", str(work), "--out", str(out)]) == 0
    assert "cpu ms/req" in capfd.readouterr().out
    report = json.loads(out.read_text())
    assert report["settings"]["levels"] == [1, 8] and report["settings"]["seconds"] == 2.0  # --quick's
    rows = {(r["task"], r["concurrency"]): r for r in report["rows"]}
    assert set(rows) == {(task, c) for task in ("classify", "generate") for c in (1, 8)}
    for row in rows.values():
        assert row["arm"] == "peer" and row["ok"] > 0 and row["errors"] == 0, row
        positive(row["rps"], row["p50_ms"], row["p99_ms"], row["server_cpu_ms_per_request"])
    assert (tmp_path / "serve.png").stat().st_size > 1000


# ---------------------------------------------------------------------------- with Ray


@pytest.fixture
def data_context(ray_head):
    """The benchmarks set Ray Data options on this process's context: put them back."""
    import ray

    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars,
             context.print_on_execution_start)
    yield
    (context.execution_options.preserve_order, context.enable_progress_bars,
     context.print_on_execution_start) = saved


@pytest.mark.ray
def test_bucketing_quick(data_context, tmp_path, capfd, torch_threads):
    """No shared data: the generated stand-ins of SST-2, Multi30k sources and FSDD, each
    through its reader, featurizer and both batchings, then the timing arms."""
    import ray

    out = tmp_path / "bucketing.json"
    assert bench("bucketing").main(["--quick", "--data-root", str(tmp_path / "no-data"), "--out", str(out)]) == 0
    printed = capfd.readouterr().out
    assert "padding" in printed and "FALLBACK:fsdd" in printed and "used generated stand-ins" in printed
    assert ray.is_initialized()  # the session's head, joined and left running
    report = read_report(out)
    results = {r["dataset"]: r for r in report["results"]}
    assert list(results) == ["FALLBACK:sst2", "FALLBACK:m30k", "FALLBACK:fsdd"]
    for name, result in results.items():
        unit = result["unit"]
        assert unit == ("frames" if name == "FALLBACK:fsdd" else "tokens")
        assert result["examples"] >= 40 and result["num_labels"] >= 1  # number sentences: all "short"
        for arm in ("bucketed", "random"):
            assert result[arm]["batches"] >= 1 and 0 <= result[arm]["padding_fraction"] < 1
            positive(result[arm][f"{unit}_per_s"], result[arm][f"{unit}_per_cpu_s"])
        positive(result["speedup"], result["speedup_cpu"])
    assert (tmp_path / "bucketing.png").stat().st_size > 1000


@pytest.mark.ray
def test_ingest_quick(data_context, tmp_path, capfd):
    """Two small generated corpora (no Multi30k under the data root) through the
    translation application's ``prepare``, streamed, then iterated once as a worker does."""
    import ray

    out = tmp_path / "ingest.json"
    assert bench("ingest").main(["--quick", "--data-root", str(tmp_path / "no-data"), "--work", str(tmp_path / "work"),
                                 "--set", "batching.stream=true", "--out", str(out)]) == 0
    printed = capfd.readouterr().out
    assert "us/pair" in printed and "FALLBACK:numbers" in printed
    assert ray.is_initialized()  # the session's head, joined and left running
    report = read_report(out)
    assert [r["size"] for r in report["results"]] == [2000, 6000]
    for result in report["results"]:
        assert result["pairs"] == result["size"] and result["streamed"] is True
        assert set(result["stage_s"]) == {"read", "tokenizer", "featurize", "bucket", "valid"}
        assert result["iterate"]["pairs"] == result["size"] and result["iterate"]["batches"] == result["train_batches"]
        positive(result["wall_s"], result["us_per_pair"], result["driver_rss_peak_bytes"],
                 result["iterate"]["pairs_per_s"])
    assert report["goals"]["largest_pairs"] == 6000


@pytest.mark.ray
def test_video_quick(data_context, tmp_path, capfd, torch_threads, monkeypatch):
    """Ingest (PyAV loop vs. Ray Data on the session head) and the ablation's two
    ``rayseq train`` runs, which join the head through ``RAY_ADDRESS``."""
    import ray

    monkeypatch.chdir(ROOT)  # video.py works from the repository root
    out = tmp_path / "video.json"
    assert bench("video").main(["--quick", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    printed = capfd.readouterr().out
    assert "ray-data f/s" in printed and "bag_of_frames" in printed
    assert ray.is_initialized()  # not shut down under the session
    report = read_report(out, dated=False)  # each part has its own date and machine
    assert report["ingest"]["date"] and report["ablation"]["date"]
    workloads = report["ingest"]["workloads"]
    assert [w["clips"] for w in workloads] == [16, 4] and all(w["same_frames"] for w in workloads)
    for w in workloads:
        positive(w["frames"], w["speedup"], *(arm["frames_per_s"] for arm in w["arms"].values()))
    for arm in ("cnn_rnn", "bag_of_frames"):
        result = report["ablation"][arm]
        assert result["steps"] == 8 and 0 <= result["val_accuracy"] <= 1
        positive(result["val_loss"], result["wall_s"])
    assert (tmp_path / "video.png").stat().st_size > 1000


# ---------------------------------------------------------------------------- coverage


ELSEWHERE = {
    "decode.py": ("tests/test_translation_inference.py", "test_decode_benchmark_quick_run"),
    "music.py": ("tests/test_train_cli.py", "test_music_reports_note_accuracy_that_eval_reproduces_and_composes"),
    "text2text.py": ("tests/test_summarize.py", "test_text2text_benchmark_quick_run"),
}
"""Scripts whose ``--quick`` is also (decode, text2text: only) run by another test file."""
LIBRARIES = {"load.py", "machine.py", "serve_peer.py"}
"""bench/ modules that are not benchmarks (the load generator is tested in test_bench_serve.py)."""


def test_every_benchmark_has_a_smoke_test():
    source = Path(__file__).read_text()
    for script in sorted(p.name for p in (ROOT / "bench").glob("*.py")):
        if script in LIBRARIES:
            continue
        assert "--quick" in (ROOT / "bench" / script).read_text(), f"bench/{script} has no --quick"
        here = f"def test_{script.removesuffix('.py')}_quick" in source
        path, test = ELSEWHERE.get(script, (None, None))
        there = path is not None and f"def {test}(" in (ROOT / path).read_text()
        assert here or there, f"bench/{script}: no smoke test runs its --quick (add one to {Path(__file__).name})"
