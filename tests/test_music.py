"""Music without Ray: the chorale formats (CSV, MIDI) and their errors, MIDI round trips,
windows under the book's protocol, the model's conditioning, seeded sampling, scoring,
the compose command and the music statistics."""

from __future__ import annotations

import base64
import io
import json
import random

import mido
import numpy as np
import pytest
import torch

from models.config import ModelConfig
from models.music import PITCHES, START, build_chorale_model, pick
from pipelines import apps
from pipelines.apps.music.data import PROTOCOL, WHOLE, Protocol, labels_of, piece_rows
from pipelines.apps.music.generate import piece, write_chorales
from pipelines.apps.music.predictor import primer_chords
from pipelines.config import recipe_from_dict
from pipelines.errors import ConfigError, DataError
from pipelines.media.chorales import (
    chords_to_midi,
    midi_to_chords,
    parse_csv,
    parse_piece,
    piano_roll_png,
    transposed,
    windows,
)

SMALL = ModelConfig(kind="music", embed_dim=4, hidden_size=8, num_layers=2, residual_from=1, head_size=6, dropout=0.0)


def random_chords(seed: int, steps: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chords = rng.integers(36, 82, size=(steps, 4))
    chords[rng.random((steps, 4)) < 0.1] = 0
    return chords


# -- formats ------------------------------------------------------------------------------


def test_csv_reads_header_and_rows():
    piece_ = parse_csv("note0,note1,note2,note3\n74,70,65,58\n\n74,70,0,58\n", "a.csv")
    assert piece_ == {"chords": [[74, 70, 65, 58], [74, 70, 0, 58]], "origin": "a.csv", "error": ""}


@pytest.mark.parametrize("text, error", [
    ("74,70,65,58\n74,70,65\n", "line 2: 3 values, expected 4 pitches"),
    ("74,70,65,58\n74,70,65,128\n", "line 2: voice 3 pitch 128 is out of range"),
    ("74,70,-1,58\n", "line 1: voice 2 pitch -1 is out of range"),
    ("74,70,a,58\n", "line 1: '74,70,a,58' is not 4 comma-separated integers"),
    ("note0,note1,note2,note3\n", "no chords"),
])
def test_bad_csv_names_the_line(text, error):
    parsed = parse_csv(text, "bad.csv")
    assert error in parsed["error"] and parsed["origin"] == "bad.csv" and parsed["chords"] == []


def test_piece_files_are_csv_or_midi():
    assert "not a piece" in parse_piece(b"hello", "notes.txt")["error"]
    assert "not a readable MIDI file" in parse_piece(b"MThd-broken", "x.mid")["error"]
    assert "not UTF-8" in parse_piece(b"\xff\xfe", "x.csv")["error"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_midi_round_trip_gives_the_same_chords(seed):
    chords = random_chords(seed)
    chords[-3:] = 0  # trailing rests keep their length
    back = midi_to_chords(chords_to_midi(chords))
    np.testing.assert_array_equal(back, chords)
    midi = mido.MidiFile(file=io.BytesIO(chords_to_midi(chords)))
    assert midi.type == 1 and len(midi.tracks) == 5  # tempo track + one per voice


def test_generated_piece_round_trips_through_a_midi_file(tmp_path):
    chords = np.asarray(piece(random.Random(4)))
    (tmp_path / "p.mid").write_bytes(chords_to_midi(chords))
    parsed = parse_piece((tmp_path / "p.mid").read_bytes(), str(tmp_path / "p.mid"))
    assert parsed["error"] == "" and parsed["chords"] == chords.tolist()


def test_one_track_midi_sorts_each_step_high_to_low():
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    for pitch in (60, 72, 48, 67):  # a chord, in no particular order, one quarter note long
        track.append(mido.Message("note_on", note=pitch, velocity=64, time=0))
    track.append(mido.Message("note_off", note=60, velocity=0, time=480))
    for pitch in (72, 48, 67):
        track.append(mido.Message("note_off", note=pitch, velocity=0, time=0))
    midi.tracks.append(track)
    out = io.BytesIO()
    midi.save(file=out)
    np.testing.assert_array_equal(midi_to_chords(out.getvalue()), [[72, 67, 60, 48]] * 4)


def test_midi_with_five_notes_at_once_is_refused():
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    for pitch in (48, 55, 60, 64, 67):
        track.append(mido.Message("note_on", note=pitch, velocity=64, time=0))
    track.append(mido.Message("note_off", note=48, velocity=0, time=240))
    midi.tracks.append(track)
    out = io.BytesIO()
    midi.save(file=out)
    with pytest.raises(ValueError, match="5 notes sound at once at step 0"):
        midi_to_chords(out.getvalue())


# -- windows ------------------------------------------------------------------------------


def test_protocol_windows_are_the_books():
    chords = random_chords(0, steps=64)
    rows = piece_rows(chords, PROTOCOL, score_first=False)
    assert [(start, len(r)) for start, r in rows] == [(0, 33), (16, 33)]  # only full windows
    np.testing.assert_array_equal(rows[1][1], chords[16:49])
    labels = labels_of(rows[0][1], score_first=False)
    assert labels[0, 0] == -1 and (labels.reshape(-1)[1:] >= 0).all()  # 131 of 132 notes scored
    assert piece_rows(chords[:30], PROTOCOL, score_first=False) == []  # too short for a window: none
    assert [len(r) for _, r in piece_rows(chords[:30], PROTOCOL, score_first=True)] == [30]  # training keeps it
    assert [(start, len(r)) for start, r in piece_rows(chords, WHOLE, score_first=False)] == [(0, 64)]


def test_transposition_keeps_rests_and_range():
    chords = np.array([[120, 60, 0, 40]])
    np.testing.assert_array_equal(transposed(chords, 2), [[122, 62, 0, 42]])
    assert transposed(chords, 8) is None  # 128 is not a pitch
    rows = piece_rows(np.repeat(chords, 40, 0), Protocol(window=32, shift=16), transpose=8, score_first=True)
    assert len(rows) == 8 + 8  # -8..+7 fit; +8 leaves the range
    assert [start for start, _ in windows(np.zeros((40, 4)), 33, 3)] == [0, 3, 6]


# -- model ------------------------------------------------------------------------------


def test_each_voice_reads_earlier_chords_and_the_voices_above_it():
    model = build_chorale_model(SMALL, seed=0).eval()
    chords = torch.from_numpy(random_chords(1, steps=6))[None]
    changed = chords.clone()
    changed[0, 3, 1] = 50 if changed[0, 3, 1] != 50 else 51
    lengths, start = torch.tensor([6]), torch.tensor([0])
    moved = (model((chords, start), lengths) - model((changed, start), lengths)).abs().amax(-1)[0]
    assert (moved[:3] == 0).all()  # the past does not see the future
    assert (moved[3, :2] == 0).all() and (moved[3, 2:] > 0).all()  # voices below the alto see it
    assert (moved[4:] > 0).all()  # every voice of later chords sees it


def test_each_step_knows_where_it_falls_in_the_bar():
    """A row's start shifts every step's bar position: a window cut at step 16 reads as
    the same row at 0, one cut at step 4 does not; without positions it never matters."""
    chords, lengths = torch.from_numpy(random_chords(5, steps=8))[None], torch.tensor([8])
    model = build_chorale_model(SMALL, seed=0).eval()

    def at(start, m=model):
        return m((chords, torch.tensor([start])), lengths)

    assert torch.equal(at(0), at(16)) and not torch.allclose(at(0), at(4))
    plain = build_chorale_model(ModelConfig(**{**vars(SMALL), "beat_positions": 0}), seed=0).eval()
    assert torch.equal(at(0, plain), at(4, plain))


def test_sampling_is_seeded_per_row_and_matches_the_model():
    model = build_chorale_model(SMALL, seed=0).eval()
    primer = torch.from_numpy(random_chords(2, steps=5))[None]

    def sample(rows, seed, **options):
        return model.sample(primer.expand(rows, -1, -1), 6, generators=[torch.Generator().manual_seed(seed)
                                                                          for _ in range(rows)], **options)

    one = sample(1, 7, temperature=1.0)
    assert torch.equal(one, sample(1, 7, temperature=1.0))
    assert torch.equal(sample(3, 7, temperature=1.0), one.expand(3, -1, -1))  # batch-mates change nothing
    assert not torch.equal(one, sample(1, 8, temperature=1.0))
    greedy = sample(1, 0, temperature=0.0)
    logits = model((torch.cat([primer, greedy], 1), torch.tensor([0])), torch.tensor([11]))
    assert torch.equal(logits[:, 5:].argmax(-1), greedy)  # voice by voice, as teacher forcing scores it
    assert sample(1, 0, temperature=1.0).max() < PITCHES and START == PITCHES


def test_top_k_draws_only_among_the_best():
    logits = torch.tensor([[0.0, 5.0, 4.0, 3.0, -1.0]] * 200)
    drawn = pick(logits, 5.0, 2, [torch.Generator().manual_seed(i) for i in range(200)])
    assert set(drawn.tolist()) == {1, 2}
    assert pick(logits[:1], 0.0, 0, None).tolist() == [1]


# -- the application ---------------------------------------------------------------------


def music_recipe(**data):
    return recipe_from_dict({"name": "m", "app": "music", "data": {"format": "chorales", **data},
                             "model": {"kind": "music", "residual_from": 1}})


def test_recipe_checks():
    recipe = music_recipe(window=64, transpose=3)
    assert apps.check_recipe(recipe).name == "music"
    with pytest.raises(ConfigError, match="batching.max_tokens .* at least 65 chords"):
        apps.check_recipe(recipe_from_dict({"app": "music", "data": {"window": 64},
                                            "model": {"kind": "music", "residual_from": 1},
                                            "batching": {"max_tokens": 40, "max_batch_size": 4}}))
    with pytest.raises(ConfigError, match="data.transpose is not read by the text_classify application"):
        apps.check_recipe(recipe_from_dict({"data": {"transpose": 2}}))
    with pytest.raises(ConfigError, match="data.window must be >= 0"):
        music_recipe(window=-1)


@pytest.mark.parametrize("primer, error", [
    ([[74, 70, 65]], "primer chord 0: 3 values"),
    ([[74, 70, 65, 58], [74, 70, 65, 200]], "primer chord 1: voice 3 pitch 200 is out of range"),
    ("C major", "a primer is a list of chords"),
    ([7], "primer chord 0: 1 values"),
])
def test_bad_primer_names_the_chord(primer, error):
    with pytest.raises(DataError, match=error):
        primer_chords(primer, "primer")


@pytest.fixture(scope="module")
def music_checkpoint(tmp_path_factory):
    from pipelines.checkpoint import export_inference

    recipe = music_recipe()
    recipe.model = SMALL
    app = apps.app_for(recipe)
    model = app.build(recipe.model, {}, seed=0)
    shards = tmp_path_factory.mktemp("music-train")
    torch.save(model.state_dict(), shards / "model.stage0.pt")
    return export_inference(shards, tmp_path_factory.mktemp("music") / "checkpoint", recipe=recipe, app=app,
                            files={}, meta={"voices": 4, "pitches": 128})


def test_predictor_scores_windows_and_composes(music_checkpoint):
    from pipelines.checkpoint import load_predictor

    predictor = load_predictor(music_checkpoint)
    pieces = [random_chords(3, steps=64), random_chords(4, steps=40)]
    windows_ = predictor.score(pieces, PROTOCOL)
    assert windows_["examples"] == 3 and windows_["notes"] == 3 * 131
    assert predictor.score(pieces, WHOLE)["notes"] == 64 * 4 - 1 + 40 * 4 - 1
    assert windows_["loss"] == pytest.approx(np.log(128), rel=0.2)  # an untrained model: near uniform
    primer = pieces[0][:8].tolist()
    a, b = predictor.predict([primer, []], steps=12, temperature=1.0, seed=5)
    assert len(a["chords"]) == 12 and a["primer_steps"] == 8 and b["primer_steps"] == 0
    np.testing.assert_array_equal(midi_to_chords(base64.b64decode(a["midi_base64"])), primer + a["chords"])
    assert predictor.predict([primer], steps=12, temperature=1.0, seed=5)[0] == a


def test_compose_command_writes_midi_and_roll(music_checkpoint, tmp_path):
    from pipelines.cli import main

    write_chorales(tmp_path / "data", size=2, seed=0)
    primer = sorted((tmp_path / "data" / "train").iterdir())[0]
    args = ["compose", str(music_checkpoint), "--primer", str(primer), "--primer-steps", "8", "--steps", "16",
            "--seed", "1", "--out", str(tmp_path / "a.mid"), "--roll", str(tmp_path / "a.png")]
    assert main(args) == 0
    assert main([*args[:-4], "--out", str(tmp_path / "b.mid")]) == 0
    assert (tmp_path / "a.mid").read_bytes() == (tmp_path / "b.mid").read_bytes()  # same seed, same music
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    chords = midi_to_chords((tmp_path / "a.mid").read_bytes())
    assert len(chords) == 24
    np.testing.assert_array_equal(chords[:8], parse_piece(primer.read_bytes(), str(primer))["chords"][:8])
    (tmp_path / "bad.csv").write_text("60,0,0\n")
    assert main([*args[:2], "--primer", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "c.mid")]) != 0


def test_piano_roll_is_a_png():
    assert piano_roll_png(random_chords(0), primer_steps=8, title="t")[:4] == b"\x89PNG"
    assert piano_roll_png(np.zeros((0, 4), dtype=int))[:4] == b"\x89PNG"


def test_chorales_generator_writes_readable_pieces(tmp_path):
    write_chorales(tmp_path, size=4, seed=1)
    files = sorted(tmp_path.rglob("*.csv"))
    assert [f.parent.name for f in files] == ["train"] * 4 + ["valid"]
    for f in files:
        parsed = parse_piece(f.read_bytes(), str(f))
        assert parsed["error"] == "" and len(parsed["chords"]) >= 33
    assert json.dumps(parse_piece(files[0].read_bytes(), "x.csv")["chords"][0])
