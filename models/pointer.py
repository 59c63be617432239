"""Pointer-generator: attention seq2seq that also copies source words, with coverage
(See et al. 2017, "Get To The Point"), as one cuttable layer list.

    i       layer                 x in                                -> x out
    0       CopySourceEmbedding   (src (B,S), tgt_in (B,T))           -> (src_x (B,S,E), tgt_in, src)
    1..E    EncoderLayer          (src_x, tgt_in, src)                -> (src_x', tgt_in, src)
    E+1     CopyTargetEmbedding   (memory (B,S,H_mem), tgt_in, src)   -> (memory, tgt_x (B,T,E), src)
    E+2     PointerDecoderLayer   (memory, tgt_x, src)                -> (h (B,T,H), context (B,T,H_mem),
                                                                          attention (B,T,S), gate_x (B,T,1),
                                                                          coverage_loss (B,T), src)
    E+3..   DecoderLayer x (D-1)  (h, context, *rest)                 -> (h', context, *rest)
    E+D+2   PointerGenerator      (h, context, attention, gate_x, coverage_loss, src)
                                                                      -> (log_probs (B,T,V+X), coverage_loss)

**Extended ids.** ``src`` holds each source word's id in the vocabulary ``V``, except
that a word outside it gets ``V + k``, ``k`` numbering the distinct unknown words of its
own example (``pipelines.apps.summarize.vocab``). The embeddings read every id ``>= V`` as
``[UNK]``; the output distribution covers ``V + X`` ids (``X``: the most unknown words of
any row in the batch), so a word the vocabulary lacks can still be written by pointing
at it. Training targets use the same ids (a target word outside the vocabulary and the
source stays ``[UNK]``); the decoder's *inputs* ``tgt_in`` are plain vocabulary ids.

**Output.** ``P(w) = p_gen P_vocab(w) + (1 - p_gen) sum_{i: src_i = w} a_i``, with
``p_gen = sigmoid(w_h . h + w_c . c + w_x . x + b)`` read from the top decoder state, the
context and the decoder's input word (the last term is computed where ``x`` is, in the
decoder layer, and carried up as ``gate_x``). ``log_probs`` is the log of that mixture:
it sums to 1 over the ``V + X`` ids.

**Coverage.** With ``model.coverage``, the attention reads the coverage vector
``c_t = sum_{t' < t} a_t'`` (eq. 11) and the loss adds ``coverage_weight * sum_i
min(a_ti, c_ti)`` per target step (eq. 12), which costs attending again where it already
did: what makes a summary repeat itself. ``coverage_loss`` is that term, zero without coverage.

The attention decoder layer steps through time (input feeding and coverage both make step
``t`` depend on step ``t-1``'s attention); the memory's key projection is computed once
per source, not once per step. Inference: :meth:`PointerSeq2Seq.encode` returns
``(memory, keys, src)`` (``models.decoding`` treats a tuple memory row-wise), and
:meth:`~PointerSeq2Seq.decode_step` returns log-probabilities over ``V + X`` ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import torch
from torch import nn

from models.config import ModelConfig
from models.dropout import SeededDropout
from models.layers import RecurrentLayer, padding_mask
from models.seq2seq import (
    UNK_ID,
    DecoderLayer,
    DecoderState,
    SourceEmbedding,
    TargetEmbedding,
    _layer_state,
    embedding_init_std,
    encoder_factories,
)
from models.stack import LayerStack, build_layers

CopyMemory = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""What :meth:`PointerSeq2Seq.encode` returns: ``(memory (N, S, H_mem), keys (N, S, A),
src (N, S))``, rows on dim 0 of each."""


def in_vocabulary(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Extended ids with every id ``>= vocab_size`` (a copied word) read as ``[UNK]``."""
    return ids.masked_fill(ids >= vocab_size, UNK_ID)


class CopySourceEmbedding(SourceEmbedding):
    """``(src (B, S) extended ids, tgt_in (B, T))`` -> ``(src_x (B, S, E), tgt_in, src)``:
    the source ids ride along to the output layer, which copies by them."""

    def __init__(self, vocab_size: int, embed_dim: int, *, init_std: float) -> None:
        super().__init__(vocab_size, embed_dim, init_std=init_std)
        self.vocab_size = vocab_size

    def forward(self, x: tuple[torch.Tensor, torch.Tensor], lengths) -> tuple[torch.Tensor, ...]:
        src, tgt_in = x
        return self.embedding(in_vocabulary(src, self.vocab_size), lengths[0]), tgt_in, src


class CopyTargetEmbedding(TargetEmbedding):
    """``(memory, tgt_in (B, T), src)`` -> ``(memory, tgt_x (B, T, E), src)``; ids ``>= V``
    (a copied word fed back while decoding) read as ``[UNK]``."""

    def __init__(self, vocab_size: int, embed_dim: int, *, init_std: float) -> None:
        super().__init__(vocab_size, embed_dim, init_std=init_std)
        self.vocab_size = vocab_size

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(in_vocabulary(tokens, self.vocab_size), None)

    def forward(self, x: tuple[torch.Tensor, ...], lengths) -> tuple[torch.Tensor, ...]:
        memory, tgt_in, src = x
        return memory, self.embed(tgt_in), src


class CoverageAttention(nn.Module):
    """Additive attention with an optional coverage feature (See et al. eq. 11)::

        e_ti = v . tanh(W_m m_i + W_q h_t + w_c cov_ti + b),   a_t = softmax_i(e_t) over valid i

    :meth:`keys` (``W_m m + b``) is computed once per source; each step then costs
    ``O(S * A)``, not ``O(S * H_mem * A)``."""

    def __init__(self, *, query_size: int, memory_size: int, coverage: bool) -> None:
        super().__init__()
        self.memory_proj = nn.Linear(memory_size, query_size, bias=True)
        self.query_proj = nn.Linear(query_size, query_size, bias=False)
        self.coverage_proj = nn.Linear(1, query_size, bias=False) if coverage else None
        self.v = nn.Linear(query_size, 1, bias=False)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        """``memory (B, S, H_mem)`` -> ``keys (B, S, A)``."""
        return self.memory_proj(memory)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor,
                coverage: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: ``query (B, 1, H)``, ``coverage (B, 1, S)`` -> ``(context (B, 1, H_mem),
        weights (B, 1, S))``; ``mask (B, S)`` True on valid source steps."""
        hidden = keys + self.query_proj(query)
        if self.coverage_proj is not None:
            hidden = hidden + coverage.transpose(1, 2) * self.coverage_proj.weight.view(1, 1, -1)
        scores = self.v(torch.tanh(hidden)).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1).unsqueeze(1)
        return torch.bmm(weights, memory), weights

    def flops(self, source_length: int) -> float:
        width = self.query_proj.out_features
        return 2.0 * (self.query_proj.weight.numel() + self.memory_proj.weight.numel()) + 5.0 * source_length * width


class PointerDecoderLayer(nn.Module):
    """Decoder layer 0: ``(memory, tgt_x, src)`` -> ``(h, context, attention, gate_x,
    coverage_loss, src)`` (shapes in the module docstring), one step at a time.

    Step ``t`` reads ``[y_t; c_{t-1}]`` with ``input_feeding`` (See et al. feed the
    context too), its output ``h_t`` attends with the coverage so far. ``gate_x = w_x .
    y_t + b`` is the input word's share of ``p_gen``; ``coverage_loss`` is
    ``coverage_weight * sum_i min(a_ti, cov_ti)``. Padded target steps output zeros."""

    def __init__(self, *, cell: str, input_size: int, hidden_size: int, memory_size: int, input_feeding: bool,
                 coverage: bool, coverage_weight: float, dropout: float, stream: int) -> None:
        super().__init__()
        self.input_feeding = input_feeding
        self.coverage = coverage
        self.coverage_weight = coverage_weight
        self.recurrent = RecurrentLayer(
            cell=cell, input_size=input_size + (memory_size if input_feeding else 0), hidden_size=hidden_size,
            bidirectional=False, residual=False, dropout=dropout, stream=stream,
        )
        self.attention = CoverageAttention(query_size=hidden_size, memory_size=memory_size, coverage=coverage)
        self.gate_input = nn.Linear(input_size, 1)
        self.output_size = hidden_size
        self.context_size = memory_size

    def forward(self, x: tuple[torch.Tensor, ...], lengths) -> tuple[torch.Tensor, ...]:
        memory, tgt_x, src = x
        src_lengths, tgt_lengths = lengths
        batch, steps = tgt_x.shape[:2]
        mask = padding_mask(src_lengths.to(memory.device), memory.size(1))
        keys = self.attention.keys(memory)
        gate_x = self.gate_input(tgt_x)
        tgt_x = self.recurrent.dropout(tgt_x, steps=int(tgt_lengths.max()))
        context = memory.new_zeros(batch, 1, self.context_size)
        coverage = memory.new_zeros(batch, 1, memory.size(1))
        hx, outputs, contexts, attentions, penalties = None, [], [], [], []
        for t in range(steps):
            (h, context, weights), hx = self._step(tgt_x[:, t : t + 1], hx, context, memory, keys, mask, coverage)
            penalties.append(torch.minimum(weights, coverage).sum(-1))
            coverage = coverage + weights
            outputs.append(h)
            contexts.append(context)
            attentions.append(weights)
        valid = padding_mask(tgt_lengths.to(memory.device), steps).to(memory.dtype)
        weight = self.coverage_weight if self.coverage else 0.0
        coverage_loss = torch.cat(penalties, dim=1) * valid * weight
        v = valid.unsqueeze(-1)
        return (torch.cat(outputs, dim=1) * v, torch.cat(contexts, dim=1) * v, torch.cat(attentions, dim=1) * v,
                gate_x, coverage_loss, src)

    def _step(self, x_t, hx, last_context, memory, keys, mask, coverage):
        x_in = torch.cat([x_t, last_context], dim=-1) if self.input_feeding else x_t
        h, hx = self.recurrent.rnn(x_in, hx)
        context, weights = self.attention(h, memory, keys, mask, coverage)
        return (h, context, weights), hx

    def step(self, tgt_x: torch.Tensor, hx, last_context: torch.Tensor, memory: CopyMemory, mask: torch.Tensor,
             coverage: torch.Tensor):
        """One inference step for ``N`` rows: ``tgt_x (N, 1, E)``, ``last_context (N, 1,
        H_mem)``, ``coverage (N, 1, S)`` -> ``((h, context, weights (N, 1, S), gate_x), hx)``."""
        states, keys, _ = memory
        gate_x = self.gate_input(tgt_x)
        (h, context, weights), hx = self._step(self.recurrent.dropout(tgt_x), hx, last_context, states, keys, mask,
                                               coverage)
        return (h, context, weights, gate_x), hx

    def flops_per_token(self) -> float:
        from models.attention import NOMINAL_SOURCE_LENGTH

        return self.recurrent.flops_per_token() + self.attention.flops(NOMINAL_SOURCE_LENGTH)


def copy_log_probs(vocab_probs: torch.Tensor, p_gen: torch.Tensor, attention: torch.Tensor,
                   src: torch.Tensor) -> torch.Tensor:
    """``log(p_gen P_vocab + (1 - p_gen) copy)`` over the extended ids: ``vocab_probs (B, T,
    V)``, ``p_gen (B, T, 1)``, ``attention (B, T, S)``, ``src (B, S)`` -> ``(B, T, V + X)``."""
    batch, steps, vocab = vocab_probs.shape
    extra = max(int(src.max()) + 1 - vocab, 0) if src.numel() else 0
    mixed = torch.cat([p_gen * vocab_probs, vocab_probs.new_zeros(batch, steps, extra)], dim=-1)
    index = src.unsqueeze(1).expand(-1, steps, -1)
    mixed = mixed.scatter_add(2, index, (1.0 - p_gen) * attention.to(mixed.dtype))
    return mixed.clamp_min(1e-12).log()  # a padded target step can be all zeros


class PointerGenerator(nn.Module):
    """``(h, context, attention, gate_x, coverage_loss, src)`` -> ``(log_probs (B, T, V +
    X), coverage_loss)``: Luong's attentional vector and output projection (as
    ``models.seq2seq.Generator``), mixed with the copy distribution by ``p_gen``."""

    def __init__(self, *, hidden_size: int, context_size: int, vocab_size: int, dropout: float, stream: int) -> None:
        super().__init__()
        self.combine = nn.Linear(hidden_size + context_size, hidden_size, bias=False)
        self.dropout = SeededDropout(dropout, stream=stream)
        self.proj = nn.Linear(hidden_size, vocab_size)
        self.gate = nn.Linear(hidden_size + context_size, 1, bias=False)
        self.output_size = vocab_size

    def distribution(self, h: torch.Tensor, context: torch.Tensor, attention: torch.Tensor, gate_x: torch.Tensor,
                     src: torch.Tensor) -> torch.Tensor:
        both = torch.cat([h, context], dim=-1)
        logits = self.proj(self.dropout(torch.tanh(self.combine(both))))
        wide = torch.promote_types(logits.dtype, torch.float32)  # half precision mixes in float32
        p_gen = torch.sigmoid(self.gate(both) + gate_x).to(wide)
        return copy_log_probs(torch.softmax(logits.to(wide), dim=-1), p_gen, attention, src)

    def forward(self, x: tuple[torch.Tensor, ...], lengths) -> tuple[torch.Tensor, torch.Tensor]:
        h, context, attention, gate_x, coverage_loss, src = x
        return self.distribution(h, context, attention, gate_x, src), coverage_loss

    def flops_per_token(self) -> float:
        return 2.0 * (self.combine.weight.numel() + self.proj.weight.numel() + self.gate.weight.numel())


class PointerSeq2Seq(LayerStack):
    """The whole pointer-generator, or a contiguous slice of it (a pipeline stage).

    ``forward((src (B, S), tgt_in (B, T)), (src_lengths, tgt_lengths))`` gives
    ``(log_probs (B, T, V + X), coverage_loss (B, T))`` on the whole model. Incremental
    decoding (``encode``, ``init_decoder_state``, ``decode_step``, ``reorder_state``: what
    ``models.decoding`` drives) needs the whole model."""

    def _parts(self):
        layers = list(self.layers.values())
        if not (isinstance(layers[0], CopySourceEmbedding) and isinstance(layers[-1], PointerGenerator)):
            keys = list(self.layers.keys())
            raise RuntimeError("incremental decoding needs the whole model; "
                               f"this one holds layers {keys[0]}..{keys[-1]}")
        split = next(i for i, layer in enumerate(layers) if isinstance(layer, CopyTargetEmbedding))
        return layers[:split], layers[split], layers[split + 1 : -1], layers[-1]

    @torch.no_grad()
    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> CopyMemory:
        """``src (B, S)`` extended ids, ``src_lengths (B,)`` int64 CPU -> ``(memory, keys, src)``."""
        encoder, _, decoder, _ = self._parts()
        batch = src.size(0)
        x = (src, torch.zeros(batch, 0, dtype=torch.int64, device=src.device))
        lengths = (src_lengths, torch.zeros(batch, dtype=torch.int64))
        for layer in encoder:
            x = layer(x, lengths)
        memory = x[0]
        return memory, decoder[0].attention.keys(memory), src

    def init_decoder_state(self, batch: int) -> DecoderState:
        """Zeros: ``(h, c, context, coverage)`` (LSTM) or ``(h, context, coverage)`` (GRU);
        ``coverage`` starts ``(1, N, 0)`` and takes the source's width at the first step."""
        _, _, decoder, _ = self._parts()
        rnn = decoder[0].recurrent.rnn
        weight = rnn.weight_hh_l0
        h = weight.new_zeros(len(decoder), batch, rnn.hidden_size)
        context = weight.new_zeros(1, batch, decoder[0].context_size)
        coverage = weight.new_zeros(1, batch, 0)
        return (h, torch.zeros_like(h), context, coverage) if isinstance(rnn, nn.LSTM) else (h, context, coverage)

    @staticmethod
    def reorder_state(state: DecoderState, index: torch.Tensor) -> DecoderState:
        return tuple(t.index_select(1, index) for t in state)

    @torch.no_grad()
    def decode_step(self, prev_tokens: torch.Tensor, state: DecoderState, memory: CopyMemory,
                    src_lengths: torch.Tensor) -> tuple[torch.Tensor, DecoderState]:
        """Feed ``prev_tokens (N,)`` (extended ids; BOS first) and get ``log_probs (N, V +
        X)`` of the next token; equals the teacher-forced forward step by step."""
        _, target_embedding, decoder, generator = self._parts()
        states, _, src = memory
        mask = padding_mask(src_lengths.to(states.device), states.size(1))
        *rnn_state, last_context, coverage = state
        if coverage.size(-1) == 0:
            coverage = states.new_zeros(1, states.size(0), states.size(1))
        lstm = len(rnn_state) == 2
        tgt_x = target_embedding.embed(prev_tokens.unsqueeze(1))
        (h, context, weights, gate_x), hx = decoder[0].step(
            tgt_x, _layer_state(rnn_state, 0, lstm), last_context.transpose(0, 1), memory, mask,
            coverage.transpose(0, 1))
        hxs = [hx]
        x = (h, context)
        for i, layer in enumerate(decoder[1:], start=1):
            x, hx = layer.step(x, _layer_state(rnn_state, i, lstm))
            hxs.append(hx)
        log_probs = generator.distribution(x[0], context, weights, gate_x, src).squeeze(1)
        stacked = tuple(torch.cat(parts, dim=0) for parts in zip(*hxs)) if lstm else (torch.cat(hxs, dim=0),)
        return log_probs, (*stacked, context.transpose(0, 1), coverage + weights.transpose(0, 1))


def copy_loss(out: tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor, label_smoothing: float = 0.0,
              pad_id: int = 0) -> torch.Tensor:
    """Summed negative log-likelihood of ``targets (B, T)`` (extended ids) under ``out``'s
    log-probabilities, padded steps ignored, plus the summed coverage loss. Label
    smoothing spreads ``label_smoothing`` of the mass uniformly over the extended ids."""
    log_probs, coverage_loss = out
    valid = targets != pad_id
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if label_smoothing > 0:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * log_probs.mean(-1)
    return nll.masked_fill(~valid, 0.0).sum() + coverage_loss.masked_fill(~valid, 0.0).sum()


def pointer_layer_factories(config: ModelConfig, *, vocab_size: int) -> list[Callable[[], nn.Module]]:
    """One constructor per layer, in order; one vocabulary for source and target (copying
    needs the two to share ids)."""
    h, e = config.hidden_size, config.embed_dim
    init_std = embedding_init_std(e, False)
    source = lambda config: CopySourceEmbedding(vocab_size, e, init_std=init_std)  # noqa: E731
    factories, memory_size = encoder_factories(config, source=source)
    factories.append(partial(CopyTargetEmbedding, vocab_size, e, init_std=init_std))
    factories.append(partial(
        PointerDecoderLayer, cell=config.cell, input_size=e, hidden_size=h, memory_size=memory_size,
        input_feeding=config.input_feeding, coverage=config.coverage, coverage_weight=config.coverage_weight,
        dropout=config.dropout, stream=len(factories),
    ))
    for i in range(1, config.decoder_layers):
        factories.append(partial(
            DecoderLayer, cell=config.cell, hidden_size=h, context_size=memory_size,
            residual=i >= config.decoder_residual_from, dropout=config.dropout, stream=len(factories),
        ))
    factories.append(partial(PointerGenerator, hidden_size=h, context_size=memory_size, vocab_size=vocab_size,
                             dropout=config.dropout, stream=len(factories)))
    return factories


def build_pointer(config: ModelConfig, *, vocab_size: int, seed: int = 0,
                  keep: Iterable[int] | None = None) -> PointerSeq2Seq:
    """The model, or with ``keep`` only those (contiguous) layers of it."""
    return PointerSeq2Seq(build_layers(pointer_layer_factories(config, vocab_size=vocab_size), seed=seed, keep=keep))

