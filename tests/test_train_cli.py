"""The CLI end to end on a real local Ray: train, resume, eval, errors, ray job submit."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, last_json_line, read_predictions

pytestmark = pytest.mark.ray

SMALL = [
    "data.generate.size=400", "train.max_steps=30", "train.log_every=10", "train.eval_every=15",
    "train.warmup_steps=5", "model.hidden_size=16", "model.embed_dim=16", "tokenizer.vocab_size=200",
    "parallel.microbatches=2",
]


def rayseq(*args: str, timeout: int = 420) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )


def rayseq_together(*commands: list[str], timeout: int = 420) -> list[subprocess.CompletedProcess]:
    """Several ``rayseq`` commands at once: a tiny run is mostly start-up (imports, Ray
    connect, data preparation, worker start), which overlaps well on the shared head."""
    runs = [subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for args in commands]
    done = []
    for run in runs:
        stdout, stderr = run.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr))
    return done


def sets(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


@pytest.fixture(scope="module")
def demo_runs(ray_head, tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """The sentiment, translation, named-entity, music, speech synthesis and conditional
    generation demos at test scale, trained at once (the tagger, the music, the speech
    model and the generator as 2-stage pipelines: the CRF, the voice heads, the post-net,
    the output layer on the second stage)."""
    work = tmp_path_factory.mktemp("run")
    commands = {"demo": ["train", "recipes/demo_sentiment.yaml", *sets(*SMALL)],
                "translation": ["train", "recipes/demo_translation.yaml", *sets(*TRANSLATION_SMALL)],
                "tagger": ["train", "recipes/demo_ner.yaml", *sets(*TAGGER_SMALL)],
                "music": ["train", "recipes/demo_music.yaml", *sets(*MUSIC_SMALL)],
                "tts": ["train", "recipes/demo_tts.yaml", *sets(*TTS_SMALL)],
                "generate": ["train", "recipes/demo_generate.yaml", *sets(*GENERATE_SMALL)]}
    # Six runs share two cores: ~4 min on a quiet machine, 6.5-8.5 min beside a training
    # job; the timeout only guards against a hang.
    done = rayseq_together(*([*args, "--output", str(work / name)] for name, args in commands.items()),
                           timeout=900)
    return {name: (work / name, run) for name, run in zip(commands, done)}


@pytest.fixture(scope="module")
def trained_run(demo_runs) -> tuple[Path, dict, str]:
    out, done = demo_runs["demo"]
    assert done.returncode == 0, done.stderr[-3000:]
    return out, last_json_line(done.stdout), done.stdout


def test_train_reports_contract_figures_and_writes_run_folder(trained_run):
    out, summary, stdout = trained_run
    for key in ("steps", "train_loss", "val_accuracy", "tokens_per_s", "padding_fraction", "checkpoint"):
        assert key in summary, key
    assert summary["steps"] == 30
    assert summary["tokens_per_s"] > 0 and 0 <= summary["padding_fraction"] < 0.2
    checkpoint = Path(summary["checkpoint"])
    assert checkpoint == out / "checkpoint"
    assert {"config.yaml", "model.pt", "tokenizer.json", "meta.json"} <= {p.name for p in checkpoint.iterdir()}
    assert json.loads((checkpoint / "meta.json").read_text())["labels"] == ["negative", "positive"]
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in history] == [10, 15, 20, 30]
    assert (out / "curves.png").stat().st_size > 1000
    assert "step 10/30 | loss" in stdout and "tok/s | eta" in stdout  # progress a person can follow
    assert "recipe recipes/demo_sentiment.yaml resolved to:" in stdout
    # TensorBoard: the same history, read back with TensorBoard's own reader
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert summary["tensorboard"] == str(out / "tensorboard")
    assert f"tensorboard --logdir {out / 'tensorboard'}" in stdout
    events = EventAccumulator(summary["tensorboard"], size_guidance={"scalars": 0})
    events.Reload()
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("train/loss")] == [
        (e["step"], round(e["train_loss"], 4)) for e in history]
    assert [e.step for e in events.Scalars("val/accuracy")] == [e["step"] for e in history if "val_accuracy" in e]
    assert {"train/lr", "train/tokens_per_s", "data/padding_fraction"} <= set(events.Tags()["scalars"])


def test_eval_scores_the_checkpoint(trained_run, tmp_path):
    out, summary, _ = trained_run
    valid = out / "data" / "valid.txt"
    done = rayseq("eval", summary["checkpoint"], "--data", str(valid), "--predictions", str(tmp_path / "p.jsonl"))
    assert done.returncode == 0, done.stderr[-3000:]
    result = last_json_line(done.stdout)
    assert result["examples"] == 100
    assert result["accuracy"] == pytest.approx(summary["val_accuracy"], abs=1e-3)
    rows = read_predictions(result)  # one per line of the file, in its order, with its label
    assert [r["origin"] for r in rows] == [f"{valid}:{i}" for i in range(1, 101)]
    assert [r["label"] for r in rows] == [line.split(" ", 1)[0] for line in valid.read_text().splitlines()]


@pytest.fixture(scope="module")
def pp2_run(trained_run, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The sentiment demo at pp=2 under 1F1B, its timeline recorded. (The wavefront runs
    through Ray Train in the seq2seq test below; both schedules of every model are proven
    against one process in tests/test_pipeline_equivalence.py.)"""
    out = tmp_path_factory.mktemp("pp2") / "1f1b"
    done = rayseq("train", "recipes/demo_sentiment.yaml",
                  *sets(*SMALL, "parallel.pp=2", "parallel.timeline=true", "parallel.schedule=1f1b"),
                  "--output", str(out))
    return out, done


def test_pipeline_parallel_run_reports_the_same_train_loss(trained_run, pp2_run):
    """pp=2 (two Ray Train workers, one stage each, dropout on) trains the same model as
    pp=1: same train_loss, and its merged checkpoint serves the same predictions."""
    _, reference, _ = trained_run
    out, done = pp2_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stage plan (2 stages, 1f1b, 2 micro-batches):" in done.stdout
    summary = last_json_line(done.stdout)
    assert summary["steps"] == reference["steps"]
    assert summary["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-5)
    assert summary["val_accuracy"] == pytest.approx(reference["val_accuracy"], abs=1e-9)
    assert 0 < summary["bubble_fraction"] < 1 and summary["bubble_theory"] == pytest.approx(1 / 3, abs=1e-3)
    trace = json.loads((out / "timeline.json").read_text())["traceEvents"]
    assert {e["tid"] for e in trace if e["ph"] == "X"} == {0, 1}
    assert (out / "timeline.png").stat().st_size > 1000
    from pipelines.apps.text_classify.predictor import TextClassifier
    from pipelines.checkpoint import load_inference

    texts = ["the acting was not dull", "the plot was awful"]
    one, two = (TextClassifier(load_inference(run["checkpoint"])) for run in (reference, summary))
    assert abs(one.probabilities(one.rows(texts)) - two.probabilities(two.rows(texts))).max() < 1e-5


def test_bad_record_names_file_and_line(ray_head, tmp_path):
    (tmp_path / "train.txt").write_text("positive a good film\nnegative\npositive fine\n")
    (tmp_path / "valid.txt").write_text("positive good\n")
    done = rayseq("train", "recipes/demo_sentiment.yaml", *sets("data.generate=null", f"data.root={tmp_path}"),
                  "--output", str(tmp_path / "run"))
    assert done.returncode == 2
    assert f"{tmp_path}/train.txt:2: empty text" in done.stderr.strip().splitlines()[-1]


KILLED = (*SMALL, "parallel.pp=2", "train.ema_decay=0.9", "train.eval_every=20", "train.log_every=20")
"""The sentiment demo at pp=2 with a parameter average (``train.ema_decay``)."""


@pytest.fixture(scope="module")
def killed_run(ray_head, tmp_path_factory) -> tuple[Path, tuple[str, ...], subprocess.CompletedProcess]:
    """A pp=2 run of 200 steps with a parameter average whose second pipeline worker is
    killed (SIGKILL) once Ray Train has registered its first checkpoint: its folder, its
    ``rayseq`` arguments (less ``max_steps``) and the finished process. One run serves the
    restart test and the parameter-average test (which resumes it once more), each of
    which trained a run of its own before."""
    import signal
    import time

    from ray.util.state import list_actors, list_jobs

    out = tmp_path_factory.mktemp("killed") / "fault"
    args = ("train", "recipes/demo_sentiment.yaml", "--output", str(out))
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args, *sets(*KILLED, "train.max_steps=200")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        # A checkpoint counts once Ray Train has registered it (its snapshot file), not
        # when its folder appears.
        while not (out / "train" / "checkpoint_manager_snapshot.json").exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() < deadline, "no checkpoint was registered"
            time.sleep(0.5)
        # This run's workers only: the other shard of the Ray tier may be training on the head too.
        job = next(j.job_id for j in list_jobs() if j.driver_info and int(j.driver_info.pid) == proc.pid)
        workers = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE"),
                                       ("job_id", "=", job)])
        assert len(workers) == 2
        os.kill(workers[-1].pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=420)
    finally:
        if proc.poll() is None:
            proc.kill()
    return out, args, subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_killed_worker_restarts_from_the_latest_checkpoint(killed_run):
    """A pipeline worker dies mid-run (SIGKILL); Ray Train restarts the worker group
    (FailureConfig), every stage reloads its shard, and the step count continues."""
    _, _, done = killed_run
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = [line for line in done.stdout.splitlines() if "resumed from checkpoint at step" in line]
    assert resumed and int(resumed[0].rsplit(" ", 1)[1]) >= 20, done.stdout[-4000:]
    assert last_json_line(done.stdout)["steps"] == 200


def test_a_parameter_average_run_exports_the_average_and_resumes_it(killed_run):
    """``train.ema_decay`` through Ray Train at pp=2: each stage's shard holds its average,
    the raw weights sit beside the optimizer state, the export is the average, and a
    resumed run carries the average's update count on (across the worker restart of
    ``killed_run`` too: the count is the run's step count)."""
    import torch

    out, args, done = killed_run
    assert done.returncode == 0, done.stderr[-3000:]
    exported = torch.load(out / "checkpoint" / "model.pt", weights_only=True)
    [last] = [p for p in sorted((out / "train").glob("checkpoint_*")) if (p / "optim.stage1.pt").exists()][-1:]
    shards, raw = {}, {}
    for stage in (0, 1):
        shards.update(torch.load(last / f"model.stage{stage}.pt", weights_only=True))
        optim = torch.load(last / f"optim.stage{stage}.pt", weights_only=True)
        assert optim["average_updates"] == 200
        raw.update(optim["raw_model"])
    assert set(exported) == set(raw) and all(torch.equal(exported[k], shards[k]) for k in exported)
    assert any(not torch.equal(exported[k], raw[k]) for k in exported)  # the average, not the last step
    # A rerun on the same output resumes from its latest checkpoint and continues the step
    # count (and the history), whatever the recipe's max_steps was before.
    done = rayseq(*args, *sets(*KILLED, "train.max_steps=210"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from checkpoint at step 200" in done.stdout
    assert last_json_line(done.stdout)["steps"] == 210
    history = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert history[-2:] == [200, 210] and history.count(200) == 1
    latest = sorted(p for p in (out / "train").glob("checkpoint_*") if p.is_dir())[-1]  # names are timestamps
    assert torch.load(latest / "optim.stage0.pt", weights_only=True)["average_updates"] == 210


MUSIC_SMALL = [
    "data.generate.size=24", "train.max_steps=30", "train.log_every=10", "train.eval_every=15",
    "parallel.pp=2", "parallel.microbatches=2",
]
GENERATE_SMALL = ["data.generate.size=400", "train.max_steps=20", "train.log_every=10", "train.eval_every=10",
                  "parallel.pp=2", "parallel.microbatches=2", "generation.num_samples=10"]
TTS_SMALL = ["train.max_steps=20", "train.log_every=10", "train.eval_every=10", "parallel.pp=2",
             "parallel.microbatches=2"]
TAGGER_SMALL = [
    "data.generate.size=300", "train.max_steps=30", "train.log_every=10", "train.eval_every=15",
    "train.warmup_steps=5", "model.hidden_size=16", "model.embed_dim=16", "parallel.pp=2",
    "parallel.microbatches=2",
]
TRANSLATION_SMALL = [
    "data.generate.size=400", "train.max_steps=20", "train.log_every=10", "train.eval_every=10",
    "train.warmup_steps=5", "model.hidden_size=16", "model.embed_dim=16", "tokenizer.vocab_size=200",
    "parallel.microbatches=2", "decode.beam_size=2", "decode.max_length=24",
]


@pytest.fixture(scope="module")
def translation_run(demo_runs) -> tuple[Path, dict]:
    out, done = demo_runs["translation"]
    assert done.returncode == 0, done.stderr[-3000:]
    return out, last_json_line(done.stdout)


def test_seq2seq_train_reports_translation_scores_that_eval_reproduces(translation_run):
    out, summary = translation_run
    for key in ("train_loss", "val_token_accuracy", "val_perplexity", "val_bleu", "val_chrf", "val_bleu_tok_lc"):
        assert key in summary, key
    checkpoint = Path(summary["checkpoint"])
    assert {"config.yaml", "model.pt", "tokenizer.json", "meta.json"} <= {p.name for p in checkpoint.iterdir()}
    done = rayseq("eval", str(checkpoint), "--data", str(out / "data" / "valid"), "--format", "parallel",
                  "--predictions", str(out / "eval" / "valid.jsonl"))
    assert done.returncode == 0, done.stderr[-3000:]
    scores = last_json_line(done.stdout)
    assert scores["examples"] == 100
    assert (scores["bleu"], scores["chrf"]) == (summary["val_bleu"], summary["val_chrf"])
    rows = read_predictions(scores)  # the hypotheses BLEU scored, beside their references, in order
    assert [r["reference"] for r in rows] == (out / "data" / "valid.de").read_text().splitlines()
    assert all(isinstance(r["hypothesis"], str) for r in rows)


def test_seq2seq_pipeline_parallel_run_reports_the_same_train_loss(translation_run, tmp_path):
    """Encoder and decoder on two Ray Train workers (dropout on), the decoder streaming
    over target chunks (the wavefront), train the same model. (The seq2seq 1F1B and GPipe
    runs are proven in tests/test_pipeline_equivalence.py; through Ray Train the tagger,
    music, speech synthesis and generator runs of ``demo_runs`` are 1F1B at pp=2.)"""
    _, reference = translation_run
    done = rayseq("train", "recipes/demo_translation.yaml",
                  *sets(*TRANSLATION_SMALL, "parallel.pp=2", "parallel.schedule=wavefront"),
                  "--output", str(tmp_path / "pp2"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stage plan (2 stages, wavefront, 2 micro-batches):" in done.stdout
    summary = last_json_line(done.stdout)
    assert summary["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-5)
    assert summary["val_token_accuracy"] == pytest.approx(reference["val_token_accuracy"], abs=1e-9)
    assert summary["val_chrf"] == reference["val_chrf"]


def test_tagger_reports_entity_f1_that_eval_reproduces(demo_runs, tmp_path):
    """The tagger trains as 2 stages, reports entity F1 on validation, and ``rayseq eval``
    on the same file gets the same F1 with per-type figures and each sentence's tags."""
    out, done = demo_runs["tagger"]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stage plan (2 stages, 1f1b, 2 micro-batches):" in done.stdout
    summary = last_json_line(done.stdout)
    assert summary["steps"] == 30 and summary["val_examples"] == 75
    assert {"val_f1", "val_precision", "val_recall", "val_tag_accuracy"} <= set(summary)
    checkpoint = Path(summary["checkpoint"])
    assert {"vocab.json", "model.pt", "meta.json"} <= {p.name for p in checkpoint.iterdir()}
    valid = out / "data" / "valid.txt"
    evaluated = rayseq("eval", str(checkpoint), "--data", str(valid), "--predictions", str(tmp_path / "p.jsonl"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = last_json_line(evaluated.stdout)
    assert result["examples"] == 75 and result["f1"] == pytest.approx(summary["val_f1"], abs=0.01)
    assert set(result["per_type"]) <= {"PER", "LOC", "ORG", "MISC"} and result["gold_entities"] > 75
    rows = read_predictions(result)
    assert [len(r["tokens"]) == len(r["gold"]) == len(r["predicted"]) for r in rows] == [True] * 75
    assert rows[0]["origin"] == f"{valid}:3"  # after the -DOCSTART- line and its blank
    assert all(t == "O" or t[:2] in ("I-", "B-") for r in rows for t in r["predicted"])  # answers in iob1


def test_music_reports_note_accuracy_that_eval_reproduces_and_composes(demo_runs, tmp_path):
    """The music model trains as 2 stages and validates under the book's protocol;
    ``rayseq eval`` on the same folder gets the same figures (and whole-piece ones),
    ``rayseq compose`` writes the same MIDI twice for one seed, and the music benchmark's
    quick mode scores what it samples."""
    out, done = demo_runs["music"]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stage plan (2 stages, 1f1b, 2 micro-batches):" in done.stdout
    summary = last_json_line(done.stdout)
    assert summary["steps"] == 30 and {"val_loss", "val_accuracy", "val_notes"} <= set(summary)
    checkpoint = Path(summary["checkpoint"])
    evaluated = rayseq("eval", str(checkpoint), "--data", str(out / "data" / "valid"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = last_json_line(evaluated.stdout)
    assert result["accuracy"] == pytest.approx(summary["val_accuracy"], abs=1e-6)
    assert result["loss"] == pytest.approx(summary["val_loss"], rel=1e-5)
    assert result["notes"] == summary["val_notes"] == result["examples"] * 131 and result["pieces"] == 6
    assert 0 < result["whole"]["accuracy"] <= 1 and result["whole"]["examples"] == 6
    primer = sorted((out / "data" / "valid").iterdir())[0]
    for name in ("a", "b"):
        composed = rayseq("compose", str(checkpoint), "--primer", str(primer), "--steps", "32", "--seed", "4",
                          "--out", str(tmp_path / f"{name}.mid"))
        assert composed.returncode == 0, composed.stderr[-3000:]
    assert (tmp_path / "a.mid").read_bytes() == (tmp_path / "b.mid").read_bytes()
    bench = subprocess.run([sys.executable, "bench/music.py", str(checkpoint), "--quick", "--data", str(out / "data"),
                            "--reference", "valid", "--out", str(tmp_path / "music.json")],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bench.returncode == 0, bench.stderr[-3000:]
    rows = json.loads((tmp_path / "music.json").read_text())["rows"]
    assert set(rows) == {"bach (validation)", "primed", "from nothing"}
    assert rows["primed"]["pieces"] == 6 and rows["primed"]["steps"] == 6 * 32
    assert 0.0 <= rows["from nothing"]["real_or_generated_1nn"] <= 1.0


def test_speech_synthesis_trains_evaluates_and_says_words(demo_runs, tiny_audio_classifier, tmp_path):
    """The speech model trains as 2 stages on generated recordings; ``rayseq eval`` says
    every (word, speaker) pair of the validation takes twice, has the word judge (an
    audio classifier) hear them and writes the WAVs; a judge that is not an audio
    classifier is refused by name; ``rayseq synthesize`` gives the same WAV for a seed."""
    import soundfile

    out, done = demo_runs["tts"]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stage plan (2 stages, 1f1b, 2 micro-batches):" in done.stdout
    summary = last_json_line(done.stdout)
    assert summary["steps"] == 20 and {"val_loss", "val_mse", "val_stop_accuracy", "val_frames"} <= set(summary)
    checkpoint = Path(summary["checkpoint"])
    recordings = out / "data" / "recordings"
    evaluated = rayseq("eval", str(checkpoint), "--data", str(recordings), "--set", "data.audio.valid_takes=8-9",
                       "--set", f"synthesis.word_classifier={tiny_audio_classifier}",
                       "--predictions", str(tmp_path / "said.jsonl"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = last_json_line(evaluated.stdout)
    assert result["pairs_scored"] == 30 and result["seeds"] == 2 and result["examples"] == 60
    assert 0.0 <= result["intelligibility"] <= 1.0 and result["speaker_accuracy"] is None and result["mcd"] > 0
    assert result["judges"] == {"word_classifier": str(tiny_audio_classifier), "speaker_classifier": None}
    assert set(result["pairs"]) == {f"{d}/s{s}" for d in range(10) for s in range(3)}
    assert result["reference"]["recordings"] == 60 and result["reference"]["vocoded"]["mcd"] > 0
    said = [json.loads(line) for line in (tmp_path / "said.jsonl").read_text().splitlines()]
    assert len(said) == 60 and {"word", "speaker", "seed", "wav", "heard_word", "mcd"} <= set(said[0])
    assert sum(r["heard_word"] == r["word"] for r in said) / 60 == pytest.approx(result["intelligibility"])
    assert soundfile.info(said[0]["wav"]).samplerate == 8000
    refused = rayseq("eval", str(checkpoint), "--data", str(recordings), "--set", "data.audio.valid_takes=8-9",
                     "--set", f"synthesis.word_classifier={checkpoint}")
    assert refused.returncode != 0 and "must be an audio classifier" in refused.stderr
    for name in ("a", "b"):
        said_once = rayseq("synthesize", str(checkpoint), "4 1 7", "--speaker", "s1", "--seed", "3",
                           "--out", str(tmp_path / f"{name}.wav"))
        assert said_once.returncode == 0, said_once.stderr[-3000:]
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()


def test_conditional_generator_trains_evaluates_and_samples(demo_runs, tiny_checkpoint, tiny_generator,
                                                           tiny_unconditioned_lm, sentiment_dir, tmp_path):
    """The generator trains as 2 stages on generated reviews (the validation perplexity and
    sample diversity in its summary); ``rayseq eval`` judges samples with a sentiment
    classifier and scores them under an unconditioned language model; judges of the wrong
    kind are refused by name; ``rayseq sample`` is seeded."""
    out, done = demo_runs["generate"]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stage plan (2 stages, 1f1b, 2 micro-batches):" in done.stdout
    summary = last_json_line(done.stdout)
    assert summary["steps"] == 20 and {"val_perplexity", "val_distinct_2", "val_self_bleu"} <= set(summary)
    checkpoint = Path(summary["checkpoint"])
    assert json.loads((checkpoint / "meta.json").read_text())["conditions"] == ["negative", "positive"]
    assert summary["val_perplexity"] == pytest.approx(math.exp(summary["val_loss"]), rel=1e-3)

    valid = sentiment_dir / "valid.txt"
    judged = ["--set", f"generation.classifier={tiny_checkpoint}",
              "--set", f"generation.language_model={tiny_unconditioned_lm}"]
    evaluated = rayseq("eval", str(tiny_generator), "--data", str(valid), *judged,
                       "--predictions", str(tmp_path / "samples.jsonl"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = last_json_line(evaluated.stdout)
    assert result["examples"] == 40 and result["validation_texts"] == 100  # 20 a condition; 400 // 4 reviews
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [s["condition"] for s in samples] == ["negative"] * 20 + ["positive"] * 20
    agree = sum(s["judged"] == s["condition"] for s in samples) / 40
    assert result["condition_accuracy"] == pytest.approx(agree)
    assert 1 < result["perplexity"] < result["lm_perplexity"] * 1.5 and result["sample_perplexity"] > 1
    assert 0 < result["distinct_2"] <= 1 and 0 <= result["self_bleu"] <= 100
    assert set(result["greedy"]) == set(result["beam"]) == {"negative", "positive"}
    for role, path, message in (("classifier", tiny_generator, "must be a text classifier"),
                                ("language_model", tiny_generator, "must be an unconditioned language model")):
        refused = rayseq("eval", str(tiny_generator), "--data", str(valid), "--set", f"generation.{role}={path}")
        assert refused.returncode != 0 and message in refused.stderr
    drawn = [rayseq("sample", str(checkpoint), "--condition", "positive", "--num-samples", "2", "--seed", "4")
             for _ in range(2)]
    assert drawn[0].returncode == 0, drawn[0].stderr[-3000:]
    assert last_json_line(drawn[0].stdout) == last_json_line(drawn[1].stdout)


RAY_NOISE = ("pid=", "core_worker.cc", "RayDeprecationWarning", "Progress bars disabled", "Requesting resources",
             "Checkpoint successfully created", "Setting up process group", "Started training worker group",
             "Progress will be logged", "Running Dataset", "graceful_shutdown")
"""What Ray printed into every run before the quiet console (issue 27's transcripts)."""


def test_the_console_shows_rayseq_lines_not_rays(demo_runs):
    for name, (_, run) in demo_runs.items():
        said = run.stdout + run.stderr
        assert run.returncode == 0, (name, run.stderr[-2000:])
        assert not [n for n in RAY_NOISE if n in said], (name, [line for line in said.splitlines()
                                                                 if any(n in line for n in RAY_NOISE)][:10])
        for stage in ("joined the Ray cluster at", "preparing data with Ray Data", "training: ", "checkpoint: ",
                      "tensorboard: "):
            assert stage in said, (name, stage)
        assert "step " in run.stdout and " | loss " in run.stdout  # the workers' step lines, without a prefix
