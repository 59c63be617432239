"""The layers a rayseq stack is made of.

Every layer has the same calling convention, so a stage plan can cut between any two::

    y = layer(x, lengths)

``lengths`` is a ``(batch,)`` int64 tensor on the CPU (what ``pack_padded_sequence``
wants) giving each row's number of valid steps; steps ``t >= lengths[b]`` are padding
and never influence any valid output.

Layers that are causal in time (``time_streaming = True``) also offer::

    y_chunk, state = layer.forward_chunk(x_chunk, lengths, offset, state)

over steps ``offset .. offset + w`` of the sequence, carrying their recurrent state from
chunk to chunk; concatenating the chunks gives ``layer(x, lengths)`` (up to float
rounding: each call, whole row or chunk, runs dense or packed by its own padded share).
The wavefront pipeline schedule relies on it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.dropout import SeededDropout

PAD_ID = 0

# A batch with at most this share of padded steps runs as one dense RNN call instead of
# a packed one: PyTorch's dense CPU kernels (oneDNN for LSTM, one input projection for
# all steps for GRU) beat the packed step-by-step path. bench/rnn_dense.py (bi + uni
# layer, 256 wide, 1 thread): dense faster up to about 35% padding, slower from 40%,
# where skipping the padded work wins (figures in bench/README.md).
DENSE_MAX_PADDING = 0.25


def runs_dense(device_type: str, padding: float) -> bool:
    """Whether a batch with ``padding`` (the padded share of its ``rows x longest``
    steps) runs as one dense RNN call on a ``device_type`` device, or packed.

    No padding: always dense; packing would only sort and copy the rows. On the CPU,
    up to :data:`DENSE_MAX_PADDING`. On CUDA, never with padding: cuDNN takes a packed
    batch as it is (one call over the variable lengths, both directions of a
    bidirectional layer in it, no work on padded steps), whereas the dense path over
    padding adds masking and splits a bidirectional layer into two one-direction calls
    with a reversal gather each. (Reasoned from cuDNN's interface, not yet timed on a
    GPU; bench/rnn_dense.py times the two paths.) Other devices are treated as CUDA."""
    return padding == 0.0 or (device_type == "cpu" and padding <= DENSE_MAX_PADDING)


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(batch, max_len)`` bool, True on valid steps."""
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)


class TokenEmbedding(nn.Module):
    """``(batch, time)`` token ids -> ``(batch, time, embed_dim)`` vectors."""

    def __init__(self, vocab_size: int, embed_dim: int, *, init_std: float, frozen: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        nn.init.normal_(self.embed.weight, std=init_std)
        with torch.no_grad():
            self.embed.weight[PAD_ID].zero_()
        self.embed.weight.requires_grad_(not frozen)  # frozen: pretrained vectors the optimizer never sees
        self.output_size = embed_dim

    time_streaming = True

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.embed(tokens)

    def forward_chunk(self, tokens: torch.Tensor, lengths: torch.Tensor, offset: int,
                      state: None) -> tuple[torch.Tensor, None]:
        return self.embed(tokens), None

    def flops_per_token(self) -> float:
        """A lookup: about one copy of the vector, however large the table."""
        return float(self.output_size)


class RecurrentLayer(nn.Module):
    """One LSTM/GRU layer over padded sequences: ``(B, T, in) -> (B, T, out)``.

    Padded steps neither feed the recurrence nor leak into the backward direction of a
    bidirectional layer; their outputs are zeros. A ragged batch is packed; a nearly full
    one runs dense (:data:`DENSE_MAX_PADDING`), with the same result.
    ``out = hidden_size * (2 if bidirectional else 1)``. With ``residual`` the input is
    added to the output (GNMT's residual connections; needs ``in == out``).
    """

    def __init__(
        self,
        *,
        cell: str,
        input_size: int,
        hidden_size: int,
        bidirectional: bool,
        residual: bool,
        dropout: float,
        stream: int,
    ) -> None:
        super().__init__()
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.output_size = hidden_size * (2 if bidirectional else 1)
        if residual and input_size != self.output_size:
            raise ValueError(
                f"residual layer needs input width == output width ({input_size} != {self.output_size})"
            )
        self.residual = residual
        self.bidirectional = bidirectional
        self.dropout = SeededDropout(dropout, stream=stream)
        self.rnn = rnn_cls(
            input_size, hidden_size, batch_first=True, bidirectional=bidirectional
        )
        if cell == "lstm":
            _open_forget_gates(self.rnn)

    @property
    def time_streaming(self) -> bool:
        """A unidirectional layer is causal; a bidirectional one needs the whole row."""
        return not self.bidirectional

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if int(lengths.min()) < 1:
            raise ValueError(f"every row needs at least one step, got lengths {lengths.tolist()}")
        steps = int(lengths.max())
        x_in = self.dropout(x, steps=steps)
        if self._runs_dense(x, lengths, steps):
            y = self._dense(x_in[:, :steps], lengths)
            if steps < x.size(1):
                y = nn.functional.pad(y, (0, 0, 0, x.size(1) - steps))
        else:
            packed = pack_padded_sequence(x_in, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.rnn(packed)
            y, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        return y + x if self.residual else y

    def step_without_residual(self, x: torch.Tensor,
                              state: tuple[torch.Tensor, ...] | None) -> tuple[torch.Tensor, tuple]:
        """One time step of a unidirectional layer for every row (sampling): ``x (B, in)``
        -> ``(B, H)`` before any residual, and the next state ``(h, c)`` or ``(h,)``
        (each ``(1, B, H)``; None: zeros). No dropout: sampling runs in eval mode."""
        if state is None:
            zeros = x.new_zeros(1, x.size(0), self.rnn.hidden_size)
            state = (zeros, zeros) if isinstance(self.rnn, nn.LSTM) else (zeros,)
        out, h_n = self.rnn(x[:, None], state if len(state) == 2 else state[0])
        return out[:, 0], (h_n if isinstance(h_n, tuple) else (h_n,))

    @staticmethod
    def _runs_dense(x: torch.Tensor, lengths: torch.Tensor, steps: int) -> bool:
        """:func:`runs_dense` for this batch (bench/rnn_dense.py patches this decision)."""
        padding = 1.0 - float(lengths.sum()) / (lengths.numel() * steps)
        return runs_dense(x.device.type, padding)

    def _dense(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The packed result computed over the padded rectangle ``x (B, T, in)``,
        ``T = lengths.max()``. Padding sits after each row's valid steps, so the forward
        direction never carries it into a valid output; the backward direction runs
        over each row reversed within its length (padding again last); padded outputs
        are zeroed as packing leaves them."""
        steps = x.size(1)
        if bool((lengths == steps).all()):
            return self.rnn(x)[0]
        valid = padding_mask(lengths.to(x.device), steps).unsqueeze(-1)
        x = x.masked_fill(~valid, 0.0)  # whatever padding holds (NaN too) stays out of gradients
        if not self.bidirectional:
            y = self.rnn(x)[0]
        else:
            order = _reversed_within(lengths, steps).to(x.device)
            back = self._one_direction(_gather_steps(x, order), reverse=True)
            y = torch.cat([self._one_direction(x, reverse=False), _gather_steps(back, order)], dim=-1)
        return y.masked_fill(~valid, 0.0)

    def _one_direction(self, x: torch.Tensor, *, reverse: bool) -> torch.Tensor:
        """One direction of the bidirectional ``self.rnn`` as a unidirectional pass."""
        # nn.LSTM/GRU keep [w_ih, w_hh, b_ih, b_hh] per direction, forward first.
        weights = self.rnn._flat_weights[4:] if reverse else self.rnn._flat_weights[:4]
        h0 = x.new_zeros(1, x.size(0), self.rnn.hidden_size)
        # positional: has_biases, num_layers, dropout, train, bidirectional, batch_first
        if isinstance(self.rnn, nn.LSTM):
            return torch.lstm(x, (h0, h0), weights, True, 1, 0.0, self.training, False, True)[0]
        return torch.gru(x, h0, weights, True, 1, 0.0, self.training, False, True)[0]

    def forward_chunk(
        self, x: torch.Tensor, lengths: torch.Tensor, offset: int, state: tuple[torch.Tensor, ...] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Steps ``offset .. offset + w`` of every row: ``x (B, w, in) -> (B, w, out)``.

        ``state`` is the recurrent state after step ``offset - 1`` (``(h, c)`` for an
        LSTM, ``(h,)`` for a GRU, each ``(1, B, hidden)``; None at the start). Outputs
        at steps past a row's length are zeros (plus the input with ``residual``), as in
        :meth:`forward`. A chunk whose padded share passes :func:`runs_dense` runs as one
        dense call over all its rows (padded steps zeroed in and out, as :meth:`_dense`
        does), else packed over the rows still running. The state returned for a row
        that has ended is not defined (dense: it ran on over zeros; packed: it is kept)
        and must feed nothing but that row's padding, which is all the wavefront does.
        """
        if self.bidirectional:
            raise ValueError("a bidirectional layer cannot run over time chunks")
        batch, width = x.size(0), x.size(1)
        steps = (lengths - offset).clamp(0, width)
        if state is None:
            zeros = x.new_zeros(1, batch, self.rnn.hidden_size)
            state = (zeros, zeros) if isinstance(self.rnn, nn.LSTM) else (zeros,)
        x_in = self.dropout(x, offset=offset, steps=int(lengths.max()))
        if self._runs_dense(x, steps, width):
            y, h_n = self._dense_chunk(x_in, steps, state)
        else:
            y, h_n = self._packed_chunk(x_in, steps, state)
        return (y + x if self.residual else y), h_n

    def _dense_chunk(self, x: torch.Tensor, steps: torch.Tensor,
                     state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One dense call over the chunk ``x (B, w, in)``; ``steps``: each row's valid
        steps in it (0 for a row that ended before it)."""
        width = x.size(1)
        full = bool((steps == width).all())
        if not full:
            valid = padding_mask(steps.to(x.device), width).unsqueeze(-1)
            x = x.masked_fill(~valid, 0.0)  # whatever padding holds stays out of gradients
        y, h_n = self.rnn(x, state if len(state) == 2 else state[0])
        if not full:
            y = y.masked_fill(~valid, 0.0)
        return y, (h_n if isinstance(h_n, tuple) else (h_n,))

    def _packed_chunk(self, x: torch.Tensor, steps: torch.Tensor,
                      state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The chunk packed over the rows still running; ended rows keep their state."""
        batch, width = x.size(0), x.size(1)
        live = steps > 0
        every_row = bool(live.all())
        rows = live.nonzero().squeeze(1).to(x.device)
        if not every_row:
            x, steps = x.index_select(0, rows), steps[live]
        hx = tuple(s if every_row else s.index_select(1, rows) for s in state)
        packed = pack_padded_sequence(x, steps, batch_first=True, enforce_sorted=False)
        out, h_n = self.rnn(packed, hx if len(hx) == 2 else hx[0])
        h_n = h_n if isinstance(h_n, tuple) else (h_n,)
        y, _ = pad_packed_sequence(out, batch_first=True, total_length=width)
        if not every_row:
            y = y.new_zeros(batch, width, y.size(2)).index_copy(0, rows, y)
            h_n = tuple(s.index_copy(1, rows, h) for s, h in zip(state, h_n))
        return y, h_n

    def flops_per_token(self) -> float:
        """Every weight is used once per step: a multiply and an add each."""
        return 2.0 * sum(p.numel() for p in self.rnn.parameters())


def _reversed_within(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """``(B, steps)`` step indices that reverse each row's first ``lengths[b]`` steps and
    leave its padding in place (its own inverse)."""
    t = torch.arange(steps).unsqueeze(0)
    last = (lengths - 1).unsqueeze(1)
    return torch.where(t <= last, last - t, t)


def _gather_steps(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    return x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.size(-1)))


def _open_forget_gates(lstm: nn.LSTM) -> None:
    """Forget-gate bias 1 (Jozefowicz et al. 2015): the cell starts by remembering, so
    gradients reach early steps from the first update. On the translation demo's 2+2
    layer model, validation token accuracy after 200 steps goes 0.42 -> 0.58."""
    with torch.no_grad():
        for name, bias in lstm.named_parameters():
            if name.startswith("bias_ih"):  # PyTorch gate order: input, forget, cell, output
                hidden = bias.numel() // 4
                bias[hidden : 2 * hidden].fill_(1.0)


class PooledClassifier(nn.Module):
    """``(B, T, features)`` states -> ``(B, num_labels)`` logits.

    ``last`` pooling takes the state at each row's last valid step (for a
    bidirectional top layer: forward half at ``length - 1``, backward half at step 0,
    each direction's summary of the whole row); ``mean`` averages valid steps only;
    ``max`` takes each feature's largest value over valid steps; ``attention`` averages
    valid steps with softmax weights from a one-hidden-layer scorer (``tanh``, half the
    input width) of each step's state; padded steps get weight 0.
    """

    time_streaming = False  # pools over every step of the row

    def __init__(
        self,
        *,
        input_size: int,
        num_labels: int,
        pooling: str,
        bidirectional_input: bool,
        dropout: float,
        stream: int,
    ) -> None:
        super().__init__()
        self.pooling = pooling
        self.bidirectional_input = bidirectional_input
        self.dropout = SeededDropout(dropout, stream=stream)
        if pooling == "attention":
            scorer_width = max(input_size // 2, 1)
            self.scorer = nn.Sequential(nn.Linear(input_size, scorer_width), nn.Tanh(),
                                        nn.Linear(scorer_width, 1, bias=False))
        self.proj = nn.Linear(input_size, num_labels)

    def pool(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.to(x.device)
        if self.pooling == "mean":
            mask = padding_mask(lengths, x.size(1)).unsqueeze(-1).to(x.dtype)
            return (x * mask).sum(1) / lengths.clamp(min=1).unsqueeze(1).to(x.dtype)
        if self.pooling == "max":
            valid = padding_mask(lengths.clamp(min=1), x.size(1)).unsqueeze(-1)
            return x.masked_fill(~valid, float("-inf")).amax(1)
        if self.pooling == "attention":
            valid = padding_mask(lengths.clamp(min=1), x.size(1)).unsqueeze(-1)
            weights = self.scorer(x).masked_fill(~valid, float("-inf")).softmax(1)
            return (weights * x).sum(1)
        rows = torch.arange(x.size(0), device=x.device)
        last = x[rows, (lengths - 1).clamp(min=0)]
        if not self.bidirectional_input:
            return last
        half = x.size(-1) // 2
        return torch.cat([last[:, :half], x[:, 0, half:]], dim=-1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(self.pool(x, lengths)))

    def flops_per_token(self) -> float:
        """Pooling touches every step (the attention scorer is a matmul per step); the
        projection runs once per row (~1/20 steps)."""
        scorer = 2.0 * sum(p.numel() for p in self.scorer.parameters()) if self.pooling == "attention" else 0.0
        return float(self.proj.in_features) + scorer + 2.0 * self.proj.weight.numel() / 20
