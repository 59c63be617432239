"""Subword tokenizers trained with the ``tokenizers`` library on the training split.

Ids 0-3 are reserved: ``[PAD]`` (0, what padding uses), ``[UNK]``, ``[BOS]``, ``[EOS]``.
The tokenizer is saved as ``tokenizer.json`` with every checkpoint; its Metaspace
pre-tokenizer/decoder make ``decode(encode(text))`` give back the normalized text.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from pipelines.config import TokenizerConfig

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS]


def train_tokenizer(texts: Iterable[str], config: TokenizerConfig) -> Tokenizer:
    if config.kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        trainer = trainers.BpeTrainer(
            vocab_size=config.vocab_size,
            min_frequency=config.min_frequency,
            special_tokens=SPECIAL_TOKENS,
        )
    elif config.kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
        trainer = trainers.WordPieceTrainer(
            vocab_size=config.vocab_size,
            min_frequency=config.min_frequency,
            special_tokens=SPECIAL_TOKENS,
        )
    else:
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
        trainer = trainers.WordLevelTrainer(
            vocab_size=config.vocab_size,
            min_frequency=config.min_frequency,
            special_tokens=SPECIAL_TOKENS,
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
