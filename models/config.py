"""Model hyper-parameters: one dataclass, each field documented where it is declared."""

from __future__ import annotations

from dataclasses import dataclass

CELLS = ("lstm", "gru")
POOLINGS = ("last", "mean", "max", "attention")
ATTENTIONS = ("luong", "bahdanau")
TAG_SCHEMES = ("iob1", "iob2", "iobes")
SUBSAMPLING = 4
"""Frames per output step of the audio front end (``models.frontend``: two stride-2
convolutions). Here, torch-free, because data preparation pads to it: Ray Data's
workers import the data modules, and importing torch costs each of them ~1.5 s."""


@dataclass(kw_only=True)
class ModelConfig:
    kind: str = "seq2vec"
    """Application shape: ``seq2vec`` (sequence -> label), ``seq2seq`` (sequence ->
    sequence: encoder-decoder with attention), ``vec2seq`` (the encoded sequence pooled
    to one vector that conditions an RNN decoder: video captioning; ``models.vec2seq``)
    ``tagger`` (a label per token: BiLSTM-CRF, ``models.tagger``), ``music`` (the next
    chord of four-voice music, voice by voice: ``models.music``) or ``synthesis`` (a
    (word, speaker) vector -> log-mel frames, Tacotron-style: ``models.speech``) or
    ``language_model`` (text conditioned on a label: ``models.language_model``; its
    ``decoder_layers`` are the recurrent stack, ``num_layers`` is unused) or
    ``pointer_generator`` (seq2seq that can copy source words, with optional coverage:
    ``models.pointer``; summarization)."""
    input: str = "text"
    """What the first layer reads: ``text`` (token ids -> embedding), ``audio`` (log-mel
    frames -> convolutional subsampler, 4x fewer steps; see ``models.frontend``),
    ``video`` (RGB frames -> a per-frame CNN, one step per frame; ``models.video``) or
    ``image`` (one RGB frame through the same CNN: image captioning)."""
    frontend_channels: int = 32
    """audio: channels of the subsampler's two stride-2 convolutions; video: channels of
    the frame CNN's first block (doubling in each of the next two)."""
    spec_freq_masks: int = 0
    """audio, training only: SpecAugment frequency masks per utterance (Park et al. 2019)."""
    spec_freq_width: int = 8
    """audio: widest frequency mask, in mel bands."""
    spec_time_masks: int = 0
    """audio, training only: SpecAugment time masks per utterance."""
    spec_time_width: int = 10
    """audio: widest time mask, in frames (each mask also stays under 20% of the utterance)."""
    cell: str = "lstm"
    """Recurrent cell of every layer: ``lstm`` or ``gru``."""
    embed_dim: int = 128
    """Token embedding width."""
    hidden_size: int = 256
    """Hidden width of each recurrent layer (per direction)."""
    num_layers: int = 2
    """Number of recurrent layers in the stack (for seq2seq: in the encoder). seq2vec
    takes 0: the head then pools the front end's per-step vectors, an order-blind
    bag-of-frames (or bag-of-words) baseline for ablations. vec2seq on an image takes 0
    too (a recurrent layer over one frame adds nothing): the summary then reads the frame
    CNN's vector, so the model is CNN -> vector -> decoder."""
    bidirectional_bottom: bool = True
    """Make layer 0 bidirectional (GNMT): its output is ``2 * hidden_size`` wide."""
    residual_from: int = 2
    """First layer (0-based, for seq2seq: of the encoder) with a residual connection;
    GNMT uses the third (2): layer 1 reads the bidirectional layer's twice-as-wide output."""
    dropout: float = 0.3
    """Dropout on each recurrent layer's input and on the head's input (pooled features
    for seq2vec, the attentional vector for seq2seq)."""
    pooling: str = "mean"
    """seq2vec pooling: ``last`` state, or ``mean`` or per-feature ``max`` over valid
    steps (``max`` over a bidirectional layer is Conneau et al. 2017's BiLSTM-max), or
    ``attention``: a weighted mean whose weights a small learned scorer gives each valid
    step (feed-forward attention, Raffel & Ellis 2015), so a short decisive stretch (a
    word's onset) can outweigh the rest."""
    decoder_layers: int = 2
    """seq2seq: recurrent layers in the decoder; the bottom one attends over the encoder
    output and its context feeds every layer above (GNMT)."""
    decoder_residual_from: int = 1
    """seq2seq: first decoder layer (0-based, >= 1: layer 0 reads the embedding) with a
    residual connection. Every decoder layer is ``hidden_size`` wide, so unlike the
    encoder they can start at 1: on the translation demo (1+2 layers) validation token
    accuracy after 200 steps goes 0.83 -> 0.97 against no residual."""
    decoder: str = "attention"
    """seq2seq: ``attention`` (an RNN decoder attending over the encoder, beam search) or
    ``ctc`` (audio only: a per-step softmax over the encoder trained with CTC; no
    decoder layers, ``decoder_layers``/``attention`` unused; see ``models.ctc``)."""
    attention: str = "luong"
    """seq2seq attention score: ``luong`` (general, ``h W m``) or ``bahdanau`` (additive,
    ``v . tanh(W h + U m)``). Both attend from the bottom decoder layer's current output."""
    input_feeding: bool = False
    """seq2seq: the bottom decoder layer reads the previous step's attention context
    beside the previous token (Luong et al. 2015, OpenNMT's default). Costs that layer its
    parallelism over time in training (a step loop); on the translation demo it learned
    slower (token accuracy at step 200, 1+1 layers: 0.93 with, 0.99 without)."""
    coverage: bool = False
    """pointer_generator: the attention reads how much each source step was attended so
    far, and the loss adds ``coverage_weight * sum_i min(a_ti, coverage_ti)`` a target step
    (See et al. 2017): attending twice to one place costs, which curbs repetition."""
    coverage_weight: float = 1.0
    """pointer_generator: the coverage loss's weight (See et al.: 1)."""
    tie_embeddings: bool = False
    """seq2seq: the output projection shares the target embedding matrix (needs
    ``embed_dim == hidden_size``)."""
    pretrained_embeddings: str = ""
    """Text classification: a word-vector file (word2vec/GloVe text, fastText ``.vec``)
    that initialises the token embedding, mapped onto the tokenizer's vocabulary (its
    vectors must be ``embed_dim`` wide; coverage is reported). A ``wordlevel`` tokenizer
    matches its words; subword tokens mostly find none."""
    freeze_embeddings: bool = False
    """Keep the pretrained token embedding fixed (Kim 2014's "static") instead of
    fine-tuning it ("non-static")."""

    char_embed_dim: int = 30
    """tagger: character embedding width (Ma & Hovy 2016: 30)."""
    char_channels: int = 50
    """tagger: filters of the character CNN, the width of each word's character features."""
    word_dropout: float = 0.0
    """tagger, training only: probability that a word is replaced by the unknown word."""
    tag_scheme: str = "iobes"
    """tagger: the scheme the model learns and decodes in (``iob1``, ``iob2`` or
    ``iobes``); training tags are converted to it, answers back to ``data.tag_scheme``."""
    head_size: int = 256
    """music: width of each voice head's hidden layer (it reads the recurrent state and
    the voices of the chord already predicted)."""
    beat_positions: int = 16
    """music: steps of the metrical cycle whose position each step gets as an input
    (``(step in the piece) % beat_positions``; 16: a 4/4 bar of 16th notes); 0: none."""

    prenet_size: int = 256
    """synthesis: width of the pre-net's two layers over the previous frame (dropout 0.5
    in training and when sampling, as Tacotron 2's)."""
    frames_per_step: int = 2
    """synthesis: frames each decoder step emits (Tacotron's reduction factor r): r times
    fewer recurrent steps; the pre-net reads the last frame of the previous step."""
    postnet_channels: int = 256
    """synthesis: channels of the post-net, 1-d convolutions over the whole predicted
    spectrogram that add a residual correction (0: none)."""
    postnet_layers: int = 5
    """synthesis: convolutions of the post-net (kernel 5)."""

    def __post_init__(self) -> None:
        for name in ("prenet_size", "frames_per_step", "postnet_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.postnet_channels < 0:
            raise ValueError(f"model.postnet_channels must be >= 0 (0: no post-net), got {self.postnet_channels}")
        if self.tag_scheme not in TAG_SCHEMES:
            raise ValueError(f"model.tag_scheme: {self.tag_scheme!r} is not one of {TAG_SCHEMES}")
        if self.beat_positions < 0:
            raise ValueError(f"model.beat_positions must be >= 0 (0: none), got {self.beat_positions}")
        for name in ("char_embed_dim", "char_channels", "head_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.word_dropout < 1.0:
            raise ValueError(f"model.word_dropout must be in [0, 1), got {self.word_dropout}")
        if self.cell not in CELLS:
            raise ValueError(f"model.cell: {self.cell!r} is not one of {CELLS}")
        for name in ("frontend_channels", "spec_freq_width", "spec_time_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("spec_freq_masks", "spec_time_masks"):
            if getattr(self, name) < 0:
                raise ValueError(f"model.{name} must be >= 0, got {getattr(self, name)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"model.pooling: {self.pooling!r} is not one of {POOLINGS}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"model.attention: {self.attention!r} is not one of {ATTENTIONS}")
        if self.num_layers < (0 if self.kind == "seq2vec" or (self.kind, self.input) == ("vec2seq", "image") else 1):
            raise ValueError(f"model.num_layers must be >= 1 (seq2vec, and vec2seq on images: >= 0), "
                             f"got {self.num_layers}")
        for name in ("embed_dim", "hidden_size", "decoder_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.residual_from < 1:
            raise ValueError(
                f"model.residual_from must be >= 1 (layer 0 changes width), got {self.residual_from}"
            )
        if self.decoder_residual_from < 1:
            raise ValueError(
                "model.decoder_residual_from must be >= 1 (decoder layer 0 reads the embedding), "
                f"got {self.decoder_residual_from}"
            )
        if self.coverage_weight < 0:
            raise ValueError(f"model.coverage_weight must be >= 0, got {self.coverage_weight}")
        if self.freeze_embeddings and not self.pretrained_embeddings:
            raise ValueError("model.freeze_embeddings keeps pretrained vectors fixed; set "
                             "model.pretrained_embeddings too (a frozen random embedding learns nothing)")
        if self.tie_embeddings and self.kind != "seq2seq":
            raise ValueError(f"model.tie_embeddings is for seq2seq models, not {self.kind}")
        if self.tie_embeddings and self.embed_dim != self.hidden_size:
            raise ValueError(
                "model.tie_embeddings needs embed_dim == hidden_size "
                f"({self.embed_dim} != {self.hidden_size}): the output projection reads "
                "hidden_size-wide attentional vectors"
            )
