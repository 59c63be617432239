"""Audio: features (decode, resample, log-mel), the convolutional front end, audio-folder
listing, and the Ray Data ingest with frame bucketing. Audio is made by the tests
(tones, noise, ``pipelines.media.audio.synthetic``'s synthetic digits), never the shared files."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile
import torch

from conftest import wav_bytes
from models import ModelConfig, build_seq2seq, build_seq2vec
from models.config import SUBSAMPLING
from models.dropout import dropout_key
from models.frontends import log_mel
from models.seq2seq import source
from pipelines.config import AudioConfig, ConfigError, recipe_from_dict
from pipelines.errors import DataError
from pipelines.media.audio.features import AudioFeaturizer, hz_to_mel, mel_filterbank, mel_to_hz
from pipelines.media.audio.folders import list_audio_folder, split_takes

CONFIG = AudioConfig(sample_rate=8000, n_mels=40, max_seconds=2.0)


# ---------------------------------------------------------------- features


def test_mel_filterbank_is_triangles_on_the_mel_scale():
    bank = mel_filterbank(257, 16000, 40)
    assert bank.shape == (257, 40) and bank.min() >= 0 and bank.max() <= 1.0
    freqs = np.linspace(0, 8000, 257)
    centres = freqs[bank.argmax(0)]
    assert np.all(np.diff(centres) > 0)  # one band after another
    spacing = np.diff(hz_to_mel(centres))  # even on the mel scale (to a frequency bin)
    assert spacing.std() < 0.15 * spacing.mean()
    assert mel_to_hz(hz_to_mel(1234.5)) == pytest.approx(1234.5)


def test_a_tone_lands_in_the_band_around_its_frequency():
    featurizer = AudioFeaturizer(AudioConfig(sample_rate=8000, n_mels=40))
    t = np.arange(8000) / 8000
    raw = featurizer.features((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    # before normalisation: the loudest band is the one centred nearest 1 kHz
    power = torch.stft(torch.from_numpy((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)), featurizer.n_fft,
                       hop_length=80, win_length=200, window=featurizer.window, return_complex=True).abs() ** 2
    bands = (power.T @ featurizer.filterbank).mean(0)
    centres = np.linspace(0, 4000, featurizer.n_fft // 2 + 1)[featurizer.filterbank.numpy().argmax(0)]
    assert abs(centres[int(bands.argmax())] - 1000) < 120
    assert raw.shape[1] == 40 and raw.dtype == np.float32


def test_features_are_normalised_frames_padded_to_multiples_of_the_subsampling():
    featurizer = AudioFeaturizer(CONFIG)
    features, wave = featurizer(wav_bytes(0.503), "tone.wav")
    assert features.shape == (52, 40) and 52 % SUBSAMPLING == 0  # 1 + 4024 // 80 = 51 -> 52
    real = features[:51]
    assert abs(float(real.mean())) < 1e-4 and real.std(0).mean() == pytest.approx(1.0, abs=0.05)
    assert not features[51:].any()  # the padding frame is each band's mean: 0
    assert wave.seconds == pytest.approx(0.503, abs=1e-3) and not wave.cut


def test_the_last_frames_of_a_recording_are_kept():
    """A word's final consonant can sit in its last 30 ms (FSDD's "eight"): what happens
    there must reach the features, not be cut to a multiple of 4 frames."""
    rate, seconds = 8000, 0.503  # 51 frames: 3 over a multiple of 4
    t = np.arange(int(rate * seconds)) / rate
    quiet = 0.3 * np.sin(2 * np.pi * 300 * t)
    burst = quiet.copy()
    burst[-160:] += 0.3 * np.random.default_rng(0).standard_normal(160)  # a "t" in the last 20 ms
    featurizer = AudioFeaturizer(CONFIG)
    a = featurizer.features(quiet.astype(np.float32))
    b = featurizer.features(burst.astype(np.float32))
    assert len(a) == len(b) == 52
    assert np.abs(b[48:51] - a[48:51]).max() > 1.0  # frames 48-50 hear the burst


def _chirp(rate: int, channels: int = 1, fmt: str = "WAV") -> bytes:
    t = np.arange(rate) / rate
    wave = 0.4 * np.sin(2 * np.pi * (200 * t + 1400 * t**2))  # 200 Hz -> 3 kHz in 1 s
    buffer = io.BytesIO()
    soundfile.write(buffer, np.stack([wave] * channels, 1) if channels > 1 else wave, rate, format=fmt)
    return buffer.getvalue()


def test_other_rates_and_stereo_are_resampled_to_the_same_frames():
    featurizer = AudioFeaturizer(CONFIG)
    native, _ = featurizer(_chirp(8000), "a.wav")
    resampled, wave = featurizer(_chirp(44100, channels=2), "b.wav")
    flac, _ = featurizer(_chirp(16000, fmt="FLAC"), "c.flac")
    assert native.shape == resampled.shape == flac.shape
    assert len(wave.samples) == 8000
    # the same sweep, frame by frame, whatever the source rate and channels
    for other in (resampled, flac):
        assert np.corrcoef(native.ravel(), other.ravel())[0, 1] > 0.95


def test_long_recordings_are_cut_and_flagged():
    features, wave = AudioFeaturizer(CONFIG)(wav_bytes(3.0), "long.wav")
    assert wave.cut and wave.seconds == pytest.approx(3.0)
    assert len(features) == 204  # 2 s: 1 + 16000 // 80 = 201 frames, padded to 204


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"hello, this is text, not audio", "not a readable audio file"),
    (wav_bytes(1.0)[:3000], "truncated WAV file"),
    (wav_bytes(0.02), "too short"),
    (wav_bytes(1.0)[:40], "not a readable audio file"),
])
def test_bad_audio_is_an_error_naming_the_file(data, message):
    with pytest.raises(DataError, match=rf"^clip\.wav: {message}"):
        AudioFeaturizer(CONFIG)(data, "clip.wav")


def test_audio_config_is_checked():
    with pytest.raises(ConfigError, match="hop_ms <= window_ms"):
        AudioConfig(hop_ms=30, window_ms=25)
    with pytest.raises(ConfigError, match="valid_takes"):
        AudioConfig(valid_takes="5-x")
    with pytest.raises(ConfigError, match="frame budget"):
        recipe_from_dict({"data": {"audio": {"max_seconds": 60}}, "model": {"input": "audio"},
                          "batching": {"max_tokens": 4096}})
    with pytest.raises(ConfigError, match="wavefront"):
        recipe_from_dict({"model": {"input": "audio"}, "parallel": {"schedule": "wavefront", "pp": 2}})
    with pytest.raises(ConfigError, match="audio-folder"):
        recipe_from_dict({"model": {"input": "audio"}, "data": {"format": "csv"}})


# ---------------------------------------------------------------- front end and models

AUDIO_MODEL = ModelConfig(input="audio", embed_dim=12, hidden_size=10, num_layers=2, frontend_channels=3, dropout=0.0)


def _batch(steps: list[int], mels: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(steps)
    x = torch.randn(len(steps), max(steps) * SUBSAMPLING, mels, generator=g)
    x[torch.arange(x.size(1)).unsqueeze(0) >= (lengths * SUBSAMPLING).unsqueeze(1)] = 0
    return x, lengths


def test_padding_does_not_change_an_audio_classifier_output(one_thread):
    model = build_seq2vec(AUDIO_MODEL, frontend=log_mel(16), num_labels=4).eval()
    x, lengths = _batch([9, 4, 1, 6])
    together = model(x, lengths)
    for row, n in enumerate(lengths.tolist()):
        alone = model(x[row : row + 1, : n * SUBSAMPLING], lengths[row : row + 1])
        torch.testing.assert_close(alone[0], together[row], rtol=1e-5, atol=1e-6)
    garbage = x.clone()
    garbage[torch.arange(x.size(1)).unsqueeze(0) >= (lengths * SUBSAMPLING).unsqueeze(1)] = 7.0
    torch.testing.assert_close(model(garbage, lengths), together)


def test_speech_model_decodes_step_by_step_as_it_trains(one_thread):
    config = ModelConfig(kind="seq2seq", input="audio", embed_dim=12, hidden_size=10, num_layers=2,
                         decoder_layers=2, frontend_channels=3, dropout=0.0)
    model = build_seq2seq(config, source=source(log_mel(16)), tgt_vocab_size=15).eval()
    x, lengths = _batch([5, 3])
    tgt_in = torch.tensor([[2, 5, 6, 7], [2, 8, 9, 0]])
    logits = model((x, tgt_in), (lengths, torch.tensor([4, 3])))
    memory = model.encode(x, lengths)
    state = model.init_decoder_state(2)
    for t in range(3):
        log_probs, state = model.decode_step(tgt_in[:, t], state, memory, lengths)
        torch.testing.assert_close(log_probs, torch.log_softmax(logits[:, t], -1), rtol=1e-5, atol=1e-5)


def test_spec_augment_masks_training_input_only_and_reproducibly():
    config = ModelConfig(input="audio", embed_dim=12, hidden_size=10, num_layers=1, frontend_channels=3,
                         dropout=0.0, spec_freq_masks=2, spec_freq_width=6, spec_time_masks=2, spec_time_width=8)
    frontend = build_seq2vec(config, frontend=log_mel(16), num_labels=3).layers["0"]
    x, lengths = _batch([12, 10])
    seen: list[torch.Tensor] = []
    frontend.conv1.register_forward_hook(lambda module, args, out: seen.append(args[0].clone()))
    frontend.train()
    with dropout_key(1, 2):
        a = frontend(x, lengths)
    with dropout_key(1, 2):
        b = frontend(x, lengths)
    with dropout_key(1, 3):
        frontend(x, lengths)
    frontend.eval()
    frontend(x, lengths)
    torch.testing.assert_close(a, b)
    masked, again, other, clean = (s[:, 0] for s in seen)
    assert torch.equal(masked, again) and not torch.equal(masked, other)
    assert torch.equal(clean, x)  # evaluation: nothing masked
    zeroed = (masked == 0) & (x != 0)
    assert zeroed.any()
    # each row loses whole bands and whole frame spans, nothing past its length
    for row, n in enumerate((lengths * SUBSAMPLING).tolist()):
        cols = zeroed[row, :n].all(0).sum() + zeroed[row, :n].all(1).sum()
        assert cols > 0


# ---------------------------------------------------------------- audio folders


def _write(path, seconds=0.3, rate=8000):
    path.write_bytes(wav_bytes(seconds, rate=rate))
    return path


def test_fsdd_names_give_labels_and_takes_carve_validation(tmp_path):
    for name in ("3_ann_0.wav", "3_ann_7.wav", "5_bob_8.flac", "5_bob_12.wav", "notes.txt"):
        _write(tmp_path / name) if name.endswith((".wav", ".flac")) else (tmp_path / name).write_text("x")
    records = list_audio_folder(tmp_path, target="label")
    assert [r["label"] for r in records] == ["3", "3", "5", "5"]
    train, valid = split_takes(records, {7, 8})
    assert sorted(r["path"].rsplit("/", 1)[1] for r in valid) == ["3_ann_7.wav", "5_bob_8.flac"]
    assert len(train) == 2


def test_manifests_name_files_and_transcripts(tmp_path):
    _write(tmp_path / "a.wav")
    _write(tmp_path / "b.wav")
    (tmp_path / "manifest.csv").write_text("path,transcript\na.wav,one two\nb.wav,\nmissing.wav,three\n")
    records = list_audio_folder(tmp_path, target="transcript")
    assert [(r["transcript"], r["error"]) for r in records] == [
        ("one two", ""), ("", "missing transcript"), ("three", f"no such file {tmp_path / 'missing.wav'}")]
    assert records[1]["origin"].endswith("manifest.csv:row 2 (b.wav)")
    (tmp_path / "manifest.csv").unlink()
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"path": "a.wav", "label": "yes"}) + "\n{oops\n")
    records = list_audio_folder(tmp_path, target="label")
    assert records[0]["label"] == "yes" and records[1]["error"].startswith("not valid JSON")
    with pytest.raises(DataError, match="needs a manifest.csv or manifest.jsonl"):
        (tmp_path / "manifest.jsonl").unlink()
        list_audio_folder(tmp_path, target="transcript")
    with pytest.raises(DataError, match="not a folder"):
        list_audio_folder(tmp_path / "nope", target="label")


# ---------------------------------------------------------------- Ray Data ingest


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    from pipelines.media.audio.synthetic import write_synthetic_recordings

    return write_synthetic_recordings(tmp_path_factory.mktemp("digits"), speakers=2, takes=range(6))


def _recipe(root, **data):
    return recipe_from_dict({
        "data": {"root": str(root), "train": ".", "valid": "", "format": "audio-folder",
                 "audio": {"sample_rate": 8000, "n_mels": 16, "max_seconds": 1.0, "valid_takes": "5"}, **data},
        "model": {"input": "audio"},
        "batching": {"max_tokens": 600, "max_batch_size": 16, "pool_size": 64},
    })


@pytest.mark.ray
def test_ingest_buckets_every_recording_once_under_the_frame_budget(ray_head, digits_dir):
    from pipelines.apps.audio_classify.data import prepare_audio_classification

    data = prepare_audio_classification(_recipe(digits_dir))
    assert data.labels == [str(d) for d in range(10)]
    assert data.report["train_examples"] == 100 and data.report["valid_examples"] == 20
    seen = []
    for row in data.train.iter_rows():
        tokens, lengths = row["tokens"], row["lengths"]
        assert tokens.dtype == np.float32 and tokens.shape[2] == 16
        assert tokens.shape[0] * tokens.shape[1] <= 600 and tokens.shape[1] == lengths.max()
        assert np.all(lengths % SUBSAMPLING == 0)
        for r, n in enumerate(lengths):
            assert not tokens[r, n:].any()
        seen.extend(row["labels"].tolist())
    assert sorted(seen) == sorted([d for d in range(10) for _ in range(10)])
    assert data.report["padding_fraction"] < 0.15


@pytest.mark.ray
def test_a_bad_recording_stops_ingest_or_is_skipped_and_counted(ray_head, digits_dir, tmp_path):
    from pipelines.apps.audio_classify.data import prepare_audio_classification

    for path in sorted(digits_dir.glob("*.wav"))[:30]:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    bad = tmp_path / "4_s9_1.wav"
    bad.write_bytes(wav_bytes(0.5)[:2000])
    with pytest.raises(DataError, match=r"4_s9_1\.wav: truncated WAV file"):
        prepare_audio_classification(_recipe(tmp_path, on_bad_record="error"))
    data = prepare_audio_classification(_recipe(tmp_path, on_bad_record="skip"))
    assert data.report["skipped_records"] == 1
    assert data.report["train_examples"] + data.report.get("valid_examples", 0) == 30


# ---------------------------------------------------------------- CTC


def _brute_force_prefix_probs(probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """P(labelling) of every labelling, by enumerating all V^T paths (tiny T and V)."""
    import itertools

    from models.ctc import _collapse

    out: dict[tuple[int, ...], float] = {}
    steps, vocab = probs.shape
    for path in itertools.product(range(vocab), repeat=steps):
        p = float(torch.prod(probs[torch.arange(steps), torch.tensor(path)]))
        key = tuple(_collapse(list(path)))
        out[key] = out.get(key, 0.0) + p
    return out


def test_ctc_prefix_beam_search_finds_the_most_probable_labelling():
    from models.ctc import ctc_beam_search, ctc_greedy

    g = torch.Generator().manual_seed(5)
    for _ in range(5):
        probs = torch.softmax(torch.randn(5, 4, generator=g) * 2, dim=-1)
        exact = _brute_force_prefix_probs(probs)
        best = max(exact, key=exact.get)
        found = ctc_beam_search(probs.log()[None], torch.tensor([5]), beam_size=8, n_best=3)[0]
        assert tuple(found[0].tokens) == best
        # an unpruned beam keeps every prefix: its scores are the exact labelling probabilities
        for hyp in ctc_beam_search(probs.log()[None], torch.tensor([5]), beam_size=10**4, n_best=5, prune=-1e9)[0]:
            assert hyp.score == pytest.approx(np.log(exact[tuple(hyp.tokens)]), abs=1e-6)
        greedy = ctc_greedy(probs.log()[None], torch.tensor([5]))[0][0]
        assert exact[tuple(greedy.tokens)] <= exact[best] + 1e-9


def test_ctc_model_loss_ignores_padding(one_thread):
    from models.ctc import build_ctc, ctc_loss

    config = ModelConfig(kind="seq2seq", input="audio", decoder="ctc", embed_dim=12, hidden_size=10, num_layers=2,
                         frontend_channels=3, dropout=0.0)
    model = build_ctc(config, frontend=log_mel(16), tgt_vocab_size=9).eval()
    x, steps = _batch([9, 5, 7])
    targets, target_lengths = torch.tensor([[4, 5, 6], [7, 0, 0], [8, 8, 0]]), torch.tensor([3, 1, 2])
    together = ctc_loss(model(x, steps), steps, targets, target_lengths)
    alone = sum(ctc_loss(model(x[r : r + 1, : n * SUBSAMPLING], steps[r : r + 1]), steps[r : r + 1],
                         targets[r : r + 1, : int(target_lengths[r])], target_lengths[r : r + 1])
                for r, n in enumerate(steps.tolist()))
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_ctc_decoder_needs_speech():
    # The recipe refuses it (no application answers CTC on text); the model config no longer checks shapes.
    with pytest.raises(ConfigError, match=r"model kind/input/decoder seq2seq/text/ctc is not supported; "
                                          r"known: .*seq2seq/audio/ctc"):
        recipe_from_dict({"model": {"kind": "seq2seq", "decoder": "ctc"}})


def test_edit_distance_counts_substitutions_deletions_and_insertions():
    from pipelines.scoring.speech import edit_distance, speech_scores

    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance([1, 2, 3], [1, 4, 3, 5]) == 2
    assert edit_distance([1, 2, 3], []) == 3 and edit_distance([], [7]) == 1
    scores = speech_scores(["one two tree", "Four  five"], ["one two three", "four"])
    assert scores["wer"] == pytest.approx(2 / 4) and scores["exact_match"] == 0.0 and scores["words"] == 4
