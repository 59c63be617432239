"""The ``dialogues`` dataset (demo, tests): two-person dialogues and one-sentence
summaries in DialogSum's form (``{"dialogue", "summary"}`` JSON lines, turns
``#Person1#: ...`` separated by newlines)::

    #Person1#: Hello, this is Belomar. Would you like to come to the museum on Friday?
    #Person2#: How are you? ... I'd love to. See you on Friday.
    summary: Belomar invites #Person2# to the museum on Friday, and #Person2# agrees.

What summarization takes, small: the facts are scattered over turns among small talk
(attention has to find them), the summary is much shorter than the dialogue and in
other words (it is written, not extracted), and the names are made up from syllables,
drawn afresh for every dialogue: almost none is frequent enough to be in the
vocabulary, so a summary gets them right only by copying them from its dialogue (the
pointer-generator's reason to exist). Validation dialogues draw their own names.

``rayseq generate dialogues OUT_DIR [--size N] [--seed S]`` writes
``OUT_DIR/train.jsonl`` and ``OUT_DIR/valid.jsonl`` (``size // 4`` dialogues).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from pipelines.apps.datasets import text_dataset

SYLLABLES = ["ba", "lo", "mar", "ti", "ra", "vek", "sen", "du", "qui", "zo", "fel", "an", "ri", "go", "hul", "mi",
             "sto", "per", "ka", "nev", "il", "os", "tra", "wen", "jor", "ul", "bri", "cas", "de", "yo"]
PLACES = ["museum", "cinema", "park", "library", "concert", "restaurant", "beach", "theater", "market", "gym"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
ITEMS = ["lamp", "jacket", "bicycle", "camera", "chair", "watch", "kettle", "guitar", "printer", "sofa"]
SMALL_TALK = [
    ("How are you?", "Fine, thanks. And you?"),
    ("The weather is lovely today.", "Yes, it is much warmer than last week."),
    ("Did you watch the game last night?", "No, I was too tired."),
    ("I have been so busy at work.", "Me too, it never stops."),
    ("Have you had lunch yet?", "Not yet, I will eat later."),
]


def made_up_name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _with_small_talk(turns: list[tuple[int, str]], rng: random.Random) -> list[tuple[int, str]]:
    """Insert 0-2 small-talk exchanges after the first turn."""
    for ask, answer in rng.sample(SMALL_TALK, rng.randint(0, 2)):
        at = rng.randint(1, len(turns) - 1)
        turns[at:at] = [(1, ask), (2, answer)]
    return turns


def invitation(rng: random.Random) -> tuple[list[tuple[int, str]], str]:
    host, place, day = made_up_name(rng), rng.choice(PLACES), rng.choice(DAYS)
    yes = rng.random() < 0.5
    turns = [(1, f"Hello, this is {host}. Would you like to come to the {place} on {day}?"),
             (2, f"I'd love to. See you on {day}." if yes else f"Sorry, I can't. I have to work on {day}.")]
    verdict = "agrees" if yes else "declines because #Person2# has to work"
    return turns, f"{host} invites #Person2# to the {place} on {day}, and #Person2# {verdict}."


def purchase(rng: random.Random) -> tuple[list[tuple[int, str]], str]:
    seller, item, price = made_up_name(rng), rng.choice(ITEMS), rng.choice([20, 35, 50, 80, 120, 200])
    offer = price - rng.choice([5, 10, 15])
    deal = rng.random() < 0.5
    turns = [(1, f"Good morning, I'm {seller}. Are you interested in this {item}? It is {price} dollars."),
             (2, f"It looks nice. Would you take {offer} dollars?"),
             (1, f"All right, {offer} dollars it is." if deal else f"Sorry, {price} dollars is my last price.")]
    outcome = f"sells it for {offer} dollars" if deal else "refuses to lower the price"
    return turns, f"{seller} offers #Person2# a {item} for {price} dollars and {outcome}."


def appointment(rng: random.Random) -> tuple[list[tuple[int, str]], str]:
    doctor, patient, day = made_up_name(rng), made_up_name(rng), rng.choice(DAYS)
    hour = rng.randint(8, 17)
    turns = [(2, f"Hello, my name is {patient}. I need to see Doctor {doctor}."),
             (1, f"Doctor {doctor} is free on {day} at {hour} o'clock. Does that suit you?"),
             (2, f"Yes, {day} at {hour} is fine. Thank you.")]
    return turns, f"{patient} makes an appointment with Doctor {doctor} on {day} at {hour} o'clock."


SCENES = (invitation, purchase, appointment)


def dialogue_record(rng: random.Random) -> dict[str, str]:
    turns, summary = rng.choice(SCENES)(rng)
    turns = _with_small_talk(turns, rng)
    return {"dialogue": "\n".join(f"#Person{who}#: {text}" for who, text in turns), "summary": summary}


def write_dialogues(out_dir: str | Path, *, size: int, seed: int) -> Path:
    """Write ``train.jsonl`` (``size`` dialogues) and ``valid.jsonl`` (``size // 4``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for name, count in (("train", size), ("valid", max(size // 4, 1))):
        lines = [json.dumps(dialogue_record(rng)) + "\n" for _ in range(count)]
        (out / f"{name}.jsonl").write_text("".join(lines))
    return out


DIALOGUES = text_dataset("dialogues", "synthetic two-person dialogues with one-sentence summaries (jsonl)",
                         write_dialogues)
