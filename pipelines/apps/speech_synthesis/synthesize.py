"""``rayseq synthesize CHECKPOINT TEXT``: say a text in a speaker's voice, as a WAV file.

    rayseq synthesize CHECKPOINT "seven" --speaker theo --out seven.wav [--seed 0]
                      [--spectrogram seven.png [--reference 7_theo_5.wav ...]]

The text is one or more words the model knows ("four one seven", "417"); its words are
joined by ``synthesis.pause_ms`` of silence. The same checkpoint, text, speaker and seed
give the same audio (the synthesize route's too).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipelines.devices import add_device_argument, checked_device
from pipelines.errors import ConfigError, DataError


def add_synthesize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path,
                        help="a speech synthesis model's inference checkpoint (<run>/checkpoint)")
    parser.add_argument("text", help='words to say, e.g. "seven" or "four one seven"')
    parser.add_argument("--speaker", required=True, help="whose voice: one of the model's speakers")
    parser.add_argument("--out", type=Path, required=True, help="the WAV file to write (16-bit mono)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spectrogram", type=Path, help="also draw the synthesized log-mel spectrogram as a PNG here")
    parser.add_argument("--reference", type=Path, nargs="*", default=[],
                        help="real recordings to draw beside it (same analysis, same colour scale)")
    add_device_argument(parser)


def synthesize_command(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.checkpoint import load_predictor
    from pipelines.media.audio.vocoder import wav_bytes

    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    predictor = load_predictor(args.checkpoint, device=checked_device(args.device))
    if predictor.loaded.app.name != "speech_synthesis":
        raise ConfigError(f"{args.checkpoint}: a {predictor.loaded.app.name} model; synthesize needs a speech "
                          "synthesis model")
    rows = predictor.rows([args.text])
    samples = predictor.synthesize(rows, speaker=args.speaker, seed=args.seed)[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(wav_bytes(samples, predictor.sample_rate))
    summary = {"wav": str(args.out), "words": len(rows[0].words), "speaker": args.speaker, "seed": args.seed,
               "seconds": round(len(samples) / predictor.sample_rate, 3), "sample_rate": predictor.sample_rate}
    if args.spectrogram:
        from pipelines.media.audio.plots import spectrogram_png

        featurizer = predictor.featurizer
        panels = []
        for path in args.reference:
            if not path.is_file():
                raise DataError(f"--reference: file not found: {path}")
            real = featurizer.decode(path.read_bytes(), str(path)).samples
            panels.append((f"real: {path.name}", featurizer.log_mel(real).numpy()))
        panels.append((f"synthesized: {args.text!r}, {args.speaker}, seed {args.seed}",
                       featurizer.log_mel(samples).numpy()))
        args.spectrogram.parent.mkdir(parents=True, exist_ok=True)
        hop_seconds = predictor.audio.hop_length / predictor.sample_rate
        args.spectrogram.write_bytes(spectrogram_png(panels, hop_seconds=hop_seconds))
        summary["spectrogram"] = str(args.spectrogram)
    return summary
