"""Audio end to end through the CLI on a real local Ray: the spoken-digit classifier and
speech-to-text recipes trained on synthetic FSDD-style recordings the tests generate
(``pipelines.media.audio.synthetic``), then ``rayseq eval`` reproducing their figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import last_json_line, read_predictions
from test_train_cli import rayseq, sets

pytestmark = pytest.mark.ray

SMALL_AUDIO = ["data.audio.n_mels=24", "model.embed_dim=32", "model.hidden_size=32", "model.frontend_channels=8",
               "model.spec_freq_width=4",
               "train.log_every=20", "train.warmup_steps=10", "parallel.threads_per_worker=1"]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    from pipelines.media.audio.synthetic import write_synthetic_recordings

    return write_synthetic_recordings(tmp_path_factory.mktemp("synthetic") / "recordings", speakers=3, takes=range(10))


@pytest.fixture(scope="module")
def digits_run(ray_head, recordings) -> tuple[Path, dict]:
    out = recordings.parent / "digits-run"
    done = rayseq("train", "recipes/fsdd_digits.yaml", *sets(
        *SMALL_AUDIO, f"data.root={recordings.parent}", "data.audio.valid_takes=8-9",
        "train.max_steps=120", "train.eval_every=60", "batching.max_batch_size=32",
        # The recipe's parameter average and truncation copies are for its 4,000 steps on
        # FSDD: 120 steps with them on end at 0.68 validation accuracy on these synthetic
        # digits. (Copies: tests/test_audio_perturb.py; the average: tests/test_averaging.py.)
        "train.ema_decay=0", "data.audio.tail_cut_copies=0",
    ), "--output", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, last_json_line(done.stdout)


def test_digit_classifier_learns_synthetic_digits(digits_run):
    out, summary = digits_run
    assert summary["steps"] == 120
    assert summary["val_examples"] == 60  # takes 8-9 of 3 speakers x 10 digits
    # Far above chance (0.1). The figure moves with the shuffle, which Ray Data seeds per
    # block: 0.783 since recordings go to Ray Data in blocks of 32 (dc5c381), above 0.8 before.
    assert summary["val_accuracy"] >= 0.75, summary
    assert 0 <= summary["padding_fraction"] < 0.15
    meta = json.loads((out / "checkpoint" / "meta.json").read_text())
    assert meta["input"] == "audio" and meta["labels"] == [str(d) for d in range(10)] and meta["feature_dim"] == 24
    assert not (out / "checkpoint" / "tokenizer.json").exists()


def test_eval_reproduces_the_digit_accuracy_on_a_held_out_folder(digits_run, recordings, tmp_path):
    out, summary = digits_run
    held_out = tmp_path / "held_out"
    held_out.mkdir()
    for path in recordings.glob("*_[89].wav"):
        (held_out / path.name).write_bytes(path.read_bytes())
    done = rayseq("eval", str(out / "checkpoint"), "--data", str(held_out), "--predictions", str(tmp_path / "p.jsonl"))
    assert done.returncode == 0, done.stderr[-3000:]
    scores = last_json_line(done.stdout)
    assert scores["examples"] == 60 and scores["accuracy"] == pytest.approx(summary["val_accuracy"], abs=1e-4)
    rows = read_predictions(scores)  # each recording by name, labelled by its name, in file order
    assert [Path(r["origin"]).name for r in rows] == sorted(p.name for p in held_out.iterdir())
    assert all(Path(r["origin"]).name.split("_")[0] == r["label"] for r in rows)
    del scores["predictions"]
    # the same takes chosen inside the whole recordings folder
    done = rayseq("eval", str(out / "checkpoint"), "--data", str(recordings), "--set", "data.audio.valid_takes=8-9")
    assert done.returncode == 0, done.stderr[-3000:]
    assert last_json_line(done.stdout) == scores


@pytest.fixture(scope="module")
def speech_run(digits_run, recordings) -> tuple[Path, dict, str]:
    """CTC speech-to-text, its encoder started from the digit classifier (same widths)."""
    out = recordings.parent / "speech-run"
    done = rayseq("train", "recipes/fsdd_speech.yaml", *sets(
        *SMALL_AUDIO, f"data.generate.recordings={recordings}", "data.generate.size=240",
        "data.generate.valid_takes=8-9", "data.audio.max_seconds=8.0", "batching.max_tokens=6000",
        f"train.init_from={digits_run[0] / 'checkpoint'}",
        "train.max_steps=40", "train.eval_every=40", "decode.beam_size=2",
    ), "--output", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, last_json_line(done.stdout), done.stdout


def test_speech_recognizer_reports_wer_and_cer_that_eval_reproduces(speech_run):
    out, summary, stdout = speech_run
    # front end (conv1, conv2, proj: 6 tensors) and both LSTM layers (4 + 8) came from the classifier
    assert "stage 0: 18 of 20 parameter tensors from" in stdout
    for key in ("val_wer", "val_cer", "val_exact_match", "val_token_accuracy", "tokens_per_s", "checkpoint"):
        assert key in summary, key
    assert 0 <= summary["val_cer"] and 0 <= summary["val_wer"]
    manifest = (out / "data" / "valid" / "manifest.csv").read_text().splitlines()
    assert manifest[0] == "path,transcript,speaker,sources" and len(manifest) == 61
    assert all(s.split("_")[-1].split(".")[0] in ("8", "9")
               for row in manifest[1:] for s in row.split(",")[3].split(";"))
    done = rayseq("eval", summary["checkpoint"], "--data", str(out / "data" / "valid"),
                  "--predictions", str(out / "valid.jsonl"))
    assert done.returncode == 0, done.stderr[-3000:]
    scores = last_json_line(done.stdout)
    assert scores["examples"] == 60
    assert scores["wer"] == pytest.approx(summary["val_wer"]) and scores["cer"] == pytest.approx(summary["val_cer"])
    rows = read_predictions(scores)  # the manifest's transcripts, in its order
    assert [r["reference"] for r in rows] == [row.split(",")[1] for row in manifest[1:]]


def test_eval_names_a_bad_recording(digits_run, tmp_path):
    out, _ = digits_run
    (tmp_path / "3_x_1.wav").write_bytes(b"RIFF....WAVEfmt not really")
    done = rayseq("eval", str(out / "checkpoint"), "--data", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("rayseq: error: bad record at ")
    assert "3_x_1.wav: not a readable audio file" in done.stderr
