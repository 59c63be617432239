"""Recipes: YAML loaded into typed, validated dataclasses.

A recipe is a tree of ``kw_only`` dataclasses; every field is documented where it is
declared and validated in ``__post_init__``. ``--set a.b=c`` overrides any field by its
dotted path; values are parsed as YAML scalars; an unknown key is an error naming it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from models.config import SUBSAMPLING, TAG_SCHEMES, ModelConfig
from pipelines import apps
from pipelines.errors import ConfigError

PRECISIONS = ("float32", "bf16", "fp16")
"""``train.precision`` values; ``pipelines.precision`` maps them to autocast dtypes."""

@dataclass(kw_only=True)
class GenerateConfig:
    name: str = "sentiment"
    """Built-in generator, one of the applications' (``rayseq generate --help`` lists
    them): ``sentiment`` (templated reviews with negation, labeled-lines),
    ``translation`` (English sentences with a number in words -> German, ``parallel``
    train/valid with languages ``en``/``de``), ``digits`` (synthetic FSDD-style digit
    recordings: ``train/`` and ``valid/`` audio folders) or ``speech`` (spoken digit
    strings joined from the FSDD-style ``recordings``: ``train/`` and ``valid/`` audio
    folders with transcripts, validation from ``valid_takes`` only) or ``video`` (synthetic
    moving-shape MP4 clips, ``train/`` and ``valid/`` video folders with labels and
    captions, validation drawn from seed ``seed + 1``)."""
    size: int = 4000
    """Training examples to generate (validation gets a quarter as many; ``digits``: takes
    per speaker and digit)."""
    seed: int = 0
    """Generator seed: the same seed writes the same files."""
    recordings: str = ""
    """``speech``: the FSDD-style recordings folder (``{digit}_{speaker}_{take}.wav``)."""
    valid_takes: str = "5-9"
    """``speech``: takes (e.g. ``5-9``) the validation utterances are made of; training
    utterances use every other take, so validation audio is never heard in training."""

    def __post_init__(self) -> None:
        if self.size < 10:
            raise ConfigError(f"data.generate.size must be >= 10, got {self.size}")

    def check(self) -> None:
        """The generator exists and can honour these settings (once applications are known:
        a recipe's own ``app:`` module may bring its generator)."""
        known = apps.generators()
        if self.name not in known:
            raise ConfigError(f"data.generate.name: {self.name!r} is not one of {tuple(known)}")
        known[self.name].check(self)


@dataclass(kw_only=True)
class AudioConfig:
    """How ``audio-folder`` recordings become model input (log-mel frames)."""

    sample_rate: int = 16000
    """Every recording (and upload) is resampled to this rate (soxr) before features."""
    n_mels: int = 80
    """Log-mel bands per frame: the model's input width."""
    window_ms: float = 25.0
    """Analysis window (Hann) of one frame."""
    hop_ms: float = 10.0
    """Frame shift: 100 frames per second at 10 ms."""
    max_seconds: float = 20.0
    """Longest recording kept whole; longer ones are cut (and counted), uploads refused."""
    valid_takes: str = ""
    """FSDD-style names ``{label}_{speaker}_{take}`` whose take is in this range (e.g.
    ``5-9``) form the validation split: carved out of the training folder (and kept out of
    training) when ``data.valid`` is empty, else the only files of ``data.valid`` scored."""
    speed_perturb: list[float] = field(default_factory=list)
    """Speed perturbation (Ko et al. 2015), training split only: each training recording is
    featurized once per factor ``f``, resampled to play ``f`` times faster (tempo and
    pitch), e.g. ``[0.9, 1.0, 1.1]`` triples the training set; without ``1.0`` the
    originals are not used. Empty: off. Validation, ``rayseq eval`` and serving never
    perturb."""
    tail_cut_copies: int = 0
    """Truncation augmentation for classifiers, training split only: each training
    recording is also featurized this many times with its end cut off, each copy losing a
    fraction drawn uniformly from ``(0, tail_cut_max]`` (seeded by the file's name, so
    reruns and moved folders cut the same). Teaches a classifier a word whose end was
    clipped (a recording stopped early, a push-to-talk released early), instead of keying
    on its last sound; 0: off. Refused for speech-to-text, whose transcript would no longer
    match."""
    tail_cut_max: float = 0.4
    """Largest fraction of a recording a tail-cut copy loses (at least 30 ms are kept)."""
    label_field: int = 0
    """A folder without a manifest: which ``_``-separated field of a file's name is its
    label, 0 the first (FSDD ``7_theo_23.wav``: 0 the digit, 1 the speaker)."""

    def __post_init__(self) -> None:
        self._check_speed_perturb()
        if isinstance(self.tail_cut_copies, bool) or not isinstance(self.tail_cut_copies, int) \
                or not 0 <= self.tail_cut_copies <= 16:
            raise ConfigError(f"data.audio.tail_cut_copies must be an integer in 0..16, got {self.tail_cut_copies!r}")
        if isinstance(self.tail_cut_max, bool) or not isinstance(self.tail_cut_max, (int, float)) \
                or not 0 < self.tail_cut_max < 1:
            raise ConfigError(f"data.audio.tail_cut_max must be a fraction in (0, 1), got {self.tail_cut_max!r}")
        self.tail_cut_max = float(self.tail_cut_max)
        if isinstance(self.label_field, bool) or not isinstance(self.label_field, int) or self.label_field < 0:
            raise ConfigError(f"data.audio.label_field must be an integer >= 0, got {self.label_field!r}")
        if self.sample_rate < 1000 or self.n_mels < 8:
            raise ConfigError("data.audio.sample_rate must be >= 1000 and n_mels >= 8, "
                              f"got {self.sample_rate}, {self.n_mels}")
        if not 0 < self.hop_ms <= self.window_ms:
            raise ConfigError(f"data.audio: need 0 < hop_ms <= window_ms, got {self.hop_ms}, {self.window_ms}")
        if self.max_seconds <= 0:
            raise ConfigError(f"data.audio.max_seconds must be > 0, got {self.max_seconds}")
        if self.valid_takes:
            from pipelines.media.audio.synthetic import parse_takes

            try:
                parse_takes(self.valid_takes)
            except ValueError as err:
                raise ConfigError(f"data.audio.valid_takes: {err}") from err

    def _check_speed_perturb(self) -> None:
        speeds = self.speed_perturb
        if not isinstance(speeds, (list, tuple)):
            raise ConfigError(f"data.audio.speed_perturb: expected a list of speed factors such as "
                              f"[0.9, 1.0, 1.1] ([] for off), got {speeds!r}")
        for speed in speeds:
            if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0.5 <= speed <= 2.0:
                raise ConfigError(f"data.audio.speed_perturb: each factor must be a number in [0.5, 2.0], "
                                  f"got {speed!r}")
        speeds = [float(s) for s in speeds]
        repeated = sorted({s for s in speeds if speeds.count(s) > 1})
        if repeated:
            raise ConfigError(f"data.audio.speed_perturb: factor {repeated[0]:g} is listed twice in {speeds}")
        self.speed_perturb = speeds

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def window_length(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000))

    def centred_frames(self, samples: int) -> int:
        """STFT frames centred on every hop of ``samples`` samples: ``samples // hop + 1``."""
        return samples // self.hop_length + 1

    def frames_of(self, samples: int) -> int:
        """Feature frames the featurizer gives ``samples`` samples: the centred frames
        padded up to a multiple of the front end's subsampling."""
        return math.ceil(self.centred_frames(samples) / SUBSAMPLING) * SUBSAMPLING

    @property
    def max_frames(self) -> int:
        """Frames of a ``max_seconds`` recording."""
        return self.frames_of(int(self.max_seconds * self.sample_rate))


@dataclass(kw_only=True)
class VideoConfig:
    """How ``video-folder`` clips (MP4 files or folders of frame images) become model
    input: sampled, resized RGB frames ``(T, size, size, 3)`` uint8."""

    size: int = 32
    """Frames are resized to ``size x size`` pixels (the aspect ratio is not kept)."""
    fps: float = 0.0
    """Target frame rate: frames are sampled at this rate from the clip's timestamps
    (0: every ``stride``-th frame). Frame-image folders have no timestamps: ``stride`` only."""
    stride: int = 1
    """Keep every ``stride``-th decoded frame (after ``fps`` sampling, if set)."""
    max_frames: int = 64
    """Frames kept per clip (after sampling): decoding stops there, and longer training
    clips are cut (and counted); uploads with more are refused (413)."""
    max_seconds: float = 60.0
    """Uploads whose container declares a longer duration are refused before decoding (413)."""

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 512:
            raise ConfigError(f"data.video.size must be in 8..512, got {self.size}")
        if self.fps < 0:
            raise ConfigError(f"data.video.fps must be >= 0 (0: every frame), got {self.fps}")
        if self.stride < 1 or self.max_frames < 1:
            raise ConfigError(f"data.video.stride and max_frames must be >= 1, got {self.stride}, {self.max_frames}")
        if self.max_seconds <= 0:
            raise ConfigError(f"data.video.max_seconds must be > 0, got {self.max_seconds}")


@dataclass(kw_only=True)
class ImageConfig:
    """How ``image-folder`` images (and image uploads) become model input: one RGB frame
    ``(1, size, size, 3)`` uint8, so an image is a one-frame sequence to the models."""

    size: int = 64
    """Images are resized to ``size x size`` pixels (the aspect ratio is not kept); a
    multiple of 8, since the frame CNN halves it three times (``models.video``)."""
    max_pixels: int = 4096 * 4096
    """Images with more pixels (width x height, read from the header) are refused before
    decoding: a training image is a bad record, an upload a 413. A few kilobytes of PNG
    can declare gigabytes of pixels."""

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 512 or self.size % 8:
            raise ConfigError(f"data.image.size must be a multiple of 8 in 8..512 (the frame CNN halves it "
                              f"three times), got {self.size}")
        if self.max_pixels < self.size * self.size:
            raise ConfigError(f"data.image.max_pixels must be at least size x size = {self.size * self.size}, "
                              f"got {self.max_pixels}")


TREE_LABELS = ("binary", "fine")
"""``data.tree_labels`` of ``sst-trees`` data: two classes (neutral dropped) or all five."""


@dataclass(kw_only=True)
class DataConfig:
    root: str = ""
    """Folder the ``train``/``valid`` paths are relative to (absolute paths ignore it)."""
    train: str = "train.txt"
    """Training file (or ``hf`` dataset name / ``save_to_disk`` folder; for ``parallel``, the
    prefix: ``train`` means ``train.<source_lang>`` and ``train.<target_lang>``)."""
    valid: str = "valid.txt"
    """Validation file; empty for none."""
    format: str = "auto"
    """A format the application reads (``docs/data-formats.md``; its ``formats``, checked
    with the recipe); ``auto`` picks by extension, ``parallel`` when ``PATH`` does not exist
    but ``PATH.<source_lang>`` does, ``labeled-lines`` otherwise."""
    split: str = "train"
    """``hf`` only: split of ``train`` to read."""
    valid_split: str = "validation"
    """``hf`` only: split used for validation."""
    text_column: str = "text"
    label_column: str = "label"
    source_column: str = "source"
    """seq2seq: source column of csv/tsv/jsonl/parquet/hf data. An ``hf`` dataset without it
    falls back to a column named ``source_lang`` (``en`` in bentrevett/multi30k) or to a
    ``translation`` column of ``{lang: text}`` dicts (the WMT datasets)."""
    target_column: str = "target"
    """seq2seq: target column, with the same fallbacks as ``source_column``."""
    reference_columns: list[str] = field(default_factory=list)
    """summarization, ``rayseq eval`` only: more reference columns of the validation file
    (csv/tsv/jsonl/parquet) beside ``target_column``, e.g. DialogSum's test ``[summary2,
    summary3]``; each summary is scored against all of them (mean and best)."""
    source_lang: str = ""
    """seq2seq: source language code, the suffix of ``parallel`` files (``en`` for ``val.en``)."""
    target_lang: str = ""
    """seq2seq: target language code (``de`` for ``val.de``)."""
    valid_format: str = ""
    """The validation file's format when it differs from ``format`` (SST-2: trees to train
    on, ``labeled-lines`` sentences to validate on); empty: ``format``."""
    valid_fraction: float = 0.0
    """Text classification without a validation file: hold out this fraction of ``train``
    (0 < f < 1), stratified by label and drawn with ``valid_seed``; records that share an
    origin (the phrases of one tree) stay together. Needs ``valid`` empty."""
    valid_seed: int = 0
    """Seed of the ``valid_fraction`` draw: the same seed holds out the same records."""
    label_names: dict[str, str] = field(default_factory=dict)
    """Text classification: the file's labels -> the names the model learns, answers and
    is scored by (TREC: ``{0: DESC, 1: ENTY, ...}``). Part of the data format: every file
    read with this recipe (training, validation, ``rayseq eval``) goes through it; a label
    that is neither a key nor a name is a bad record."""
    tree_labels: str = "binary"
    """``sst-trees``: ``binary`` (neutral nodes dropped; 0-1 -> ``0``, 3-4 -> ``1``) or
    ``fine`` (the five classes ``0``-``4``)."""
    tag_scheme: str = "iob2"
    """Taggers: the scheme of the files' tags, ``iob1`` (the original CoNLL-2003 files),
    ``iob2`` (BIO; Hugging Face's ``conll2003``) or ``iobes``; a sequence it forbids is
    a bad record. Predictions come back in it."""
    tag_column: int = -1
    """``conll`` files: the column holding the tag (0-based; negative counts from the
    end: -1 is the last). Column 0 is the token."""
    window: int = 32
    """Music: training rows are windows of ``window + 1`` chords (the last ``window``
    predicted from those before; the Hands-On ML book's ``window_size``); 0 trains on
    whole pieces. Evaluation keeps the book's 32 either way."""
    window_shift: int = 16
    """Music: steps between the starts of consecutive training windows."""
    transpose: int = 0
    """Music: each training window also moved by every shift in ``-transpose..+transpose``
    semitones that keeps its pitches in MIDI range (data augmentation; 0: none)."""
    on_bad_record: str = "error"
    """``error`` stops at the first bad record (file and line); ``skip`` counts and reports them."""
    max_length: int = 128
    """Tokens kept per example (seq2seq: per source); longer ones are truncated (and counted)."""
    max_target_length: int = 0
    """seq2seq: target tokens kept per example, before ``[BOS]``/``[EOS]`` are added (the
    decoder then runs ``max_target_length + 1`` steps); 0 means ``max_length``."""
    generate: GenerateConfig | None = None
    """When set, the training driver writes this generated dataset into ``root`` first."""
    audio: AudioConfig = field(default_factory=lambda: AudioConfig())
    """``audio-folder`` data: decoding, features and the validation carve-out."""
    video: VideoConfig = field(default_factory=lambda: VideoConfig())
    """``video-folder`` data: frame sampling and size."""
    image: ImageConfig = field(default_factory=lambda: ImageConfig())
    """``image-folder`` data: image size and the largest image read."""

    def __post_init__(self) -> None:
        if self.on_bad_record not in ("error", "skip"):
            raise ConfigError(f"data.on_bad_record: {self.on_bad_record!r} is not 'error' or 'skip'")
        if self.max_length < 1:
            raise ConfigError(f"data.max_length must be >= 1, got {self.max_length}")
        if self.max_target_length < 0:
            raise ConfigError(f"data.max_target_length must be >= 0 (0: data.max_length), got {self.max_target_length}")
        for key in ("source_lang", "target_lang"):
            lang = getattr(self, key)
            if lang and (lang != lang.strip() or "/" in lang or lang.startswith(".")):
                raise ConfigError(f"data.{key}: {lang!r} is not a language code (it becomes a file suffix, e.g. 'en')")
        if self.source_lang and self.source_lang == self.target_lang:
            raise ConfigError(f"data.source_lang and data.target_lang are both {self.source_lang!r}")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ConfigError(f"data.valid_fraction must be in [0, 1), got {self.valid_fraction}")
        if self.valid_fraction and self.valid:
            raise ConfigError(
                f"data.valid_fraction={self.valid_fraction} holds validation out of data.train, but data.valid "
                f"is {self.valid!r} too: set data.valid='' to carve, or valid_fraction=0 to use the file"
            )
        self.label_names = _label_names(self.label_names)
        if self.tag_scheme not in TAG_SCHEMES:
            raise ConfigError(f"data.tag_scheme: {self.tag_scheme!r} is not one of {TAG_SCHEMES}")
        if self.window < 0 or self.window_shift < 1 or not 0 <= self.transpose <= 12:
            raise ConfigError(f"data.window must be >= 0, data.window_shift >= 1 and data.transpose in 0..12; got "
                              f"{self.window}, {self.window_shift} and {self.transpose}")
        if self.tag_column == 0:
            raise ConfigError("data.tag_column: column 0 holds the token; the tag is another (-1: the last)")
        if self.tree_labels not in TREE_LABELS:
            raise ConfigError(f"data.tree_labels: {self.tree_labels!r} is not one of {TREE_LABELS}")
        if self.format == "parallel" and not (self.source_lang and self.target_lang):
            raise ConfigError(
                "data.format=parallel needs data.source_lang and data.target_lang (the file suffixes, "
                f"e.g. en and de); got {self.source_lang!r} and {self.target_lang!r}"
            )

    @property
    def target_max_length(self) -> int:
        """``max_target_length``, with 0 resolved to ``max_length``."""
        return self.max_target_length or self.max_length


def _label_names(raw: Any) -> dict[str, str]:
    """``data.label_names`` with its keys as the text a file holds (YAML reads ``0:`` as an int)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"data.label_names: expected a mapping of file label -> name, got {raw!r}")
    names: dict[str, str] = {}
    for key, name in raw.items():
        if not isinstance(name, (str, int)) or isinstance(name, bool) or not str(name).strip():
            raise ConfigError(f"data.label_names: label {key!r} maps to {name!r}, not a name")
        names[str(key).strip()] = str(name).strip()
    repeated = sorted({n for n in names.values() if list(names.values()).count(n) > 1})
    if repeated:
        raise ConfigError(f"data.label_names: more than one label is named {repeated[0]!r}")
    return names


@dataclass(kw_only=True)
class TokenizerConfig:
    kind: str = "bpe"
    """Subword model trained with ``tokenizers``: ``bpe``, ``wordpiece`` or ``wordlevel``."""
    vocab_size: int = 8000
    """Target vocabulary size, special tokens included."""
    lowercase: bool = True
    min_frequency: int = 2
    """Merges/words seen fewer times than this are not learned."""
    joint: bool = True
    """seq2seq: one tokenizer trained on both sides (shared subwords: names, numbers) or one
    per language (``false``), each with ``vocab_size`` tokens. Translation wants
    ``lowercase: false`` so that detokenized output keeps its casing."""

    def __post_init__(self) -> None:
        if self.kind not in ("bpe", "wordpiece", "wordlevel"):
            raise ConfigError(f"tokenizer.kind: {self.kind!r} is not bpe, wordpiece or wordlevel")
        if self.vocab_size < 16:
            raise ConfigError(f"tokenizer.vocab_size must be >= 16, got {self.vocab_size}")


@dataclass(kw_only=True)
class BatchingConfig:
    max_tokens: int = 4096
    """Token budget of one batch, padding included: batch_size * longest <= max_tokens."""
    max_batch_size: int = 256
    """Upper bound on rows per batch, whatever the budget allows."""
    pool_size: int = 4096
    """Examples sorted together before cutting batches (OpenNMT's pool)."""
    sort: bool = True
    """Length bucketing on (sort each pool by length); False batches in random order."""
    stream: bool | str = "auto"
    """Training batches materialized once (``false``: bucketed whole, shuffled, kept in the
    object store) or streamed (``true``: pools bucketed on the fly each epoch, nothing
    kept); ``auto`` streams a training split of more than
    ``pipelines.media.bucketing.STREAM_ABOVE`` (1,000,000) examples. Applications that
    read pairs through ``pipelines.media.pairs`` (translation) honour it; the others
    materialize."""

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_batch_size", "pool_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"batching.{name} must be >= 1, got {getattr(self, name)}")
        if self.stream not in (True, False, "auto"):
            raise ConfigError(f"batching.stream must be true, false or auto, got {self.stream!r}")


@dataclass(kw_only=True)
class TrainConfig:
    max_steps: int = 1000
    """Optimizer steps; one step consumes one batch per data-parallel replica."""
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    schedule: str = "linear"
    """LR after warm-up: ``linear`` or ``cosine`` decay to 0, ``constant``, or ``step``:
    constant, times ``decay_gamma`` at each step of ``decay_at`` (PyTorch's MultiStepLR)."""
    decay_at: list[int] = field(default_factory=list)
    """``schedule: step``: the optimizer steps at which the LR drops, ascending."""
    decay_gamma: float = 0.1
    """``schedule: step``: what each drop multiplies the LR by."""
    clip_norm: float = 1.0
    """Clip gradients to this global L2 norm (0 disables)."""
    ema_decay: float = 0.0
    """Keep an exponential moving average of the parameters (Polyak averaging; e.g.
    0.999, about the last 1,000 steps): validation scores it and the exported checkpoint
    holds it, while training continues from the raw weights. 0: off."""
    label_smoothing: float = 0.0
    seed: int = 0
    log_every: int = 50
    """Print a progress line every this many steps."""
    eval_every: int = 250
    """Validate and checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 2
    storage: str = ""
    """Where Ray Train keeps checkpoints: empty for ``<output>/train``; on a multi-node
    cluster a location every node reaches (``s3://bucket/prefix``, ``gs://...``, NFS)."""
    shuffle_buffer: int = 64
    """Batches shuffled together per epoch (seeded by seed and epoch)."""
    init_from: str = ""
    """An inference checkpoint folder whose parameters start this model wherever a name
    and shape match (the rest keeps its seeded init): e.g. a spoken-digit classifier's
    front end and encoder for a speech recognizer of the same widths. Each stage logs how
    many tensors it took and names those the checkpoint has in another shape (a width
    changed on one side only). Workers read it, so on a cluster it must be on shared
    storage. Ignored when resuming."""
    precision: str = "float32"
    """Autocast of forward passes (``pipelines.precision``): ``float32`` (off), ``bf16``
    (GPU or CPU) or ``fp16`` (GPU only, with a loss scale every stage agrees on:
    ``pipelines.engine.loss_scale``). Weights, optimizer state
    and checkpoints stay in ``parallel.dtype``."""

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ConfigError(f"train.max_steps must be >= 1, got {self.max_steps}")
        if self.schedule not in ("linear", "cosine", "constant", "step"):
            raise ConfigError(f"train.schedule: {self.schedule!r} is not linear, cosine, constant or step")
        if not isinstance(self.decay_at, list) or not all(isinstance(s, int) and not isinstance(s, bool)
                                                          for s in self.decay_at):
            raise ConfigError(f"train.decay_at must be a list of optimizer steps, got {self.decay_at!r}")
        if self.decay_at and self.schedule != "step":
            raise ConfigError(f"train.decay_at is read by schedule: step, not {self.schedule}")
        if self.decay_at != sorted(set(self.decay_at)) or any(s < 1 for s in self.decay_at):
            raise ConfigError(f"train.decay_at must be ascending steps >= 1, got {self.decay_at}")
        if not 0.0 < self.decay_gamma <= 1.0:
            raise ConfigError(f"train.decay_gamma must be in (0, 1], got {self.decay_gamma}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in [0, 1) (0: off), got {self.ema_decay}")
        for name in ("log_every", "eval_every", "keep_checkpoints", "shuffle_buffer"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}")


@dataclass(kw_only=True)
class ParallelConfig:
    dp: int = 1
    """Data-parallel replicas."""
    pp: int = 1
    """Pipeline stages per replica: the model's layers are cut into ``pp`` workers."""
    microbatches: int = 1
    """Micro-batches each batch is split into (>= pp keeps a pipeline busy; at pp=1
    it is gradient accumulation)."""
    schedule: str = "1f1b"
    """Pipeline schedule: ``gpipe`` (fill-drain), ``1f1b``, or ``wavefront`` (fill-drain
    over micro-batches *and* time chunks: stage k runs chunk t while stage k-1 runs t+1)."""
    time_chunks: int = 4
    """``wavefront`` only: time chunks each micro-batch is cut into (hidden state is
    carried across chunks and back-propagated through all of them). The pipeline fills
    over ``microbatches * time_chunks`` units; fewer, fuller micro-batches and more
    chunks run bigger GEMMs for the same bubble (docs/parallelism.md, choosing m and k)."""
    timeline: bool = False
    """Record every stage's forward/backward/send/recv spans over the last 10 steps:
    ``timeline.json`` (Perfetto), ``timeline.png`` and the measured bubble fraction."""
    balance: str = "flops"
    """Stage plan cost model: ``flops`` (even compute per stage: even speed) or
    ``params`` (even parameter + optimizer memory per stage)."""
    dtype: str = "float32"
    """Parameter dtype: ``float32``, or ``float64`` for exact equivalence checks."""
    threads_per_worker: int = 1
    """torch intra-op threads of each training worker."""
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources each training worker reserves besides its CPUs
    (``threads_per_worker``) and GPU (``use_gpu``): an accelerator or node label of the
    cluster's, e.g. ``{fake_gpu: 1}`` places workers on the nodes that offer it."""

    def __post_init__(self) -> None:
        for name in ("dp", "pp", "microbatches", "time_chunks", "threads_per_worker"):
            if getattr(self, name) < 1:
                raise ConfigError(f"parallel.{name} must be >= 1, got {getattr(self, name)}")
        self._check_resources_per_worker()
        if self.schedule not in ("gpipe", "1f1b", "wavefront"):
            raise ConfigError(f"parallel.schedule: {self.schedule!r} is not gpipe, 1f1b or wavefront")
        if self.balance not in ("flops", "params"):
            raise ConfigError(f"parallel.balance: {self.balance!r} is not flops or params")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"parallel.dtype: {self.dtype!r} is not float32 or float64")

    def _check_resources_per_worker(self) -> None:
        resources = self.resources_per_worker
        if not isinstance(resources, dict):
            raise ConfigError(
                f"parallel.resources_per_worker: expected a mapping like {{fake_gpu: 1}}, got {resources!r}"
            )
        for name, amount in resources.items():
            if name in ("CPU", "GPU"):
                owner = "threads_per_worker" if name == "CPU" else "use_gpu"
                raise ConfigError(f"parallel.resources_per_worker: {name} is set by parallel.{owner}, not here")
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
                raise ConfigError(f"parallel.resources_per_worker.{name} must be a number > 0, got {amount!r}")

    @property
    def world_size(self) -> int:
        return self.dp * self.pp


@dataclass(kw_only=True)
class DecodeConfig:
    """seq2seq decoding, for ``rayseq eval``, the end-of-training BLEU and the Serve
    default (a request's ``beam_size``/``max_length`` override it)."""

    beam_size: int = 4
    """1: greedy search; more: batched beam search (GNMT scoring)."""
    alpha: float = 0.6
    """GNMT length penalty ``((5 + len) / 6) ** alpha``; 0 scores by raw log-probability."""
    max_length: int = 128
    """Hard cap on output tokens."""
    max_length_ratio: float = 2.0
    """Output tokens per source token at most (plus a small offset)."""
    min_length: int = 0
    """Output tokens before EOS is allowed (summaries: a floor against stopping early)."""
    no_repeat_ngram: int = 0
    """n-gram blocking (Paulus et al. 2018): no output repeats an n-gram of its own; 0: off."""

    def __post_init__(self) -> None:
        if self.min_length < 0 or self.min_length > self.max_length or self.no_repeat_ngram < 0:
            raise ConfigError(f"decode.min_length must be in [0, max_length ({self.max_length})] and "
                              f"decode.no_repeat_ngram >= 0, got {self.min_length}, {self.no_repeat_ngram}")
        if self.beam_size < 1 or self.max_length < 1:
            raise ConfigError("decode.beam_size and decode.max_length must be >= 1, "
                              f"got {self.beam_size}, {self.max_length}")
        if self.alpha < 0 or self.max_length_ratio <= 0:
            raise ConfigError(f"decode.alpha must be >= 0 and decode.max_length_ratio > 0, got {self.alpha}, "
                              f"{self.max_length_ratio}")

    def limits(self, *, alpha: float | None = None, max_length: int | None = None,
               max_length_ratio: float | None = None) -> dict[str, Any]:
        """A search's ``alpha`` and output length caps (``models.decoding.generate``
        keywords): these settings, overridden by those given (not None)."""
        return dict(alpha=self.alpha if alpha is None else alpha,
                    max_length=self.max_length if max_length is None else max_length,
                    max_length_ratio=self.max_length_ratio if max_length_ratio is None else max_length_ratio,
                    min_length=self.min_length, no_repeat_ngram=self.no_repeat_ngram)


@dataclass(kw_only=True)
class SynthesisConfig:
    """Speech synthesis (``app: speech_synthesis``): how a checkpoint turns its frames
    into audio, and what ``rayseq eval`` judges the audio with."""

    max_seconds: float = 2.5
    """Longest word synthesized: decoding stops there if no stop token came."""
    stop_threshold: float = 0.5
    """A frame whose stop probability passes this is a word's last."""
    pause_ms: float = 150.0
    """Silence between the words of one input ("four one seven")."""
    griffin_lim_iters: int = 60
    """Griffin-Lim iterations of the vocoder (``pipelines.media.audio.vocoder``)."""
    eval_seeds: int = 5
    """``rayseq eval`` synthesizes every (word, speaker) pair of the data this many times,
    with seeds 0..n-1."""
    word_classifier: str = ""
    """An audio classifier checkpoint (trained on real recordings) whose accuracy on the
    synthesized audio is ``intelligibility``; empty: not judged."""
    speaker_classifier: str = ""
    """An audio classifier of the speakers (``recipes/fsdd_speakers.yaml``), judging
    ``speaker_accuracy`` the same way; empty: not judged."""

    def __post_init__(self) -> None:
        if self.max_seconds <= 0 or self.pause_ms < 0:
            raise ConfigError(f"synthesis.max_seconds must be > 0 and synthesis.pause_ms >= 0, got "
                              f"{self.max_seconds}, {self.pause_ms}")
        if not 0 < self.stop_threshold < 1:
            raise ConfigError(f"synthesis.stop_threshold must be in (0, 1), got {self.stop_threshold}")
        if self.griffin_lim_iters < 1 or self.eval_seeds < 1:
            raise ConfigError(f"synthesis.griffin_lim_iters and synthesis.eval_seeds must be >= 1, got "
                              f"{self.griffin_lim_iters}, {self.eval_seeds}")


@dataclass
class GenerationConfig:
    """Conditional text generation (``app: text_generate``): how samples are drawn
    (``rayseq sample``, the generate route's defaults, ``rayseq eval``) and what ``rayseq
    eval`` judges them with."""

    conditioned: bool = True
    """Condition on the records' labels; false: one condition (``any``) for every
    record, the unconditioned language model the conditioned one is compared with."""
    num_samples: int = 500
    """``rayseq eval`` draws this many samples per condition (seeds: ``seed``, row by row)."""
    temperature: float = 1.0
    """Softmax temperature of every token drawn; 0: the most probable token (greedy)."""
    top_k: int = 0
    """Draw among the ``k`` most probable tokens; 0: all."""
    top_p: float = 1.0
    """Nucleus sampling: draw among the fewest tokens whose probability reaches ``p``; 1: all."""
    seed: int = 0
    """The first seed of ``rayseq eval``'s samples."""
    max_length: int = 48
    """Most tokens a sample has before its end is forced."""
    min_length: int = 0
    """Fewest tokens a sample has: its end may not be drawn (or searched) before."""
    classifier: str = ""
    """A text classifier checkpoint (``app: text_classify``) whose labels are the
    conditions: ``condition_accuracy`` is the share of samples it gives the condition
    asked for; empty: not judged."""
    language_model: str = ""
    """An unconditioned language model checkpoint (this application with
    ``generation.conditioned: false``): ``sample_perplexity`` is the samples' perplexity
    under it, and the validation sentences' perplexity under it is reported beside the
    conditioned model's; empty: not scored."""

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.max_length < 1:
            raise ConfigError(f"generation.num_samples and generation.max_length must be >= 1, got "
                              f"{self.num_samples}, {self.max_length}")
        if not 0 <= self.min_length <= self.max_length:
            raise ConfigError(f"generation.min_length must be in [0, max_length ({self.max_length})], got "
                              f"{self.min_length}")
        if self.temperature < 0 or self.top_k < 0 or self.seed < 0:
            raise ConfigError(f"generation.temperature, top_k and seed must be >= 0, got {self.temperature}, "
                              f"{self.top_k}, {self.seed}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"generation.top_p must be in (0, 1], got {self.top_p}")


@dataclass(kw_only=True)
class Recipe:
    name: str = "recipe"
    """Run name; the default output folder is ``runs/<name>-<timestamp>``."""
    app: str = ""
    """The application (``pipelines/apps/<app>``, or an importable module defining
    ``APP``); empty: the one answering ``model.kind``/``input``/``decoder``."""
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)

    def __post_init__(self) -> None:
        self._check_precision()
        apps.check_recipe(self)  # ConfigError naming the key
        if self.data.generate is not None:
            self.data.generate.check()

    def _check_precision(self) -> None:
        """Autocast settings that would fail or silently do nothing on the workers."""
        precision = self.train.precision
        if precision == "fp16" and not self.parallel.use_gpu:
            raise ConfigError("train.precision: fp16 needs parallel.use_gpu: true (CPU autocast has no float16 "
                              "LSTM kernel); on CPU use bf16")
        if precision != "float32" and self.parallel.dtype != "float32":
            raise ConfigError(f"train.precision: {precision} needs parallel.dtype float32, got "
                              f"{self.parallel.dtype} (autocast leaves float64 tensors as they are)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _dataclass_type(tp: Any) -> type | None:
    """The dataclass inside ``tp`` (``X`` or ``X | None``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
"""A decimal number, exponent forms included: YAML 1.1 (PyYAML) reads ``1e-3`` (no dot)
as a string, yet every ML user writes learning rates so."""


def _coerce(value: Any, tp: Any, key: str) -> Any:
    floats = tp is float or float in typing.get_args(tp)
    if floats and isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        return float(value)
    if floats and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def build(cls: type, raw: dict[str, Any] | None, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a plain dict, rejecting unknown keys by dotted name."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'recipe'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown key {prefix + str(key)!r}; known: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in raw.items():
        sub = _dataclass_type(hints[name])
        if sub is not None and (value is not None or hints[name] is sub):
            kwargs[name] = build(sub, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hints[name], f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(str(err)) from err


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides (dotted keys, YAML scalar values) to a raw recipe."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        _check_path(key)
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = yaml.safe_load(text) if text else ""
    return raw


def _check_path(key: str) -> None:
    cls: Any = Recipe
    walked = ""
    for part in key.split("."):
        if cls is None:
            raise ConfigError(f"unknown key {key!r}: {walked.rstrip('.')!r} is not a section")
        names = {f.name: f for f in dataclasses.fields(cls)}
        if part not in names:
            raise ConfigError(f"unknown key {walked + part!r}; known: {', '.join(sorted(names))}")
        cls = _dataclass_type(typing.get_type_hints(cls)[part])
        walked += part + "."


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    return build(Recipe, apply_overrides(raw, overrides or []))


def recipe_from_dict(raw: dict[str, Any]) -> Recipe:
    return build(Recipe, dict(raw))
