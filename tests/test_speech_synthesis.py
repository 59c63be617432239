"""Speech synthesis without Ray: the vocoder's round trip, mel-cepstral distance under
DTW, the model's step-by-step decoding against its teacher-forced pass, seeded
synthesis, the loss's masking, the batches, texts and speakers, the recipe checks and
the synthesize command."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile
import torch

from models.config import ModelConfig
from models.speech import build_synthesis_model, frame_loss, split_output
from pipelines.apps.speech_synthesis.data import CutFramePool, FrameScale
from pipelines.checkpoint import load_predictor
from pipelines.config import AudioConfig, BatchingConfig, recipe_from_dict
from pipelines.errors import ConfigError, DataError
from pipelines.media.audio.features import AudioFeaturizer
from pipelines.media.audio.synthetic import synthesize_digit
from pipelines.media.audio.vocoder import GriffinLim, wav_bytes
from pipelines.scoring.mel_distance import dtw_path_mean, mcd, mel_cepstra

AUDIO = AudioConfig(sample_rate=8000, n_mels=40, window_ms=50.0, hop_ms=12.5, max_seconds=2.0)
SMALL = ModelConfig(kind="synthesis", embed_dim=4, hidden_size=8, num_layers=3, residual_from=1, prenet_size=6,
                    frames_per_step=2, postnet_channels=5, postnet_layers=3, dropout=0.0)
SIZES = {"frame_size": 7, "num_words": 5, "num_speakers": 3}


def spectral_convergence(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|sqrt(A) - sqrt(B)| / |sqrt(A)|`` over the mel power of two log-mel spectrograms."""
    n = min(len(a), len(b))
    x, y = a[:n].exp().sqrt(), b[:n].exp().sqrt()
    return float((x - y).norm() / x.norm())


# -- vocoder ------------------------------------------------------------------------------


def test_griffin_lim_round_trip_keeps_the_spectrogram():
    featurizer, vocoder = AudioFeaturizer(AUDIO), GriffinLim(AUDIO, iterations=32)
    samples = synthesize_digit(7, 1, 0, rate=AUDIO.sample_rate).astype(np.float32)
    log_mel = featurizer.log_mel(samples)
    rebuilt = vocoder(log_mel)
    assert rebuilt.dtype == np.float32 and len(rebuilt) == (len(log_mel) - 1) * AUDIO.hop_length
    assert np.abs(rebuilt).max() <= 1.0
    assert spectral_convergence(log_mel, featurizer.log_mel(rebuilt)) < 0.15
    # a wrong phase (zeros) is far off: the measure can fail
    noise = np.random.default_rng(0).normal(0, 0.05, len(samples)).astype(np.float32)
    assert spectral_convergence(log_mel, featurizer.log_mel(noise)) > 0.5


def test_griffin_lim_is_deterministic_and_checks_its_input():
    vocoder = GriffinLim(AUDIO, iterations=4)
    log_mel = AudioFeaturizer(AUDIO).log_mel(synthesize_digit(3, 0, 1, rate=8000).astype(np.float32))
    assert np.array_equal(vocoder(log_mel), vocoder(log_mel.numpy()))
    with pytest.raises(ValueError, match=r"\(frames >= 2, 40\)"):
        vocoder(log_mel[:, :20])
    with pytest.raises(ValueError, match="iterations"):
        GriffinLim(AUDIO, iterations=0)


def test_mel_inversion_is_non_negative_and_consistent():
    vocoder = GriffinLim(AUDIO)
    power = torch.rand(12, vocoder.filterbank.size(0), dtype=torch.float64)
    log_mel = torch.log(power @ vocoder.filterbank + 1e-6).float()
    magnitude = vocoder.magnitude(log_mel)
    assert (magnitude >= 0).all()
    mel_again = torch.log((magnitude.double().T ** 2) @ vocoder.filterbank + 1e-6)
    assert torch.allclose(mel_again.float(), log_mel, atol=0.1)


def test_wav_bytes_are_16_bit_pcm():
    samples = np.sin(np.linspace(0, 100, 800)).astype(np.float32) * 1.5  # clipped to [-1, 1]
    data, rate = soundfile.read(io.BytesIO(wav_bytes(samples, 8000)), dtype="int16")
    info = soundfile.info(io.BytesIO(wav_bytes(samples, 8000)))
    assert rate == 8000 and info.subtype == "PCM_16" and len(data) == 800 and data.max() == 32767


# -- mel-cepstral distance ----------------------------------------------------------------


def test_dtw_finds_the_cheapest_path():
    assert dtw_path_mean(np.array([[0.0, 5.0], [5.0, 0.0]])) == 0.0
    assert dtw_path_mean(np.array([[1.0, 1.0, 1.0]])) == 1.0
    # the diagonal sums 0 + 5 + 0; the path (0,0) (0,1) (1,2) (2,2) sums 2 over 4 cells
    cost = np.array([[0.0, 1.0, 9.0], [9.0, 5.0, 1.0], [9.0, 9.0, 0.0]])
    assert dtw_path_mean(cost) == pytest.approx(2 / 4)
    # equal sums: the shorter path (the diagonal, 2 over 3 cells, not 2 over 5)
    assert dtw_path_mean(np.array([[0.0, 0.0, 9.0], [9.0, 0.0, 9.0], [9.0, 0.0, 2.0]])) == pytest.approx(2 / 3)


def test_mcd_is_zero_for_the_same_sound_at_any_tempo_and_grows_with_difference():
    rng = np.random.default_rng(0)
    a = rng.normal(-5, 2, size=(30, 40))
    assert mcd(a, a) == 0.0
    assert mcd(a, np.repeat(a, 2, axis=0)) == pytest.approx(0.0, abs=1e-9)  # spoken twice as slowly
    near, far = a + rng.normal(0, 0.1, a.shape), rng.normal(-5, 2, size=(30, 40))
    assert 0 < mcd(a, near) < mcd(a, far)
    assert mcd(a, a + 3.0) == pytest.approx(0.0, abs=1e-9)  # loudness (c0) is left out
    assert mel_cepstra(a).shape == (30, 13)
    # a ripple of amplitude 3 (log power) at quefrency 2: c_2 = 3 / 2 (cosine mean) / 2 (amplitude)
    ripple = 3.0 * np.cos(np.pi * 2 * (2 * np.arange(40) + 1) / 80)[None]
    assert np.allclose(mel_cepstra(ripple)[0], [0.0, 0.75] + [0.0] * 11, atol=1e-12)


# -- model --------------------------------------------------------------------------------


def test_step_by_step_decoding_matches_the_teacher_forced_pass():
    """What synthesis runs (one decoder step at a time) is what training computes, given
    the same previous frames (pre-net dropout off in eval mode)."""
    model = build_synthesis_model(SMALL, SIZES, seed=1).eval()
    g = torch.Generator().manual_seed(0)
    frames, conditions = torch.randn(2, 8, 7, generator=g), torch.tensor([[1, 2], [4, 0]])
    out = model((frames, conditions), torch.tensor([4, 4]))
    before, _, stop = split_output(out, 7)
    first, recurrent, output = model._parts()
    cond = first.condition(conditions)
    previous, state = torch.zeros(2, 7), [None] * len(recurrent)
    for step in range(4):
        x = first.step(previous, None)
        new = []
        for layer, s in zip(recurrent, state):
            x, s = layer.step(x, cond, s)
            new.append(s)
        state = new
        chunk, stop_logits = output.step(x, cond)
        torch.testing.assert_close(chunk, before[:, 2 * step : 2 * step + 2])
        torch.testing.assert_close(stop_logits, stop[:, 2 * step : 2 * step + 2])
        previous = frames[:, 2 * step + 1]


def test_synthesis_is_seeded_per_row_and_stops():
    model = build_synthesis_model(SMALL, SIZES, seed=0).eval()
    stop = model.layers[str(len(model.layers) - 1)].stop.bias.data
    stop.fill_(-50.0)  # no stop: every row runs to max_frames
    conditions = torch.tensor([[1, 2], [3, 0], [1, 2]])

    def run(seeds, rows=conditions):
        return model.synthesize(rows, max_frames=11, generators=[torch.Generator().manual_seed(s) for s in seeds])

    a, b = run([5, 6, 5]), run([5, 6, 5])
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    torch.testing.assert_close(a[0], a[2])  # the same word, voice and seed in one batch
    alone = run([6], conditions[1:2])[0]
    torch.testing.assert_close(alone, a[1])  # whatever shares the batch
    assert not torch.equal(run([7, 6, 5])[0], a[0])  # another seed, other audio
    assert [len(x) for x in a] == [11, 11, 11]
    stop.fill_(50.0)  # a stop probability over the threshold at once: every word is one frame
    assert [len(x) for x in run([0, 1, 2])] == [1, 1, 1]


def test_frame_loss_ignores_padding_and_scores_the_stop_frame():
    model = build_synthesis_model(SMALL, SIZES, seed=0)
    frames = torch.randn(2, 6, 7)
    real = torch.tensor([[1.0] * 6, [1.0] * 3 + [0.0] * 3])
    targets = torch.cat([frames, real[..., None]], -1)
    out = model((frames, torch.tensor([[0, 0], [1, 1]])), torch.tensor([3, 2]))
    loss = frame_loss(out, targets)
    padded = targets.clone()
    padded[1, 3:, :7] = 100.0  # padding frames change: the loss does not
    assert torch.equal(frame_loss(out, padded), loss)
    stopping = out.detach().clone()
    stopping[..., -1] = -20.0
    stopping[0, 5, -1] = stopping[1, 2, -1] = 20.0  # the last real frames: a right stop call
    early = stopping.clone()
    early[1, 2, -1], early[1, 1, -1] = -20.0, 20.0
    assert frame_loss(stopping, targets) < frame_loss(early, targets)
    assert frame_loss(out, targets, reduction="mean").item() == pytest.approx(loss.item() / 9)


# -- data ---------------------------------------------------------------------------------


def test_cut_frame_pool_pads_to_whole_steps_and_marks_real_frames():
    scale = FrameScale(np.full(4, -5.0, np.float32), np.full(4, 2.0, np.float32))
    pool = {"features": [np.full((5, 4), -3.0, np.float32), np.full((2, 4), -7.0, np.float32)],
            "length": np.array([5, 2]), "label": np.array(["7", "1"]), "speaker": np.array(["theo", "amy"])}
    ids = {"words": {"1": 0, "7": 1}, "speakers": {"amy": 0, "theo": 1}}
    out = CutFramePool(BatchingConfig(max_tokens=64, max_batch_size=8), scale, 2, ids, sort=False)(pool)
    tokens, labels = out["tokens"][0], out["labels"][0]
    assert tokens.shape == (2, 6, 4) and labels.shape == (2, 6, 5)
    assert np.allclose(tokens[0, :5], 1.0) and np.allclose(tokens[1, :2], -1.0) and not tokens[1, 2:].any()
    assert labels[:, :, 4].tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]]
    assert out["conditions"][0].tolist() == [[1, 1], [0, 0]]
    assert out["lengths"][0].tolist() == [5, 2] and out["steps"][0].tolist() == [3, 1]


def test_frame_scale_round_trip_and_meta_checks(tmp_path):
    scale = FrameScale(np.array([-5.0, -6.0], np.float32), np.array([2.0, 3.0], np.float32))
    frames = np.array([[-1.0, -3.0], [-7.0, -9.0]], np.float32)
    assert np.allclose(scale.restore(scale.normalise(frames)), frames)
    assert np.allclose(FrameScale.from_meta(tmp_path, scale.meta(), 2).std, scale.std)
    with pytest.raises(DataError, match="frame_mean"):
        FrameScale.from_meta(tmp_path, {"frame_mean": [0.0], "frame_std": [1.0]}, 2)
    with pytest.raises(DataError, match="std > 0"):
        FrameScale.from_meta(tmp_path, {"frame_mean": [0.0, 0.0], "frame_std": [1.0, 0.0]}, 2)


# -- texts, speakers, the checkpoint ------------------------------------------------------


def test_texts_become_words(tiny_tts):
    predictor = load_predictor(tiny_tts)
    rows = predictor.rows(["seven", "four one 7", "417", " 2,3 "])
    assert [row.words for row in rows] == [(7,), (4, 1, 7), (4, 1, 7), (2, 3)]
    assert [len(row) for row in rows] == [12, 36, 36, 24]  # decoder steps: 0.3 s is 24 frames, 12 steps of 2
    with pytest.raises(DataError, match=r"input 1: unknown word 'eleven' \(word 2\); the model says 0, zero"):
        predictor.rows(["one", "one eleven"])
    with pytest.raises(DataError, match="input: no words"):
        predictor.rows(["  "])
    with pytest.raises(DataError, match=r"input: 9 words; the model says at most 8 an input \(data.max_length\)"):
        predictor.rows(["123456789"])
    with pytest.raises(DataError, match="unknown speaker 'bob'; the model has alice, theo"):
        predictor.run(predictor.rows(["one"]), speaker="bob")


def test_synthesized_audio_is_seeded_and_joins_words_with_pauses(tiny_tts):
    predictor = load_predictor(tiny_tts)
    one, two = predictor.rows(["one", "one two"])
    a = predictor.synthesize([one, two], speaker="theo", seed=3)
    b = predictor.synthesize([two], speaker="theo", seed=3)
    assert np.array_equal(a[1], b[0])  # whatever shares the batch
    assert not np.array_equal(predictor.synthesize([one], speaker="theo", seed=4)[0], a[0])
    assert np.array_equal(a[1][: len(a[0])], a[0])  # word 0 of an input is the same draw
    pause = int(0.1 * 8000)
    assert not a[1][len(a[0]) : len(a[0]) + pause].any()
    answer = predictor.run([one], speaker="alice", seed=0)[0]
    assert answer["sample_rate"] == 8000 and answer["seconds"] > 0


def test_meta_is_checked(tiny_tts, tmp_path):
    from pipelines.apps.speech_synthesis.app import APP

    meta = json.loads((tiny_tts / "meta.json").read_text())
    assert APP.sizes_from_meta(tmp_path, meta) == {"frame_size": 16, "num_words": 10, "num_speakers": 2}
    with pytest.raises(DataError, match="'speakers': distinct non-empty strings"):
        APP.sizes_from_meta(tmp_path, {**meta, "speakers": ["a", "a"]})


# -- recipes ------------------------------------------------------------------------------

RECIPE = {"app": "speech_synthesis", "data": {"format": "audio-folder", "audio": {"sample_rate": 8000}},
          "model": {"kind": "synthesis"}}


@pytest.mark.parametrize("change, message", [
    ({"data": {"audio": {"tail_cut_copies": 1}}}, "for classifiers"),
    ({"data": {"audio": {"label_field": 1}}}, "for classifiers"),
    ({"parallel": {"schedule": "wavefront"}}, "speech_synthesis does not"),
    ({"batching": {"max_tokens": 100}}, "must hold one recording"),
    ({"synthesis": {"stop_threshold": 1.5}}, "synthesis.stop_threshold"),
    ({"model": {"frames_per_step": 0}}, "model.frames_per_step"),
    ({"train": {"label_smoothing": 0.1}}, "train.label_smoothing smooths class targets"),
])
def test_recipe_checks_name_the_key(change, message):
    raw = json.loads(json.dumps(RECIPE))
    for section, values in change.items():
        node = raw.setdefault(section, {})
        for key, value in values.items():
            node[key] = {**node.get(key, {}), **value} if isinstance(value, dict) else value
    with pytest.raises(ConfigError, match=message):
        recipe_from_dict(raw)


def test_other_applications_refuse_the_synthesis_section():
    with pytest.raises(ConfigError, match="synthesis is read by speech synthesis only"):
        recipe_from_dict({"model": {"kind": "seq2vec"}, "synthesis": {"eval_seeds": 2}})


def test_label_field_picks_the_speaker(tmp_path):
    from pipelines.media.audio.folders import list_audio_folder

    for name in ("7_theo_1.wav", "3_amy_2.wav"):
        (tmp_path / name).write_bytes(b"")
    assert [r["label"] for r in list_audio_folder(tmp_path, target="label", label_field=1)] == ["amy", "theo"]
    with pytest.raises(DataError, match="label_field=3 needs a name of at least 4"):
        list_audio_folder(tmp_path, target="label", label_field=3)


def test_synthesize_command_writes_a_wav_and_a_spectrogram(tiny_tts, tmp_path, capsys):
    from pipelines.cli import main

    reference = tmp_path / "4_alice_0.wav"
    reference.write_bytes(wav_bytes(synthesize_digit(4, 0, 0, rate=8000).astype(np.float32), 8000))
    assert main(["synthesize", str(tiny_tts), "four one", "--speaker", "alice", "--out", str(tmp_path / "x.wav"),
                 "--spectrogram", str(tmp_path / "x.png"), "--reference", str(reference), "--seed", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["words"] == 2 and summary["speaker"] == "alice" and summary["sample_rate"] == 8000
    data, rate = soundfile.read(tmp_path / "x.wav")
    assert rate == 8000 and len(data) / rate == pytest.approx(summary["seconds"], abs=1e-3)
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["synthesize", str(tiny_tts), "twelve", "--speaker", "alice", "--out", str(tmp_path / "y.wav")]) != 0
    assert "unknown word 'twelve'" in capsys.readouterr().err
