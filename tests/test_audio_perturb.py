"""Training copies of recordings: speed perturbation (``data.audio.speed_perturb``: a copy
at speed ``f`` is ``1/f`` as long and ``f`` times higher, cut to ``max_seconds``
afterwards) and truncation (``data.audio.tail_cut_copies``: a copy is the recording's
beginning). Only the training split gets copies; off, nothing changes. Audio is made by
the tests (tones, synthetic digits)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from conftest import wav_bytes
from pipelines.config import AudioConfig, ConfigError, recipe_from_dict
from pipelines.media.audio.features import AudioFeaturizer
from pipelines.media.audio.folders import featurize_batch, tail_cut_fractions, training_copies

CONFIG = AudioConfig(sample_rate=8000, n_mels=40, max_seconds=2.0)


def _tone(seconds: float, freq: float = 1000.0, rate: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    soundfile.write(buffer, 0.4 * np.sin(2 * np.pi * freq * t), rate, format="WAV")
    return buffer.getvalue()


def _speeds(*factors: float) -> AudioConfig:
    return AudioConfig(sample_rate=8000, n_mels=40, max_seconds=2.0, speed_perturb=list(factors))


def _peak_hz(samples: np.ndarray, rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


# ---------------------------------------------------------------- one recording


@pytest.mark.parametrize("speed", [0.9, 1.1])
def test_a_speed_copy_is_shorter_or_longer_and_higher_or_lower(speed):
    featurizer = AudioFeaturizer(CONFIG)
    plain = featurizer.decode(_tone(1.0), "tone.wav")
    wave = featurizer.decode(_tone(1.0), "tone.wav", speed)
    assert abs(len(wave.samples) - 8000 / speed) <= 1 and wave.seconds == pytest.approx(1.0 / speed)
    assert _peak_hz(plain.samples) == pytest.approx(1000, abs=2)
    assert _peak_hz(wave.samples) == pytest.approx(1000 * speed, abs=2)
    features, _ = featurizer(_tone(1.0), "tone.wav", speed)
    assert len(features) == CONFIG.frames_of(len(wave.samples))


def test_other_source_rates_are_perturbed_at_the_recipe_rate():
    featurizer = AudioFeaturizer(CONFIG)
    wave = featurizer.decode(_tone(1.0, rate=44100), "tone.wav", 1.1)
    assert abs(len(wave.samples) - 8000 / 1.1) <= 1 and _peak_hz(wave.samples) == pytest.approx(1100, abs=2)


def test_max_seconds_applies_after_the_speed_change():
    featurizer = AudioFeaturizer(CONFIG)  # max_seconds 2.0
    slow = featurizer.decode(_tone(1.9), "a.wav", 0.9)  # 2.11 s: cut and flagged, as a long recording
    assert slow.cut and slow.seconds == pytest.approx(1.9 / 0.9) and len(slow.samples) == 16000
    fast = featurizer.decode(_tone(2.1), "b.wav", 1.1)  # 1.91 s: whole
    assert not fast.cut and abs(len(fast.samples) - 2.1 * 8000 / 1.1) <= 1
    features, _ = featurizer(_tone(1.9), "a.wav", 0.9)
    assert len(features) == CONFIG.max_frames  # what the frame budget was checked against


def test_speed_one_and_no_speed_column_give_the_same_features(tmp_path):
    (tmp_path / "a.wav").write_bytes(wav_bytes(0.6))
    records = [{"path": str(tmp_path / "a.wav"), "origin": "a.wav", "error": "", "label": "x"}]
    assert training_copies(records, CONFIG) is records  # off: the records as they were, no speed column

    def batch(rows):
        return {k: np.array([r[k] for r in rows], dtype=object if k not in ("speed", "tail_cut") else float)
                for k in rows[0]}

    plain = featurize_batch(batch(records), vars(CONFIG))
    copies = featurize_batch(batch(training_copies(records, _speeds(0.9, 1.0, 1.1))), vars(CONFIG))
    assert "speed" not in plain
    assert np.array_equal(plain["features"][0], copies["features"][1])
    assert list(copies["length"]) == sorted(copies["length"], reverse=True) and len(set(copies["length"])) == 3
    # and the plain row is what the featurizer makes of the file, unchanged
    samples, _ = soundfile.read(tmp_path / "a.wav", dtype="float32")
    assert np.array_equal(plain["features"][0], AudioFeaturizer(CONFIG).features(samples))


def test_a_copy_that_fails_says_which_speed(tmp_path):
    (tmp_path / "s.wav").write_bytes(wav_bytes(0.031))  # 248 samples: 4 frames, 3 once 1.1 times faster
    rows = training_copies([{"path": str(tmp_path / "s.wav"), "origin": "s.wav", "error": "", "label": "x"}],
                           _speeds(1.0, 1.1))
    out = featurize_batch({k: np.array([r[k] for r in rows]) for k in rows[0]}, vars(CONFIG))
    assert out["error"][0] == ""
    assert out["error"][1].startswith("too short") and out["error"][1].endswith("(speed 1.1 copy)")


# ---------------------------------------------------------------- the option


@pytest.mark.parametrize("value, message", [
    (1.1, "expected a list of speed factors"),
    ("0.9,1.1", "expected a list of speed factors"),
    ([0.9, 0.4], "in \\[0.5, 2.0\\], got 0.4"),
    ([2.5], "got 2.5"),
    (["fast"], "got 'fast'"),
    ([True], "got True"),
    ([float("nan")], "got nan"),
    ([0.9, 1.1, 0.9], "factor 0.9 is listed twice"),
    ([1, 1.0], "factor 1 is listed twice"),
])
def test_bad_speed_factors_are_errors_naming_the_option(value, message):
    with pytest.raises(ConfigError, match=rf"^data\.audio\.speed_perturb: .*{message}"):
        AudioConfig(speed_perturb=value)
    with pytest.raises(ConfigError, match=r"data\.audio\.speed_perturb"):
        recipe_from_dict({"data": {"audio": {"speed_perturb": value}}, "model": {"input": "audio"}})


def test_speed_factors_are_floats_and_survive_the_saved_recipe():
    assert AudioConfig().speed_perturb == [] and AudioConfig(speed_perturb=[1, 1.1]).speed_perturb == [1.0, 1.1]
    recipe = recipe_from_dict({"data": {"audio": {"speed_perturb": [0.9, 1, 1.1]}}, "model": {"input": "audio"}})
    import yaml

    again = recipe_from_dict(yaml.safe_load(recipe.to_yaml()))
    assert again.data.audio.speed_perturb == [0.9, 1.0, 1.1]


# ---------------------------------------------------------------- tail-cut copies


def test_a_tail_cut_copy_is_the_beginning_of_the_recording_featurized_alone():
    featurizer = AudioFeaturizer(CONFIG)
    whole = featurizer.decode(_tone(1.0), "tone.wav")
    cut = featurizer.decode(_tone(1.0), "tone.wav", tail_cut=0.25)
    assert len(cut.samples) == 6000 and np.array_equal(cut.samples, whole.samples[:6000])
    assert cut.seconds == whole.seconds and not cut.cut  # the duration is the recording's
    features, _ = featurizer(_tone(1.0), "tone.wav", 1.0, 0.25)
    # normalised over what is left, as a recording that really ended there would be
    assert np.array_equal(features, featurizer.features(whole.samples[:6000]))


def test_the_cuts_of_a_file_are_pinned_across_versions_and_machines():
    """Recipes' results depend on which cuts were drawn: a change here changes them."""
    cuts = tail_cut_fractions("/any/folder/8_nicolas_5.wav", AudioConfig(tail_cut_copies=2))
    assert cuts == pytest.approx([0.024047, 0.03395], abs=1e-6)


def test_a_tail_cut_never_leaves_less_than_the_shortest_recording():
    featurizer = AudioFeaturizer(CONFIG)
    short = featurizer.decode(_tone(0.05), "short.wav", tail_cut=0.9)  # 400 samples -> 40, but 30 ms stay
    assert len(short.samples) == 3 * CONFIG.hop_length
    assert len(featurizer.features(short.samples)) == 4


def test_tail_cut_copies_follow_the_speed_copies_and_are_drawn_from_the_name():
    records = [{"path": f"{n}.wav", "origin": f"{n}.wav", "error": "", "label": "x"} for n in ("a", "b")]
    audio = AudioConfig(speed_perturb=[0.9, 1.1], tail_cut_copies=3, tail_cut_max=0.3)
    rows = training_copies(records, audio)
    assert [(r["origin"], r["speed"]) for r in rows] == [(o, s) for o in ("a.wav", "b.wav")
                                                        for s in (0.9, 1.1, 1.0, 1.0, 1.0)]
    cuts = [[r["tail_cut"] for r in rows if r["origin"] == o] for o in ("a.wav", "b.wav")]
    assert all(c[:2] == [0.0, 0.0] and all(0 < f <= 0.3 for f in c[2:]) for c in cuts)
    assert cuts[0] != cuts[1] and len(set(cuts[0][2:])) == 3
    assert training_copies(records, audio) == rows  # the same every run: seeded by the file name
    elsewhere = [{**r, "path": f"/elsewhere/data/{r['path']}"} for r in records]  # not by its folder
    assert [r["tail_cut"] for r in training_copies(elsewhere, audio)] == [r["tail_cut"] for r in rows]
    only_cuts = training_copies(records, AudioConfig(tail_cut_copies=1))
    assert [(r["speed"], r["tail_cut"] == 0) for r in only_cuts] == [(1.0, True), (1.0, False)] * 2


def test_tail_cut_copies_are_refused_for_speech_to_text():
    with pytest.raises(ConfigError, match=r"data\.audio\.tail_cut_copies is for classifiers .* whole transcript"):
        recipe_from_dict({"data": {"format": "audio-folder", "audio": {"tail_cut_copies": 1}},
                          "model": {"kind": "seq2seq", "input": "audio", "decoder": "ctc"}})


@pytest.mark.parametrize("field, value, message", [
    ("tail_cut_copies", -1, "integer in 0..16, got -1"),
    ("tail_cut_copies", 17, "got 17"),
    ("tail_cut_copies", 1.5, "got 1.5"),
    ("tail_cut_copies", True, "got True"),
    ("tail_cut_max", 0, "fraction in \\(0, 1\\), got 0"),
    ("tail_cut_max", 1.0, "got 1.0"),
    ("tail_cut_max", "half", "got 'half'"),
])
def test_bad_tail_cut_options_are_errors_naming_the_option(field, value, message):
    with pytest.raises(ConfigError, match=rf"^data\.audio\.{field} must be .*{message}"):
        AudioConfig(**{field: value})


# ---------------------------------------------------------------- Ray Data ingest


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    from pipelines.media.audio.synthetic import write_synthetic_recordings

    return write_synthetic_recordings(tmp_path_factory.mktemp("digits"), speakers=1, takes=range(4))


def _recipe(root, speeds, tail_cut_copies=0):
    return recipe_from_dict({
        "data": {"root": str(root), "train": ".", "valid": "", "format": "audio-folder",
                 "audio": {"sample_rate": 8000, "n_mels": 16, "max_seconds": 1.0, "valid_takes": "3",
                           "speed_perturb": speeds, "tail_cut_copies": tail_cut_copies}},
        "model": {"input": "audio"},
        "batching": {"max_tokens": 600, "max_batch_size": 16, "pool_size": 64},
    })


@pytest.mark.ray
def test_only_the_training_split_gets_a_copy_per_speed(ray_head, digits_dir):
    from pipelines.apps.audio_classify.data import prepare_audio_classification
    from pipelines.media.audio.folders import featurize_splits

    plain_train, plain_valid = featurize_splits(_recipe(digits_dir, []).data, target="label")
    train, valid = featurize_splits(_recipe(digits_dir, [0.9, 1.0, 1.1]).data, target="label")
    assert (plain_train.rows, plain_valid.rows) == (30, 10)
    assert (train.rows, valid.rows) == (90, 10)
    assert "speed" not in plain_train.dataset.schema().names and "speed" not in valid.dataset.schema().names

    def by_key(split, *key):
        return {tuple(r[k] for k in key): r for r in split.dataset.iter_rows()}

    plain, copies = by_key(plain_train, "origin"), by_key(train, "origin", "speed")
    for (origin,), row in plain.items():
        assert [copies[(origin, s)]["label"] for s in (0.9, 1.0, 1.1)] == [row["label"]] * 3
        assert np.array_equal(copies[(origin, 1.0)]["features"], row["features"])  # the original, bit for bit
        assert copies[(origin, 0.9)]["length"] >= row["length"] >= copies[(origin, 1.1)]["length"]
    for key, row in by_key(plain_valid, "origin").items():
        assert np.array_equal(by_key(valid, "origin")[key]["features"], row["features"])

    data = prepare_audio_classification(_recipe(digits_dir, [0.9, 1.1]))  # no 1.0: originals left out
    assert data.report["train_examples"] == 60 and data.report["valid_examples"] == 10
    assert data.report["speed_perturb"] == "x2 (0.9, 1.1)"
    assert sum(len(row["labels"]) for row in data.train.iter_rows()) == 60
    assert "speed_perturb" not in prepare_audio_classification(_recipe(digits_dir, [])).report


@pytest.mark.ray
def test_only_the_training_split_gets_tail_cut_copies(ray_head, digits_dir):
    from pipelines.apps.audio_classify.data import prepare_audio_classification
    from pipelines.media.audio.folders import featurize_splits

    plain_train, _ = featurize_splits(_recipe(digits_dir, []).data, target="label")
    train, valid = featurize_splits(_recipe(digits_dir, [], tail_cut_copies=2).data, target="label")
    assert (train.rows, valid.rows) == (90, 10) and "tail_cut" not in valid.dataset.schema().names
    plain, shorter = {r["origin"]: r for r in plain_train.dataset.iter_rows()}, 0
    for origin, row in plain.items():
        copies = sorted((r for r in train.dataset.iter_rows() if r["origin"] == origin), key=lambda r: r["tail_cut"])
        assert np.array_equal(copies[0]["features"], row["features"]) and copies[0]["tail_cut"] == 0
        assert all(c["label"] == row["label"] and c["length"] <= row["length"] for c in copies[1:])
        assert not any(np.array_equal(c["features"], row["features"]) for c in copies[1:])
        shorter += sum(c["length"] < row["length"] for c in copies[1:])
    assert shorter >= 30  # of 60 copies: most cuts lose whole frames
    data = prepare_audio_classification(_recipe(digits_dir, [], tail_cut_copies=2))
    assert data.report["train_examples"] == 90 and data.report["tail_cut"] == "+2 per recording (up to 40% cut)"


@pytest.mark.ray
def test_speech_copies_keep_their_transcript_and_the_tokenizer_counts_it_once(ray_head, tmp_path):
    from pipelines.apps.speech_to_text.data import prepare_speech

    texts = ["one two", "two one", "one one", "two two", "three"]  # "three" once: under min_frequency 2
    for i in range(len(texts)):
        (tmp_path / f"u{i}.wav").write_bytes(wav_bytes(0.5 + 0.1 * i))
    rows = "".join(f"u{i}.wav,{text}\n" for i, text in enumerate(texts))
    (tmp_path / "manifest.csv").write_text("path,transcript\n" + rows)
    recipe = recipe_from_dict({
        "data": {"root": str(tmp_path), "train": ".", "valid": "", "format": "audio-folder",
                 "audio": {"sample_rate": 8000, "n_mels": 16, "max_seconds": 2.0,
                           "speed_perturb": [0.9, 1.0, 1.1]}},
        "tokenizer": {"kind": "wordlevel", "vocab_size": 16, "min_frequency": 2},
        "model": {"kind": "seq2seq", "input": "audio", "decoder": "ctc"},
        "batching": {"max_tokens": 1200, "max_batch_size": 16, "pool_size": 64},
    })
    data = prepare_speech(recipe)
    assert data.report["train_examples"] == 15 and data.report["speed_perturb"] == "x3 (0.9, 1.0, 1.1)"
    words = {token.lstrip("▁") for token in data.tokenizer.get_vocab()}  # word-level tokens start with ▁
    assert {"one", "two"} <= words and "three" not in words
