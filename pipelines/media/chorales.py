"""Four-voice music as chords: reading CSV and MIDI, writing MIDI, windows.

A piece is a ``(T, 4)`` array of MIDI pitches, one row per 16th-note step, voices from
the highest (soprano) to the lowest (bass); 0 is a rest. That is the JSB chorales' CSV
layout (``note0,note1,note2,note3``, one row a step)::

    CSV   header ``note0,note1,note2,note3`` (optional), then 4 integers 0..127 a row
    MIDI  any type-0/1 file: notes quantized to 16ths (onset and end rounded to the
          nearest step); the voices are the file's four note-carrying tracks or channels
          in file order (soprano first, as written here), or, without exactly four, the
          sounding notes of each step sorted high to low (at most four may sound at once)

A held note is its pitch repeated over its steps, so writing MIDI merges repeats into one
note per voice and reading it back gives the same chords (:func:`chords_to_midi`,
:func:`midi_to_chords`). A bad row, pitch or file is a record error naming the file and
line (CSV) or what is wrong (MIDI).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

VOICES = 4
HIGHEST = 127
STEPS_PER_BEAT = 4
"""16th-note steps per quarter note."""
TICKS_PER_BEAT = 480
DEFAULT_TEMPO_BPM = 100.0
MIDI_SUFFIXES = (".mid", ".midi")


def check_chord(values: list[Any], where: str) -> str:
    """Why ``values`` is not a chord (4 integer pitches in 0..127), else ``""``."""
    if len(values) != VOICES:
        return f"{where}: {len(values)} values, expected {VOICES} pitches (one per voice)"
    for v, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            return f"{where}: voice {v} is {value!r}, not an integer MIDI pitch"
        if not 0 <= value <= HIGHEST:
            return f"{where}: voice {v} pitch {value} is out of range (0 = rest, 1..{HIGHEST})"
    return ""


def parse_csv(text: str, name: str) -> dict[str, Any]:
    """One piece from CSV text: ``{chords, origin, error}`` (``origin``: the file;
    ``error`` names its first bad line)."""
    chords: list[list[int]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or (number == 1 and all(f.strip()[:1].isalpha() for f in line.split(","))):
            continue  # blank lines and the header
        where = f"line {number}"
        try:
            values = [int(v) for v in line.split(",")]
        except ValueError:
            return _bad(name, f"{where}: {line[:60]!r} is not {VOICES} comma-separated integers")
        problem = check_chord(values, where)
        if problem:
            return _bad(name, problem)
        chords.append(values)
    if not chords:
        return _bad(name, "no chords (a header at most)")
    return {"chords": chords, "origin": name, "error": ""}


def _bad(name: str, error: str) -> dict[str, Any]:
    return {"chords": [], "origin": name, "error": error}


def parse_piece(raw: bytes, name: str) -> dict[str, Any]:
    """A CSV or MIDI file (by its suffix) as a piece record."""
    if not name.lower().endswith((".csv", *MIDI_SUFFIXES)):
        return _bad(name, "not a piece: chorale files are .csv (4 pitches a row) or .mid/.midi")
    if name.lower().endswith(MIDI_SUFFIXES):
        try:
            chords = midi_to_chords(raw)
        except ValueError as exc:
            return _bad(name, str(exc))
        return {"chords": chords.tolist(), "origin": name, "error": ""}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _bad(name, f"byte {exc.start} is not UTF-8 (a CSV of pitches, or a .mid file)")
    return parse_csv(text, name)


# ----------------------------------------------------------------------------- MIDI


def chords_to_midi(chords: np.ndarray | list, *, tempo_bpm: float = DEFAULT_TEMPO_BPM, program: int = 52) -> bytes:
    """A type-1 MIDI file: a tempo track, then one track (and channel) per voice, soprano
    first; repeated pitches of a voice are one held note. ``program``: General MIDI
    instrument of every voice (52: choir aahs)."""
    import mido

    chords = np.asarray(chords, dtype=np.int64).reshape(-1, VOICES)
    step = TICKS_PER_BEAT // STEPS_PER_BEAT
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    meta = mido.MidiTrack()
    meta.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0))
    meta.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    meta.append(mido.MetaMessage("end_of_track", time=len(chords) * step))
    midi.tracks.append(meta)
    for v in range(VOICES):
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=("soprano", "alto", "tenor", "bass")[v], time=0))
        track.append(mido.Message("program_change", channel=v, program=program, time=0))
        now = 0  # tick of the last event written
        for start, end, pitch in _held_notes(chords[:, v]):
            track.append(mido.Message("note_on", channel=v, note=pitch, velocity=80, time=start * step - now))
            track.append(mido.Message("note_off", channel=v, note=pitch, velocity=0, time=(end - start) * step))
            now = end * step
        track.append(mido.MetaMessage("end_of_track", time=len(chords) * step - now))
        midi.tracks.append(track)
    out = io.BytesIO()
    midi.save(file=out)
    return out.getvalue()


def _held_notes(voice: np.ndarray) -> list[tuple[int, int, int]]:
    """``(start step, end step, pitch)`` of each run of one non-rest pitch."""
    notes, start = [], 0
    for t in range(1, len(voice) + 1):
        if t == len(voice) or voice[t] != voice[start]:
            if voice[start] > 0:
                notes.append((start, t, int(voice[start])))
            start = t
    return notes


def midi_to_chords(raw: bytes) -> np.ndarray:
    """The ``(T, 4)`` chords of a MIDI file (module docstring); ValueError says why not."""
    import mido

    try:
        midi = mido.MidiFile(file=io.BytesIO(raw))
    except Exception as exc:  # noqa: BLE001 - mido raises many kinds for a broken file
        raise ValueError(f"not a readable MIDI file ({type(exc).__name__}: {exc})") from None
    if midi.type == 2:
        raise ValueError("MIDI type 2 (independent sequences) is not one piece")
    ticks_per_step = midi.ticks_per_beat / STEPS_PER_BEAT
    groups: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    end_tick = 0
    for t, track in enumerate(midi.tracks):
        tick, sounding = 0, {}
        for message in track:
            tick += message.time
            if message.type == "note_on" and message.velocity > 0:
                sounding[message.channel, message.note] = tick
            elif message.type in ("note_off", "note_on"):
                start = sounding.pop((message.channel, message.note), None)
                if start is not None:
                    groups.setdefault((t, message.channel), []).append((start, tick, message.note))
        for (channel, note), start in sounding.items():  # never released: held to the track's end
            groups.setdefault((t, channel), []).append((start, tick, note))
        end_tick = max(end_tick, tick)
    if not groups:
        raise ValueError("no notes")
    steps = max(1, round(end_tick / ticks_per_step))

    def quantized(notes):
        for start, end, pitch in notes:
            a, b = round(start / ticks_per_step), round(end / ticks_per_step)
            if b > a:
                yield a, min(b, steps), pitch

    chords = np.zeros((steps, VOICES), dtype=np.int64)
    if len(groups) == VOICES:
        for v, notes in enumerate(groups[key] for key in sorted(groups)):
            for a, b, pitch in quantized(notes):
                chords[a:b, v] = np.maximum(chords[a:b, v], pitch)
        return chords
    sounding_at: list[list[int]] = [[] for _ in range(steps)]
    for notes in groups.values():
        for a, b, pitch in quantized(notes):
            for s in range(a, b):
                sounding_at[s].append(pitch)
    for s, pitches in enumerate(sounding_at):
        pitches = sorted(set(pitches), reverse=True)
        if len(pitches) > VOICES:
            raise ValueError(f"{len(pitches)} notes sound at once at step {s} (beat {s / STEPS_PER_BEAT + 1:g}); "
                             f"a piece has {VOICES} voices")
        chords[s, : len(pitches)] = pitches
    return chords


# ----------------------------------------------------------------------------- windows


def windows(chords: np.ndarray, size: int, shift: int) -> list[tuple[int, np.ndarray]]:
    """``(start, window)`` of the full windows of ``size`` steps starting every ``shift``
    steps (a piece shorter than ``size`` gives none), as the Hands-On ML book cuts chorales."""
    return [(s, chords[s : s + size]) for s in range(0, len(chords) - size + 1, shift)]


def transposed(chords: np.ndarray, semitones: int) -> np.ndarray | None:
    """``chords`` moved by ``semitones`` (rests stay rests), or None when a pitch would
    leave 1..127."""
    notes = chords > 0
    moved = np.where(notes, chords + semitones, 0)
    if notes.any() and (moved[notes].min() < 1 or moved[notes].max() > HIGHEST):
        return None
    return moved


# ----------------------------------------------------------------------------- piano roll

VOICE_NAMES = ("soprano", "alto", "tenor", "bass")
VOICE_COLORS = ("#d62728", "#2ca02c", "#1f77b4", "#9467bd")


def piano_roll_png(chords: np.ndarray | list, *, primer_steps: int = 0, title: str = "") -> bytes:
    """A piano roll of ``chords`` as PNG bytes: a bar per held note, a colour per voice,
    time in bars of 4/4 (16 steps), a line where the primer ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chords = np.asarray(chords, dtype=np.int64).reshape(-1, VOICES)
    steps = max(len(chords), 1)
    fig, ax = plt.subplots(figsize=(min(max(steps / 16, 6), 24), 4.5), dpi=100)
    for v in range(VOICES):
        notes = _held_notes(chords[:, v])
        for start, end, pitch in notes:
            ax.broken_barh([(start, end - start)], (pitch - 0.4, 0.8), color=VOICE_COLORS[v])
        ax.plot([], [], color=VOICE_COLORS[v], linewidth=6, label=VOICE_NAMES[v])
    sounding = chords[chords > 0]
    low, high = (int(sounding.min()), int(sounding.max())) if sounding.size else (48, 72)
    ax.set_ylim(low - 2, high + 2)
    ax.set_xlim(0, steps)
    ax.set_xticks(range(0, steps + 1, 16), [str(b + 1) for b in range(steps // 16 + 1)])
    cs = [p for p in range(low - 2, high + 3) if p % 12 == 0]
    ax.set_yticks(cs, [f"C{p // 12 - 1}" for p in cs])
    ax.grid(axis="x", alpha=0.3)
    if primer_steps:
        ax.axvline(primer_steps, color="black", linestyle="--", linewidth=1)
        ax.text(primer_steps, high + 1.5, " primer | sampled", va="top", fontsize=8)
    ax.set_xlabel("bar (16 steps of a 16th note)")
    ax.set_ylabel("pitch")
    ax.legend(loc="lower right", fontsize=7, ncol=4)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()
