"""Generated chorales against Bach's: the statistics of ``pipelines.scoring.music``.

    python bench/music.py CHECKPOINT                       # JSB: writes bench/results/music.json
    python bench/music.py CHECKPOINT --quick --data DIR --out /tmp/m.json   # smoke run (writes only with --out)

Reference: the test chorales of ``--data`` (JSB: 77 pieces), cut to what each row
generates, so that length never tells real from generated; voice ranges: its training
chorales. Rows of the table::

    bach (validation)   the validation chorales' steps ``primer..primer+steps`` against the
                        test chorales' same steps: what "like Bach" scores
    primed              per test chorale, its first ``--primer-steps`` chords (one bar)
                        continued by ``--steps`` sampled chords; the sampled part against
                        what Bach wrote there (the test chorales' steps ``primer..primer+steps``)
    from nothing        as many pieces of ``--steps`` chords sampled from the start state
                        (seeds ``seed..seed+n-1``) against the test chorales' first ``steps``

Each sampled row draws from its own generator (``--seed``, or ``seed + i`` from nothing),
so a rerun gives the same music. ``--sample DIR`` writes the first primed piece (primer,
then continuation) as ``chorale_sample.mid`` and ``chorale_sample.png`` (docs/apps/music.md shows them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.checkpoint import load_predictor  # noqa: E402
from pipelines.media.chorales import chords_to_midi, parse_piece, piano_roll_png  # noqa: E402
from pipelines.scoring.music import compare, voice_ranges  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def read_split(folder: Path) -> list[np.ndarray]:
    pieces = []
    for path in sorted(folder.glob("*.csv")):
        piece = parse_piece(path.read_bytes(), str(path))
        if piece["error"]:
            raise SystemExit(f"{path}: {piece['error']}")
        pieces.append(np.asarray(piece["chords"], dtype=np.int64))
    if not pieces:
        raise SystemExit(f"{folder}: no chorale CSVs")
    return pieces


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "jsb_chorales",
                        help="a folder with train/, valid/ and test/ chorale CSVs (default: the shared JSB data)")
    parser.add_argument("--reference", default="test", help="the split generated music is compared with")
    parser.add_argument("--primer-steps", type=int, default=16)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 pieces of 32 steps; writes only with --out")
    parser.add_argument("--out", type=Path, default=None,
                        help="report JSON (default bench/results/music.json; none with --quick)")
    parser.add_argument("--sample", type=Path, help="write chorale_sample.mid/.png of the first primed piece here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.steps = min(args.steps, 32)
    out = args.out if args.out is not None else (None if args.quick else ROOT / "bench" / "results" / "music.json")

    train, valid = read_split(args.data / "train"), read_split(args.data / "valid")
    reference = read_split(args.data / args.reference)
    if args.quick:
        reference, valid = reference[:8], valid[:8]
    ranges = voice_ranges(train)
    predictor = load_predictor(args.checkpoint)
    from pipelines.apps.music.predictor import Primer

    options = {"steps": args.steps, "temperature": args.temperature, "top_k": args.top_k}
    started = time.perf_counter()
    primers = [Primer(piece[: args.primer_steps]) for piece in reference]
    primed = predictor.generate(primers, seed=args.seed, **options)
    empty = np.zeros((0, 4), dtype=np.int64)
    unprimed = predictor.generate([Primer(empty)] * len(reference),
                                  seed=[args.seed + i for i in range(len(reference))], **options)
    sampling_s = time.perf_counter() - started
    after_primer = [piece[args.primer_steps : args.primer_steps + args.steps] for piece in reference]
    opening = [piece[: args.steps] for piece in reference]
    rows = {"bach (validation)": compare([p[args.primer_steps : args.primer_steps + args.steps] for p in valid],
                                         after_primer, ranges),
            "primed": compare(primed, after_primer, ranges),
            "from nothing": compare(unprimed, opening, ranges)}
    print(f"{'':20} {'pieces':>6} {'pc dist':>8} {'in range (S A T B)':>24} {'par. 5ths':>9} {'par. 8ves':>9} "
          f"{'1-NN acc':>8}")
    for name, row in rows.items():
        ranges_ = " ".join(f"{share:.3f}" for share in row["in_range"])
        print(f"{name:20} {row['pieces']:>6} {row['pitch_class_distance']:>8.3f} {ranges_:>24} "
              f"{100 * row['parallels']['fifths']:>8.2f}% {100 * row['parallels']['octaves']:>8.2f}% "
              f"{row['real_or_generated_1nn']:>8.3f}")
    result = {"benchmark": "music", "command": " ".join(["python", "bench/music.py", *(argv or sys.argv[1:])]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": platform.platform(), "checkpoint": str(args.checkpoint), "data": str(args.data),
              "reference": args.reference, "voice_ranges": ranges, "primer_steps": args.primer_steps,
              **options, "seed": args.seed, "sampling_s": round(sampling_s, 2), "quick": args.quick, "rows": rows}
    if args.quick:
        print("note: --quick smoke run (8 pieces of 32 steps): not the benchmark's numbers")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    if args.sample:
        args.sample.mkdir(parents=True, exist_ok=True)
        piece = np.concatenate([primers[0].chords, primed[0]])
        (args.sample / "chorale_sample.mid").write_bytes(chords_to_midi(piece))
        (args.sample / "chorale_sample.png").write_bytes(piano_roll_png(
            piece, primer_steps=len(primers[0].chords),
            title=f"first bar of {args.reference} chorale 0, then {args.steps} sampled chords "
                  f"(temperature {args.temperature:g}, seed {args.seed})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
