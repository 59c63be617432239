"""Synthetic digit recordings and spoken digit-string utterances (no Ray, no real speech)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipelines.cli import main
from pipelines.errors import ConfigError, DataError
from pipelines.media.audio.synthetic import (
    DIGIT_WORDS,
    RECORDING_NAME,
    parse_takes,
    synthesize_digit,
    write_digit_utterances,
    write_synthetic_recordings,
)

RATE = 8000


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    """Three synthetic speakers, takes 0-9 of every digit (300 files)."""
    return write_synthetic_recordings(tmp_path_factory.mktemp("fsdd"), speakers=3, takes=range(10))


def read_manifest(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def source_parts(name: str) -> tuple[int, str, int]:
    """``(digit, speaker, take)`` of an FSDD-style file name."""
    match = RECORDING_NAME.match(name)
    assert match, name
    return int(match.group(1)), match.group(2), int(match.group(3))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def write_speakers(folder: Path, digits_by_speaker: dict[str, range | list[int]], *, rate: int = RATE,
                   ext: str = "wav") -> Path:
    """A small FSDD-style folder: take 0 of the given digits for each named speaker."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, (speaker, digits) in enumerate(digits_by_speaker.items()):
        for digit in digits:
            sf.write(folder / f"{digit}_{speaker}_0.{ext}", synthesize_digit(digit, index, 0, rate=rate), rate,
                     subtype="PCM_16")
    return folder


# --- synthetic recordings -------------------------------------------------------------


def test_synthetic_recordings_are_fsdd_named_16bit_mono(tmp_path):
    out = write_synthetic_recordings(tmp_path, speakers=2, takes=range(3))
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{d}_s{s}_{t}.wav" for d in range(10) for s in range(2) for t in range(3))
    for path in out.iterdir():
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (RATE, 1, "PCM_16")
        assert 0.25 <= info.frames / info.samplerate <= 0.7


def test_synthetic_recordings_are_deterministic(tmp_path):
    first = write_synthetic_recordings(tmp_path / "a", speakers=1, takes=[0, 4])
    second = write_synthetic_recordings(tmp_path / "b", speakers=1, takes=[4, 0])
    assert folder_bytes(first) == folder_bytes(second)


def test_synthesized_digits_differ_and_takes_vary():
    digits = [synthesize_digit(d, 0, 0) for d in range(10)]
    for audio in digits:
        assert audio.dtype == np.float32 and audio.ndim == 1 and np.abs(audio).max() <= 1.0
    for a in range(10):
        for b in range(a + 1, 10):
            n = min(len(digits[a]), len(digits[b]))
            assert abs(np.corrcoef(digits[a][:n], digits[b][:n])[0, 1]) < 0.9, (a, b)
    takes = [synthesize_digit(3, 1, take) for take in range(5)]
    assert len({len(t) for t in takes}) > 1
    assert not np.array_equal(takes[0], synthesize_digit(3, 2, 0)), "speakers must differ"


def high_band_share(audio: np.ndarray) -> float:
    """Share of the energy at 1.8-2.8 kHz, where /i/ has its second formant and /a/ none."""
    power = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
    freq = np.fft.rfftfreq(len(audio), 1 / RATE)
    return float(power[(freq > 1800) & (freq < 2800)].sum() / power.sum())


@pytest.mark.parametrize("speaker", [0, 1, 2])
def test_reversed_digit_pairs_differ_in_order(speaker):
    """1 is a-i and 2 is i-a: the same segments, so only their order tells them apart."""
    one, two = synthesize_digit(1, speaker, 0), synthesize_digit(2, speaker, 0)
    assert high_band_share(one[: len(one) // 3]) * 4 < high_band_share(one[-len(one) // 3:])
    assert high_band_share(two[: len(two) // 3]) > 4 * high_band_share(two[-len(two) // 3:])


# --- parse_takes ----------------------------------------------------------------------


@pytest.mark.parametrize("spec, expected", [
    ("5-9,12", {5, 6, 7, 8, 9, 12}),
    ("5,7,9-12", {5, 7, 9, 10, 11, 12}),
    (" 3 ", {3}),
    ("10-10", {10}),
])
def test_parse_takes(spec, expected):
    assert parse_takes(spec) == expected


@pytest.mark.parametrize("spec", ["", "a-b", "9-5", "5-", "-3", "1,,2", "1.5"])
def test_parse_takes_rejects_bad_syntax(spec):
    with pytest.raises(ConfigError, match="takes"):
        parse_takes(spec)


# --- utterances -----------------------------------------------------------------------


def test_utterances_are_deterministic(recordings, tmp_path):
    first = write_digit_utterances(recordings, tmp_path / "a", count=8, seed=3)
    second = write_digit_utterances(recordings, tmp_path / "b", count=8, seed=3)
    other = write_digit_utterances(recordings, tmp_path / "c", count=8, seed=4)
    assert folder_bytes(first) == folder_bytes(second)
    assert read_manifest(first) != read_manifest(other)


def test_manifest_matches_audio_and_sources(recordings, tmp_path):
    out = write_digit_utterances(recordings, tmp_path / "utt", count=25, seed=0, takes="5-9")
    rows = read_manifest(out)
    assert (out / "manifest.csv").read_text().splitlines()[0] == "path,transcript,speaker,sources"
    assert [row["path"] for row in rows] == [f"utt_{i:05d}.wav" for i in range(25)]
    lengths = set()
    for row in rows:
        words = row["transcript"].split(" ")
        assert 1 <= len(words) <= 7 and all(w in DIGIT_WORDS for w in words), row
        lengths.add(len(words))
        parts = [source_parts(name) for name in row["sources"].split(";")]
        assert [DIGIT_WORDS[d] for d, _, _ in parts] == words
        assert {speaker for _, speaker, _ in parts} == {row["speaker"]}
        assert all(5 <= take <= 9 for _, _, take in parts)
        info = sf.info(str(out / row["path"]))
        assert (info.samplerate, info.channels, info.subtype) == (RATE, 1, "PCM_16")
        source_frames = sum(sf.info(str(recordings / name)).frames for name in row["sources"].split(";"))
        assert info.frames >= source_frames + 2 * int(0.05 * RATE)  # lead-in and tail at least
    assert len(lengths) > 3, "digit counts should vary"


def test_held_out_takes_share_no_recording(recordings, tmp_path):
    def used(takes: str, seed: int) -> set[str]:
        rows = read_manifest(write_digit_utterances(recordings, tmp_path / takes, count=20, seed=seed, takes=takes))
        return {name for row in rows for name in row["sources"].split(";")}

    train, held_out = used("5-9", 0), used("0-4", 1)
    assert train and held_out and not train & held_out
    assert {source_parts(n)[2] for n in held_out} <= set(range(5))


def test_noise_is_at_the_requested_snr(recordings, tmp_path):
    """Lead-in (>= 0.1 s here) is pure noise; the rest of the power is the signal."""
    out = write_digit_utterances(recordings, tmp_path / "utt", count=6, seed=2, snr_db=20.0, pause=(0.1, 0.2))
    for row in read_manifest(out):
        audio, _ = sf.read(str(out / row["path"]), dtype="float64")
        noise = np.mean(audio[: int(0.09 * RATE)] ** 2)
        snr = 10 * np.log10((np.mean(audio**2) - noise) / noise)
        assert 18.5 < snr < 21.5, (row["path"], snr)


def test_speaker_lacking_a_digit_is_skipped_for_it(tmp_path):
    folder = write_speakers(tmp_path / "rec", {"full": range(10), "partial": [d for d in range(10) if d != 3]},
                            ext="flac")
    rows = read_manifest(write_digit_utterances(folder, tmp_path / "utt", count=40, seed=0, min_digits=3))
    assert {row["speaker"] for row in rows} == {"full", "partial"}
    assert all(row["speaker"] == "full" for row in rows if "three" in row["transcript"].split())


def test_digit_no_speaker_recorded_is_an_error(tmp_path):
    folder = write_speakers(tmp_path / "rec", {"a": range(9), "b": range(9)})
    with pytest.raises(DataError, match="no speaker has a recording of digit 9"):
        write_digit_utterances(folder, tmp_path / "utt", count=2, seed=0)


def test_folder_without_recordings_is_an_error(tmp_path):
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "README.txt").write_text("not audio")
    (tmp_path / "rec" / "4_speaker_with_underscore_1.wav").write_bytes(b"")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "rec")) + ".*no"):
        write_digit_utterances(tmp_path / "rec", tmp_path / "utt", count=2, seed=0)
    with pytest.raises(DataError, match="does not exist"):
        write_digit_utterances(tmp_path / "missing", tmp_path / "utt", count=2, seed=0)


def test_mixed_sample_rates_name_the_odd_file(tmp_path):
    folder = write_speakers(tmp_path / "rec", {"a": range(10)})
    sf.write(folder / "5_b_0.wav", synthesize_digit(5, 1, 0, rate=16000), 16000, subtype="PCM_16")
    with pytest.raises(DataError, match=r"5_b_0\.wav: sample rate 16000 Hz"):
        write_digit_utterances(folder, tmp_path / "utt", count=2, seed=0)


def test_unreadable_recording_is_named(tmp_path):
    folder = write_speakers(tmp_path / "rec", {"a": range(10)})
    (folder / "7_b_0.wav").write_bytes(b"RIFF but not really")
    with pytest.raises(DataError, match=r"7_b_0\.wav: not a readable audio file"):
        write_digit_utterances(folder, tmp_path / "utt", count=2, seed=0)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"takes": "9-5"}, ConfigError, "takes '9-5'"),
    ({"takes": "40-49"}, DataError, "no recording of takes 40-49"),
    ({"count": 0}, ConfigError, "count"),
    ({"min_digits": 0}, ConfigError, "min_digits"),
    ({"min_digits": 4, "max_digits": 3}, ConfigError, "max_digits"),
    ({"pause": (0.3, 0.1)}, ConfigError, "pause"),
    ({"pause": (-0.1, 0.1)}, ConfigError, "pause"),
    ({"snr_db": float("nan")}, ConfigError, "snr_db"),
])
def test_bad_arguments_name_the_argument(recordings, tmp_path, kwargs, error, match):
    arguments = {"count": 2, "seed": 0, **kwargs}
    with pytest.raises(error, match=match):
        write_digit_utterances(recordings, tmp_path / "utt", **arguments)
    assert not (tmp_path / "utt").exists(), "nothing is written before the arguments are checked"


# --- CLI ------------------------------------------------------------------------------


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_generate_digits_then_speech(tmp_path, capsys):
    assert main(["generate", "digits", str(tmp_path / "rec"), "--speakers", "2", "--takes", "0-1"]) == 0
    summary = last_json(capsys)
    assert summary["output"] == str(tmp_path / "rec") and summary["files"] == 40
    assert 40 * 0.25 <= summary["seconds"] <= 40 * 0.7

    assert main(["generate", "speech", str(tmp_path / "rec"), str(tmp_path / "utt"), "--count", "5", "--seed", "1",
                 "--takes", "1", "--max-digits", "3", "--snr-db", "25"]) == 0
    summary = last_json(capsys)
    assert summary["files"] == 5 and summary["seconds"] > 5 * 0.25
    rows = read_manifest(tmp_path / "utt")
    assert len(rows) == 5 and all(1 <= len(r["transcript"].split()) <= 3 for r in rows)


def test_cli_generate_text_delegates(tmp_path, capsys):
    assert main(["generate", "sentiment", str(tmp_path / "s"), "--size", "8", "--seed", "1"]) == 0
    assert last_json(capsys)["files"] == 2
    assert len((tmp_path / "s" / "train.txt").read_text().splitlines()) == 8


@pytest.mark.parametrize("argv, match", [
    (["generate", "speech", "{tmp}/missing", "{tmp}/utt", "--count", "2", "--seed", "0"], "does not exist"),
    (["generate", "digits", "{tmp}/rec", "--takes", "3-1"], "takes '3-1'"),
    (["generate", "translation", "{tmp}/t", "--size", "20000"], "exceeds"),
])
def test_cli_generate_errors_are_one_line(tmp_path, capsys, argv, match):
    assert main([arg.format(tmp=tmp_path) for arg in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rayseq: error: ") and re.search(match, err), err
