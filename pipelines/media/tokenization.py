"""Subword tokenizers trained with the ``tokenizers`` library on the training split.

Ids 0-3 are reserved: ``[PAD]`` (0, what padding uses), ``[UNK]``, ``[BOS]``, ``[EOS]``.
The tokenizer is saved as ``tokenizer.json`` with every checkpoint; its Metaspace
pre-tokenizer/decoder make ``decode(encode(text))`` give back the normalized text (NFKC,
and lowercased when ``tokenizer.lowercase``: on Multi30k val with ``lowercase: false``
every line comes back exactly, but for one whose no-break space NFKC makes a space).

Translation uses a pair of tokenizers (:class:`TranslationTokenizers`): one trained on
both sides (``tokenizer.joint: true``, saved as ``tokenizer.json``) or one per language
(``source_tokenizer.json`` + ``target_tokenizer.json``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from pipelines.config import TokenizerConfig
from pipelines.errors import DataError

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS]


def train_tokenizer(texts: Iterable[str], config: TokenizerConfig) -> Tokenizer:
    if config.kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        trainer = trainers.BpeTrainer(
            vocab_size=config.vocab_size,
            min_frequency=config.min_frequency,
            special_tokens=SPECIAL_TOKENS,
            show_progress=sys.stderr.isatty(),  # elsewhere its bars are blank lines
        )
    elif config.kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
        trainer = trainers.WordPieceTrainer(
            vocab_size=config.vocab_size,
            min_frequency=config.min_frequency,
            special_tokens=SPECIAL_TOKENS,
            show_progress=sys.stderr.isatty(),  # elsewhere its bars are blank lines
        )
    else:
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
        trainer = trainers.WordLevelTrainer(
            vocab_size=config.vocab_size,
            min_frequency=config.min_frequency,
            special_tokens=SPECIAL_TOKENS,
            show_progress=sys.stderr.isatty(),  # elsewhere its bars are blank lines
        )
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if config.lowercase else [])
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if tokenizer.token_to_id(PAD) != 0:
        raise AssertionError("tokenizers put [PAD] somewhere other than id 0")
    return tokenizer


def load_tokenizer(json_text: str) -> Tokenizer:
    return Tokenizer.from_str(json_text)


def encode_batch(tokenizer: Tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], list[bool]]:
    """Token ids of each text, cut to ``max_length``, and whether each was cut.

    A text that normalizes to nothing becomes ``[UNK]``: every example keeps a step.
    """
    ids = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    truncated = [len(x) > max_length for x in ids]
    return [x[:max_length] if x else [tokenizer.token_to_id(UNK)] for x in ids], truncated


def encode_targets(tokenizer: Tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], list[bool]]:
    """Target ids ``[BOS] y [EOS]`` with ``y`` cut to ``max_length``, and whether each was cut.

    The decoder reads ``[BOS] y`` (teacher forcing) and predicts ``y [EOS]``: both are this
    list minus its last or first id, ``len(y) + 1`` steps each. An empty ``y`` stays empty
    (the model learns to stop at once).
    """
    bos, eos = tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)
    ids = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return [[bos, *x[:max_length], eos] for x in ids], [len(x) > max_length for x in ids]


def decode(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    """Readable text of model output ``ids``: up to the first ``[EOS]``, special tokens dropped.

    ``ids`` is one sequence (a list, a 1-D array or tensor); padding after ``[EOS]`` is ignored.
    """
    eos = tokenizer.token_to_id(EOS)
    kept: list[int] = []
    for i in ids:
        if int(i) == eos:
            break
        kept.append(int(i))
    return tokenizer.decode(kept, skip_special_tokens=True)


SOURCE_TOKENIZER, TARGET_TOKENIZER, JOINT_TOKENIZER = "source_tokenizer.json", "target_tokenizer.json", "tokenizer.json"


@dataclass
class TranslationTokenizers:
    """The source and target tokenizers of a translation model (the same object when joint)."""

    source: Tokenizer
    target: Tokenizer
    joint: bool

    @property
    def vocab_sizes(self) -> tuple[int, int]:
        return self.source.get_vocab_size(), self.target.get_vocab_size()


def train_translation_tokenizers(
    sources: Callable[[], Iterable[str]], targets: Callable[[], Iterable[str]], config: TokenizerConfig,
    both: Callable[[], Iterable[str]] | None = None,
) -> TranslationTokenizers:
    """Train on the training split: one tokenizer on both sides, or one per side.

    ``sources``/``targets`` return a fresh iterator over the texts each time they are
    called (so a side can be streamed from a dataset more than once). ``both``, when
    given, returns every text of both sides in one pass (a joint tokenizer reads the
    split once instead of once a side; BPE and word-level counts do not depend on the
    order, so the tokenizer is the same).
    """
    if config.joint:
        def one_side_then_the_other() -> Iterable[str]:
            yield from sources()
            yield from targets()

        tokenizer = train_tokenizer((both or one_side_then_the_other)(), config)
        return TranslationTokenizers(tokenizer, tokenizer, joint=True)
    return TranslationTokenizers(train_tokenizer(sources(), config), train_tokenizer(targets(), config), joint=False)


def translation_tokenizer_files(tokenizers: TranslationTokenizers) -> dict[str, str]:
    """File name -> JSON text: ``tokenizer.json`` (joint) or ``source_tokenizer.json`` +
    ``target_tokenizer.json``."""
    if tokenizers.joint:
        return {JOINT_TOKENIZER: tokenizers.source.to_str()}
    return {SOURCE_TOKENIZER: tokenizers.source.to_str(), TARGET_TOKENIZER: tokenizers.target.to_str()}


def save_translation_tokenizers(tokenizers: TranslationTokenizers, directory: str | Path) -> list[Path]:
    """Write :func:`translation_tokenizer_files` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = translation_tokenizer_files(tokenizers)
    for name, text in files.items():
        (directory / name).write_text(text)
    return [directory / name for name in files]


def missing_translation_tokenizer(directory: str | Path) -> str | None:
    """What ``directory`` lacks of a translation model's tokenizer files, else None: the
    other half of a per-language pair (they come in pairs), or any tokenizer at all."""
    directory = Path(directory)
    source, target = (directory / SOURCE_TOKENIZER).is_file(), (directory / TARGET_TOKENIZER).is_file()
    if source or target:
        return None if source and target else (TARGET_TOKENIZER if source else SOURCE_TOKENIZER)
    if (directory / JOINT_TOKENIZER).is_file():
        return None
    return f"{JOINT_TOKENIZER}, or {SOURCE_TOKENIZER} and {TARGET_TOKENIZER}"


def load_translation_tokenizers(directory: str | Path) -> TranslationTokenizers:
    """Read what :func:`save_translation_tokenizers` wrote; per-language files win over a joint one."""
    directory = Path(directory)
    missing = missing_translation_tokenizer(directory)
    if missing:
        raise DataError(f"{directory}: no translation tokenizer (missing {missing})")
    source, target, joint = (directory / n for n in (SOURCE_TOKENIZER, TARGET_TOKENIZER, JOINT_TOKENIZER))
    if source.is_file():
        return TranslationTokenizers(
            load_tokenizer(source.read_text()), load_tokenizer(target.read_text()), joint=False
        )
    tokenizer = load_tokenizer(joint.read_text())
    return TranslationTokenizers(tokenizer, tokenizer, joint=True)
