"""seq2seq: token sequence -> token sequence (translation), GNMT-style with attention.

One ordered list of layers, so a stage plan can cut it between any two. What crosses a
cut is a tuple of tensors; ``lengths`` is always ``(src_lengths (B,), tgt_lengths (B,))``,
int64 on the CPU::

    i       layer                   x in                          -> x out
    0       SourceEmbedding         (src_tokens (B,S), tgt_in (B,T)) -> (src_x (B,S,E), tgt_in)
    1..E    EncoderLayer            (src_x, tgt_in)               -> (src_x', tgt_in)
              layer 1 bidirectional (``bidirectional_bottom``), residual from ``residual_from``;
              the top one's output is the memory (B, S, H_mem)
    E+1     TargetEmbedding         (memory, tgt_in)              -> (memory, tgt_x (B,T,E))
    E+2     AttentionDecoderLayer   (memory, tgt_x)               -> (h (B,T,H), context (B,T,H_mem))
    E+3..   DecoderLayer x (D-1)    (h, context)                  -> (h', context)
    E+D+2   Generator               (h, context)                  -> logits (B, T, V_tgt)

(E = ``config.num_layers``, D = ``config.decoder_layers``; target tokens ride through the
encoder stages untouched.) The bottom decoder layer attends from its *current* output
(Luong), reading the previous step's context as input (``input_feeding``), and its context
feeds every layer above and the generator (GNMT): the memory stops crossing stage
boundaries after the attention layer, and the layers above it are parallel over time when
teacher-forced. The decoder starts from a zero state: attention is the only bridge from
encoder to decoder, which keeps the two halves independent stages.

Inference runs on the whole model: :meth:`Seq2Seq.encode` once, then
:meth:`Seq2Seq.decode_step` per output token (``models.decoding`` drives it).
Token ids 0-3 are reserved as in ``pipelines.media.tokenization``: PAD, UNK, BOS, EOS;
``tgt_in = [BOS] + y`` and ``tgt_out = y + [EOS]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from models.attention import Attention
from models.config import ModelConfig
from models.dropout import SeededDropout
from models.frontends import FrontEnd
from models.layers import PAD_ID, RecurrentLayer, TokenEmbedding, padding_mask
from models.stack import LayerStack, build_layers

UNK_ID, BOS_ID, EOS_ID = 1, 2, 3

DecoderState = tuple[torch.Tensor, ...]
"""Every decoder layer's RNN state, stacked like ``nn.LSTM``'s own ``(layers, batch,
hidden)``: ``(h, c)`` for LSTM, ``(h,)`` for GRU, each ``(D, N, H)``; then the last
attention context ``(1, N, H_mem)`` (input feeding reads it). Rows are on dim 1 of all."""


def embedding_init_std(embed_dim: int, tied: bool) -> float:
    """N(0, 1), PyTorch's default, not the classifier's N(0, 1/dim): on the translation
    demo, validation token accuracy went 0.36 -> 0.81 (1+1 GRU layers, 100 steps) and
    0.33 -> 0.42 (2+2 LSTM layers, 200 steps). A target embedding tied to the output
    projection keeps 1/dim: unit-variance rows would start the logits ~sqrt(H) wide."""
    return embed_dim**-0.5 if tied else 1.0


class SourceEmbedding(nn.Module):
    """``(src_tokens (B, S), tgt_in (B, T))`` -> ``(src_x (B, S, E), tgt_in)``."""

    def __init__(self, vocab_size: int, embed_dim: int, *, init_std: float) -> None:
        super().__init__()
        self.embedding = TokenEmbedding(vocab_size, embed_dim, init_std=init_std)
        self.output_size = embed_dim

    def forward(self, x: tuple[torch.Tensor, torch.Tensor], lengths) -> tuple[torch.Tensor, torch.Tensor]:
        src_tokens, tgt_in = x
        return self.embedding(src_tokens, lengths[0]), tgt_in

    def flops_per_token(self) -> float:
        return self.embedding.flops_per_token()


class SourceFrontEnd(nn.Module):
    """``(source (B, ...), tgt_in (B, T))`` -> ``(src_x (B, S, E), tgt_in)``: a modality's
    front end as the encoder's input layer: log-mel frames ``(B, 4S, F)`` through
    :class:`~models.frontend.ConvSubsampler` (speech recognition; ``lengths[0]`` are the
    subsampled lengths ``S``) or RGB frames ``(B, S, size, size, 3)`` through
    :class:`~models.video.FrameEncoder` (video captioning)."""

    def __init__(self, frontend: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.output_size = frontend.output_size

    def forward(self, x: tuple[torch.Tensor, torch.Tensor], lengths) -> tuple[torch.Tensor, torch.Tensor]:
        features, tgt_in = x
        return self.frontend(features, lengths[0]), tgt_in

    def flops_per_token(self) -> float:
        return self.frontend.flops_per_token()


def source_tokens(vocab_size: int) -> FrontEnd:
    """A text source: token ids through a :class:`SourceEmbedding`."""
    return lambda config: SourceEmbedding(vocab_size, config.embed_dim,
                                          init_std=embedding_init_std(config.embed_dim, False))


def source(front_end: FrontEnd) -> FrontEnd:
    """A media source (``models.frontends.log_mel`` or ``frames``) as the encoder's input layer."""
    return lambda config: SourceFrontEnd(front_end(config))


class EncoderLayer(nn.Module):
    """A :class:`RecurrentLayer` over ``x[0] (B, S, in)`` with the source lengths; the
    rest of ``x`` (the target tokens) passes through. Takes RecurrentLayer's arguments."""

    def __init__(self, **recurrent_args) -> None:
        super().__init__()
        self.recurrent = RecurrentLayer(**recurrent_args)
        self.output_size = self.recurrent.output_size

    def forward(self, x: tuple[torch.Tensor, ...], lengths) -> tuple[torch.Tensor, ...]:
        return (self.recurrent(x[0], lengths[0]), *x[1:])

    def flops_per_token(self) -> float:
        return self.recurrent.flops_per_token()


class TargetEmbedding(nn.Module):
    """``(memory (B, S, H_mem), tgt_in (B, T))`` -> ``(memory, tgt_x (B, T, E))``."""

    def __init__(self, vocab_size: int, embed_dim: int, *, init_std: float) -> None:
        super().__init__()
        self.embedding = TokenEmbedding(vocab_size, embed_dim, init_std=init_std)
        self.output_size = embed_dim

    def forward(self, x: tuple[torch.Tensor, torch.Tensor], lengths) -> tuple[torch.Tensor, torch.Tensor]:
        memory, tgt_in = x
        return memory, self.embedding(tgt_in, lengths[1])

    def flops_per_token(self) -> float:
        return self.embedding.flops_per_token()


class AttentionDecoderLayer(nn.Module):
    """Decoder layer 0: ``(memory (B, S, H_mem), tgt_x (B, T, E))`` ->
    ``(h (B, T, H), context (B, T, H_mem))``.

    A unidirectional RNN over the target; every step's output ``h_t`` attends over the
    memory, padded source steps masked out (:mod:`models.attention`). With
    ``input_feeding`` (Luong et al. 2015; GNMT's bottom layer) step ``t`` reads
    ``[y_t; c_{t-1}]``: the RNN knows what it attended to last, which it otherwise has to
    infer from the target prefix alone. That makes this one layer sequential over time
    (a step loop instead of one cuDNN/packed call); the layers above stay parallel.
    Padded target steps output zeros either way.

    Under the wavefront it streams over *target* chunks (:meth:`forward_chunk`) while
    reading the memory whole (``whole_inputs``): every step attends over all of it.
    """

    time_streaming = True
    whole_inputs = (0,)
    """Parts of the input tuple read whole by every chunk: the memory."""

    def __init__(
        self, *, cell: str, input_size: int, hidden_size: int, memory_size: int,
        attention: str, input_feeding: bool, dropout: float, stream: int,
    ) -> None:
        super().__init__()
        self.input_feeding = input_feeding
        self.recurrent = RecurrentLayer(
            cell=cell, input_size=input_size + (memory_size if input_feeding else 0), hidden_size=hidden_size,
            bidirectional=False, residual=False, dropout=dropout, stream=stream,
        )
        self.attention = Attention(kind=attention, query_size=hidden_size, memory_size=memory_size)
        self.output_size = hidden_size
        self.context_size = memory_size

    def forward(self, x: tuple[torch.Tensor, torch.Tensor], lengths) -> tuple[torch.Tensor, torch.Tensor]:
        memory, tgt_x = x
        src_lengths, tgt_lengths = lengths
        mask = padding_mask(src_lengths.to(memory.device), memory.size(1))
        if not self.input_feeding:
            h = self.recurrent(tgt_x, tgt_lengths)
            context, _ = self.attention(h, memory, mask)
            return h, context
        # Every row runs every step: the layer is causal, so steps past a row's length
        # never reach its valid ones, and are zeroed at the end as packing would.
        steps = tgt_x.size(1)
        tgt_x = self.recurrent.dropout(tgt_x, steps=int(tgt_lengths.max()))
        context = memory.new_zeros(memory.size(0), 1, self.context_size)
        hx, outputs, contexts = None, [], []
        for t in range(steps):
            h, hx = self.recurrent.rnn(torch.cat([tgt_x[:, t : t + 1], context], dim=-1), hx)
            context, _ = self.attention(h, memory, mask)
            outputs.append(h)
            contexts.append(context)
        valid = padding_mask(tgt_lengths.to(memory.device), steps).unsqueeze(-1).to(memory.dtype)
        return torch.cat(outputs, dim=1) * valid, torch.cat(contexts, dim=1) * valid

    def forward_chunk(self, x: tuple[torch.Tensor, torch.Tensor], lengths, offset: int,
                      state: tuple[torch.Tensor, ...] | None) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple]:
        """Target steps ``offset .. offset + w``: ``(memory (B, S, H_mem) whole, tgt_x (B, w,
        E))`` -> ``((h, context) (B, w, ..), state)``, equal to those steps of
        :meth:`forward`. ``state``: the RNN's ``(h, c)`` or ``(h,)``, then (input feeding)
        the last step's context ``(B, 1, H_mem)``, unmasked as the step loop feeds it;
        None before the first chunk."""
        memory, tgt_x = x
        src_lengths, tgt_lengths = lengths
        mask = padding_mask(src_lengths.to(memory.device), memory.size(1))
        if not self.input_feeding:
            h, hx = self.recurrent.forward_chunk(tgt_x, tgt_lengths, offset, state)
            return (h, self.attention(h, memory, mask)[0]), hx
        steps = tgt_x.size(1)
        tgt_x = self.recurrent.dropout(tgt_x, offset=offset, steps=int(tgt_lengths.max()))
        if state is None:
            hx, context = None, memory.new_zeros(memory.size(0), 1, self.context_size)
        else:
            *hx, context = state
            hx = tuple(hx) if len(hx) == 2 else hx[0]
        outputs, contexts = [], []
        for t in range(steps):
            h, hx = self.recurrent.rnn(torch.cat([tgt_x[:, t : t + 1], context], dim=-1), hx)
            context, _ = self.attention(h, memory, mask)
            outputs.append(h)
            contexts.append(context)
        valid = (padding_mask(tgt_lengths.to(memory.device), offset + steps)[:, offset:]
                 .unsqueeze(-1).to(memory.dtype))
        state = (*(hx if isinstance(hx, tuple) else (hx,)), context)
        return (torch.cat(outputs, dim=1) * valid, torch.cat(contexts, dim=1) * valid), state

    def step(self, tgt_x: torch.Tensor, hx, last_context: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor):
        """One step for ``N`` rows: ``tgt_x (N, 1, E)``, ``last_context (N, 1, H_mem)``
        (the previous step's, zeros at the start), ``memory (N, S, H_mem)``, ``mask (N, S)``
        -> ``((h (N, 1, H), context (N, 1, H_mem)), hx)``."""
        x_in = self.recurrent.dropout(tgt_x)
        if self.input_feeding:
            x_in = torch.cat([x_in, last_context], dim=-1)
        h, hx = self.recurrent.rnn(x_in, hx)
        context, _ = self.attention(h, memory, mask)
        return (h, context), hx

    def flops_per_token(self) -> float:
        return self.recurrent.flops_per_token() + self.attention.flops_per_token()


class DecoderLayer(nn.Module):
    """Decoder layers 1..D-1: ``(h (B, T, H), context (B, T, H_mem), *rest)`` -> ``(h',
    context, *rest)`` (``rest``: what a model carries to its output layer, e.g. the
    pointer-generator's attention; nothing in plain seq2seq).

    An RNN over ``[h; context]`` (every layer sees the bottom layer's context, GNMT's
    way of attending once for a deep decoder); with ``residual``, ``h' = rnn(..) + h``.
    Causal over target steps, so it streams under the wavefront.
    """

    time_streaming = True

    def __init__(
        self, *, cell: str, hidden_size: int, context_size: int, residual: bool,
        dropout: float, stream: int,
    ) -> None:
        super().__init__()
        self.recurrent = RecurrentLayer(
            cell=cell, input_size=hidden_size + context_size, hidden_size=hidden_size,
            bidirectional=False, residual=False, dropout=dropout, stream=stream,
        )
        self.residual = residual
        self.output_size = hidden_size

    def forward(self, x: tuple[torch.Tensor, ...], lengths) -> tuple[torch.Tensor, ...]:
        h, context, *rest = x
        y = self.recurrent(torch.cat([h, context], dim=-1), lengths[1])
        return (y + h if self.residual else y), context, *rest

    def forward_chunk(self, x: tuple[torch.Tensor, ...], lengths, offset: int,
                      state: tuple[torch.Tensor, ...] | None) -> tuple[tuple[torch.Tensor, ...], tuple]:
        """Target steps ``offset .. offset + w`` of :meth:`forward` (``RecurrentLayer.forward_chunk``)."""
        h, context, *rest = x
        y, state = self.recurrent.forward_chunk(torch.cat([h, context], dim=-1), lengths[1], offset, state)
        return ((y + h if self.residual else y), context, *rest), state

    def step(self, x: tuple[torch.Tensor, torch.Tensor], hx):
        """One step: ``(h (N, 1, H), context (N, 1, H_mem))`` -> ``((h', context), hx)``."""
        h, context = x
        y, hx = self.recurrent.rnn(self.recurrent.dropout(torch.cat([h, context], dim=-1)), hx)
        return ((y + h if self.residual else y), context), hx

    def flops_per_token(self) -> float:
        return self.recurrent.flops_per_token()


class Generator(nn.Module):
    """``(h (B, T, H), context (B, T, H_mem))`` -> ``logits (B, T, V)``.

    Luong's attentional vector ``a_t = tanh(W_c [h_t; c_t])`` (``H`` wide), dropout, then
    the output projection ``W_o a_t + b``. Mixing the context in before the projection
    keeps the expensive ``V``-wide matmul ``H`` wide (not ``H + H_mem``), and lets ``W_o``
    share the target embedding matrix when ``embed_dim == hidden_size``. Per target step,
    so it streams under the wavefront (the loss is then summed over chunks).
    """

    time_streaming = True

    def __init__(self, *, hidden_size: int, context_size: int, vocab_size: int, dropout: float, stream: int) -> None:
        super().__init__()
        self.combine = nn.Linear(hidden_size + context_size, hidden_size, bias=False)
        self.dropout = SeededDropout(dropout, stream=stream)
        self.proj = nn.Linear(hidden_size, vocab_size)
        self.output_size = vocab_size

    def forward(self, x: tuple[torch.Tensor, torch.Tensor], lengths) -> torch.Tensor:
        h, context = x
        attentional = torch.tanh(self.combine(torch.cat([h, context], dim=-1)))
        return self.proj(self.dropout(attentional))

    def forward_chunk(self, x: tuple[torch.Tensor, torch.Tensor], lengths, offset: int,
                      state: None) -> tuple[torch.Tensor, None]:
        """Target steps ``offset .. offset + w``; the dropout mask is the whole row's
        (``(B, T, H)``, ``T`` the longest target: a step plan trims rows to it), sliced."""
        h, context = x
        attentional = torch.tanh(self.combine(torch.cat([h, context], dim=-1)))
        return self.proj(self.dropout(attentional, offset=offset, steps=int(lengths[1].max()))), None

    def flops_per_token(self) -> float:
        return 2.0 * (self.combine.weight.numel() + self.proj.weight.numel())


class Seq2Seq(LayerStack):
    """The whole seq2seq model, or a contiguous slice of it (a pipeline stage).

    ``forward((src_tokens (B, S), tgt_in (B, T)), (src_lengths (B,), tgt_lengths (B,)))``
    gives ``logits (B, T, V)`` on the whole model; a slice maps its first layer's input
    tuple to its last layer's output. Incremental decoding (``encode``,
    ``init_decoder_state``, ``decode_step``, ``reorder_state``) needs the whole model.
    """

    def _parts(self) -> tuple[list[nn.Module], TargetEmbedding, list[nn.Module], Generator]:
        """(encoder layers incl. source embedding, target embedding, decoder RNN layers, generator)."""
        layers = list(self.layers.values())
        if not (isinstance(layers[0], (SourceEmbedding, SourceFrontEnd)) and isinstance(layers[-1], Generator)):
            keys = list(self.layers.keys())
            raise RuntimeError("incremental decoding needs the whole model; "
                               f"this one holds layers {keys[0]}..{keys[-1]}")
        split = next(i for i, layer in enumerate(layers) if isinstance(layer, TargetEmbedding))
        return layers[:split], layers[split], layers[split + 1 : -1], layers[-1]

    @torch.no_grad()
    def encode(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor) -> torch.Tensor:
        """``src_tokens (B, S)`` (audio: frames ``(B, 4S, F)``), ``src_lengths (B,)`` int64
        CPU -> ``memory (B, S, H_mem)``."""
        encoder, _, _, _ = self._parts()
        batch = src_tokens.size(0)
        x = (src_tokens, torch.zeros(batch, 0, dtype=torch.int64, device=src_tokens.device))
        lengths = (src_lengths, torch.zeros(batch, dtype=torch.int64))
        for layer in encoder:
            x = layer(x, lengths)
        return x[0]

    def init_decoder_state(self, batch: int) -> DecoderState:
        """Zeros, as in training: ``(h, c, context)`` (LSTM) or ``(h, context)`` (GRU)."""
        _, _, decoder, _ = self._parts()
        rnn = decoder[0].recurrent.rnn
        weight = rnn.weight_hh_l0
        h = weight.new_zeros(len(decoder), batch, rnn.hidden_size)
        context = weight.new_zeros(1, batch, decoder[0].context_size)
        return (h, torch.zeros_like(h), context) if isinstance(rnn, nn.LSTM) else (h, context)

    @staticmethod
    def reorder_state(state: DecoderState, index: torch.Tensor) -> DecoderState:
        """Rows ``index (N',)`` of every state tensor: beam search's expand and reorder."""
        return tuple(t.index_select(1, index) for t in state)

    @torch.no_grad()
    def decode_step(
        self, prev_tokens: torch.Tensor, state: DecoderState, memory: torch.Tensor, src_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, DecoderState]:
        """Feed ``prev_tokens (N,)`` (BOS first) and get ``log_probs (N, V)`` of the next
        token. ``memory (N, S, H_mem)`` and ``src_lengths (N,)`` are each row's sentence's
        (repeated per beam). Equals the teacher-forced forward step by step."""
        _, target_embedding, decoder, generator = self._parts()
        mask = padding_mask(src_lengths.to(memory.device), memory.size(1))
        tgt_x = target_embedding.embedding(prev_tokens.unsqueeze(1), None)
        *rnn_state, last_context = state
        lstm = len(rnn_state) == 2
        hxs = []
        x, hx = decoder[0].step(tgt_x, _layer_state(rnn_state, 0, lstm), last_context.transpose(0, 1), memory, mask)
        hxs.append(hx)
        context = x[1]
        for i, layer in enumerate(decoder[1:], start=1):
            x, hx = layer.step(x, _layer_state(rnn_state, i, lstm))
            hxs.append(hx)
        logits = generator(x, None).squeeze(1)
        stacked = tuple(torch.cat(parts, dim=0) for parts in zip(*hxs)) if lstm else (torch.cat(hxs, dim=0),)
        return F.log_softmax(logits.float(), dim=-1), (*stacked, context.transpose(0, 1))


def _layer_state(state: list[torch.Tensor], i: int, lstm: bool):
    """Layer ``i``'s slice of the stacked RNN states in ``nn.LSTM``/``nn.GRU``'s own form."""
    return (state[0][i : i + 1], state[1][i : i + 1]) if lstm else state[0][i : i + 1]


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Summed token cross-entropy of ``logits (B, T, V)`` against ``targets (B, T)``
    (``tgt_out``), padded positions ignored: what the training engine computes."""
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
        ignore_index=PAD_ID, reduction="sum", label_smoothing=label_smoothing,
    )


def encoder_factories(config: ModelConfig, *, source: FrontEnd) -> tuple[list[Callable[[], nn.Module]], int]:
    """The ``source`` front end (``models.frontends.source_tokens`` or ``source(...)``)
    and the encoder layers' constructors, and the top one's output width."""
    h = config.hidden_size
    factories: list[Callable[[], nn.Module]] = [lambda: source(config)]
    width = config.embed_dim
    for i in range(config.num_layers):
        bidirectional = config.bidirectional_bottom and i == 0
        factories.append(partial(
            EncoderLayer, cell=config.cell, input_size=width, hidden_size=h, bidirectional=bidirectional,
            residual=i >= config.residual_from, dropout=config.dropout, stream=len(factories),
        ))
        width = h * (2 if bidirectional else 1)
    return factories, width


def decoder_factories(config: ModelConfig, factories: list[Callable[[], nn.Module]], *, tgt_vocab_size: int,
                      memory_size: int, bottom: Callable[..., nn.Module]) -> list[Callable[[], nn.Module]]:
    """Append the target embedding, the ``bottom`` decoder layer (called with the
    recurrent arguments and ``memory_size``), the decoder layers above it and the
    generator to ``factories``; every layer's dropout stream is its index."""
    h = config.hidden_size
    factories.append(partial(
        TargetEmbedding, tgt_vocab_size, config.embed_dim,
        init_std=embedding_init_std(config.embed_dim, config.tie_embeddings),
    ))
    factories.append(partial(
        bottom, cell=config.cell, input_size=config.embed_dim, hidden_size=h, memory_size=memory_size,
        dropout=config.dropout, stream=len(factories),
    ))
    for i in range(1, config.decoder_layers):
        factories.append(partial(
            DecoderLayer, cell=config.cell, hidden_size=h, context_size=memory_size,
            residual=i >= config.decoder_residual_from, dropout=config.dropout, stream=len(factories),
        ))
    factories.append(partial(
        Generator, hidden_size=h, context_size=memory_size, vocab_size=tgt_vocab_size,
        dropout=config.dropout, stream=len(factories),
    ))
    return factories


def seq2seq_layer_factories(config: ModelConfig, *, source: FrontEnd,
                            tgt_vocab_size: int) -> list[Callable[[], nn.Module]]:
    """One constructor per layer, in order (widths are worked out without building)."""
    factories, memory_size = encoder_factories(config, source=source)
    bottom = partial(AttentionDecoderLayer, attention=config.attention, input_feeding=config.input_feeding)
    return decoder_factories(config, factories, tgt_vocab_size=tgt_vocab_size, memory_size=memory_size, bottom=bottom)


def seq2seq_num_layers(config: ModelConfig) -> int:
    """Layers in the full model: 2 embeddings, the encoder and decoder RNNs, the generator."""
    return config.num_layers + config.decoder_layers + 3


def tied_layer_indices(config: ModelConfig) -> tuple[int, int] | None:
    """``(target embedding, generator)`` indices when their weights are tied, else None.

    Tying only happens inside one built model: a stage plan that puts these two layers on
    different stages would train two separate matrices, so the engine must keep them
    together (or refuse the cut).
    """
    if not config.tie_embeddings:
        return None
    return config.num_layers + 1, seq2seq_num_layers(config) - 1


def build_seq2seq(
    config: ModelConfig,
    *,
    source: FrontEnd,
    tgt_vocab_size: int,
    seed: int = 0,
    keep: Iterable[int] | None = None,
) -> Seq2Seq:
    """The model, or with ``keep`` only those (contiguous) layers of it; ``source``: the
    encoder's input layer (``models.frontends``)."""
    factories = seq2seq_layer_factories(config, source=source, tgt_vocab_size=tgt_vocab_size)
    layers = build_layers(factories, seed=seed, keep=keep)
    tied = tied_layer_indices(config)
    if tied is not None and tied[0] in layers and tied[1] in layers:
        layers[tied[1]].proj.weight = layers[tied[0]].embedding.embed.weight
    return Seq2Seq(layers)
