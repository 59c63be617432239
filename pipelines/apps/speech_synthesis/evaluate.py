"""``rayseq eval`` of a speech synthesis checkpoint on a folder of real recordings.

For every (word, speaker) pair with a recording in the folder, the model says the word
in that voice ``synthesis.eval_seeds`` times (seeds 0..n-1); each synthesized recording
is then

- heard by the word classifier (``synthesis.word_classifier``, an audio classifier
  trained on real recordings only): ``intelligibility`` is its accuracy;
- heard by the speaker classifier (``synthesis.speaker_classifier``): ``speaker_accuracy``;
- compared with every real recording of its pair: ``mcd`` is the mean mel-cepstral
  distance under DTW (``pipelines.scoring.mel_distance``), in dB.

Beside them, ``reference`` holds the same figures for the real recordings themselves
(the classifiers' accuracy, and each take's MCD against the other takes of its pair:
how far two real takes are) and for the real recordings passed through the vocoder
(log-mel -> Griffin-Lim: the ceiling the vocoder leaves the model). ``pairs`` breaks the
figures down by pair. With ``--predictions``, one JSON line per synthesized recording
and the WAVs themselves in ``<predictions stem>_wavs/``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import ConfigError


def _judge(path: str, role: str, device: str):
    """The audio classifier at ``path`` (None when unset)."""
    from pipelines.checkpoint import load_predictor

    if not path:
        return None
    judge = load_predictor(Path(path), device=device)
    if judge.loaded.app.name != "audio_classify":
        raise ConfigError(f"synthesis.{role}_classifier: {path} is a {judge.loaded.app.name} model; "
                          "it must be an audio classifier (app audio_classify) trained on real recordings")
    return judge


def _heard(judge, wavs: list[bytes], names: list[str]) -> list[str] | None:
    if judge is None:
        return None
    return [p["label"] for p in judge.predict(list(zip(names, wavs)))]


def _accuracy(heard: list[str] | None, truth: list[str]) -> float | None:
    if heard is None:
        return None
    return float(np.mean([h == t for h, t in zip(heard, truth)]))


def _mcd_to(log_mel: np.ndarray, references: list[np.ndarray]) -> float:
    from pipelines.scoring.mel_distance import mcd

    return float(np.mean([mcd(log_mel, ref) for ref in references]))


def evaluate(checkpoint: Path, recipe, predictions: Path | None = None, *, device: str = "cpu") -> dict[str, Any]:
    from pipelines.apps.speech_synthesis.data import evaluation_records, featurized
    from pipelines.checkpoint import load_predictor
    from pipelines.media.audio.vocoder import wav_bytes

    synthesis = recipe.synthesis
    model = load_predictor(checkpoint, device=device)
    judges = {"word": _judge(synthesis.word_classifier, "word", device),
              "speaker": _judge(synthesis.speaker_classifier, "speaker", device)}
    split = featurized(evaluation_records(recipe), recipe.data.audio, "eval", recipe.data.on_bad_record)
    real = sorted(split.dataset.iter_rows(), key=lambda r: r["origin"])
    featurizer = model.featurizer  # the checkpoint's analysis; the eval recipe's is the same
    by_pair: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
    for row in real:
        by_pair[row["label"], row["speaker"]].append(np.asarray(row["features"], dtype=np.float32))
    pairs = sorted(by_pair)
    for word, speaker in pairs:
        model.parse(word, f"data: recordings of {word!r}")  # a word the model does not know: DataError
        model.speaker_id(speaker)

    # the model's recordings: every pair, every seed
    seeds = list(range(synthesis.eval_seeds))
    jobs = [(pair, seed) for pair in pairs for seed in seeds]
    rows = [model.parse(word, "data") for (word, _), _ in jobs]
    audio = model.synthesize(rows, speaker=[speaker for (_, speaker), _ in jobs], seed=[seed for _, seed in jobs])
    wavs = [wav_bytes(samples, model.sample_rate) for samples in audio]
    names = [f"{word}_{speaker}_seed{seed}.wav" for (word, speaker), seed in jobs]
    heard = {role: _heard(judge, wavs, names) for role, judge in judges.items()}
    distances = [_mcd_to(featurizer.log_mel(samples).numpy(), by_pair[pair]) for samples, (pair, _) in zip(audio, jobs)]
    words, speakers = [word for (word, _), _ in jobs], [speaker for (_, speaker), _ in jobs]

    report: dict[str, Any] = {
        "intelligibility": _accuracy(heard["word"], words),
        "speaker_accuracy": _accuracy(heard["speaker"], speakers),
        "mcd": float(np.mean(distances)),
        "examples": len(jobs),
        "pairs_scored": len(pairs),
        "seeds": len(seeds),
        "judges": {"word_classifier": synthesis.word_classifier or None,
                   "speaker_classifier": synthesis.speaker_classifier or None},
        "reference": _reference(real, by_pair, judges, model, featurizer),
        "pairs": _per_pair(jobs, heard, distances),
    }
    if predictions is not None:
        _write_predictions(predictions, jobs, names, wavs, heard, distances, audio, model.sample_rate)
        report["predictions"] = str(predictions)
    return report


def _reference(real: list[dict[str, Any]], by_pair, judges, model, featurizer) -> dict[str, Any]:
    """The judges on the real recordings, as recorded and through the vocoder, and the
    MCD of each real take to the other takes of its pair."""
    from pipelines.media.audio.vocoder import wav_bytes

    names = [Path(r["origin"]).name for r in real]
    truth = {"word": [r["label"] for r in real], "speaker": [r["speaker"] for r in real]}
    recorded = [Path(r["path"]).read_bytes() for r in real]
    vocoded_audio = [model.vocoder(np.asarray(r["features"], dtype=np.float32)) for r in real]
    vocoded = [wav_bytes(samples, model.sample_rate) for samples in vocoded_audio]
    out: dict[str, Any] = {"recordings": len(real)}
    for label, wavs in (("real", recorded), ("vocoded", vocoded)):
        out[label] = {f"{role}_accuracy": _accuracy(_heard(judge, wavs, names), truth[role])
                      for role, judge in judges.items()}
    takes = [_mcd_to(take, recordings[:k] + recordings[k + 1:])
             for recordings in by_pair.values() if len(recordings) > 1 for k, take in enumerate(recordings)]
    out["real"]["mcd"] = float(np.mean(takes)) if takes else None
    out["vocoded"]["mcd"] = float(np.mean([_mcd_to(featurizer.log_mel(samples).numpy(),
                                                   [np.asarray(row["features"], dtype=np.float32)])
                                           for samples, row in zip(vocoded_audio, real)]))
    return out


def _per_pair(jobs, heard, distances) -> dict[str, dict[str, Any]]:
    grouped: dict[str, list[int]] = defaultdict(list)
    for i, ((word, speaker), _) in enumerate(jobs):
        grouped[f"{word}/{speaker}"].append(i)
    out = {}
    for key, members in grouped.items():
        word, speaker = key.split("/", 1)
        out[key] = {
            "intelligibility": None if heard["word"] is None
            else float(np.mean([heard["word"][i] == word for i in members])),
            "speaker_accuracy": None if heard["speaker"] is None
            else float(np.mean([heard["speaker"][i] == speaker for i in members])),
            "mcd": round(float(np.mean([distances[i] for i in members])), 3),
            "examples": len(members),
        }
    return out


def _write_predictions(predictions: Path, jobs, names, wavs, heard, distances, audio, rate: int) -> None:
    folder = predictions.with_name(predictions.stem + "_wavs")
    folder.mkdir(parents=True, exist_ok=True)
    with predictions.open("w", encoding="utf-8") as out:
        for i, (((word, speaker), seed), name, wav) in enumerate(zip(jobs, names, wavs)):
            (folder / name).write_bytes(wav)
            out.write(json.dumps({
                "word": word, "speaker": speaker, "seed": seed, "wav": str(folder / name),
                "seconds": round(len(audio[i]) / rate, 3),
                "heard_word": None if heard["word"] is None else heard["word"][i],
                "heard_speaker": None if heard["speaker"] is None else heard["speaker"][i],
                "mcd": round(distances[i], 3)}) + "\n")
