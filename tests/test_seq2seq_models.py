"""seq2seq model unit tests: layout, masking, per-layer seeds, cuts, tying, incremental
decoding equals teacher forcing. No Ray."""

from __future__ import annotations

import pytest
import torch

from models import ModelConfig
from models.attention import Attention
from models.dropout import SeededDropout, dropout_key
from models.layers import PAD_ID, padding_mask
from models.seq2seq import (
    BOS_ID,
    AttentionDecoderLayer,
    DecoderLayer,
    EncoderLayer,
    Generator,
    SourceEmbedding,
    TargetEmbedding,
    build_seq2seq,
    seq2seq_num_layers,
    sequence_loss,
    source_tokens,
    tied_layer_indices,
)
from pipelines.config import ConfigError, recipe_from_dict

SRC_VOCAB, TGT_VOCAB = 23, 19


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run faster on one thread


def small_config(**overrides) -> ModelConfig:
    values = dict(kind="seq2seq", embed_dim=8, hidden_size=8, num_layers=2, decoder_layers=3, dropout=0.0)
    values.update(overrides)
    return ModelConfig(**values)


def build(config: ModelConfig, **kwargs):
    return build_seq2seq(config, source=source_tokens(SRC_VOCAB), tgt_vocab_size=TGT_VOCAB, **kwargs)


def toy_batch(seed: int = 0):
    """Three rows of source and target, PAD-padded: ``(src, tgt_in), (src_len, tgt_len)``."""
    g = torch.Generator().manual_seed(seed)
    src_lengths, tgt_lengths = torch.tensor([6, 4, 1]), torch.tensor([3, 5, 2])
    src = torch.randint(4, SRC_VOCAB, (3, 6), generator=g)
    tgt_in = torch.randint(4, TGT_VOCAB, (3, 5), generator=g)
    tgt_in[:, 0] = BOS_ID
    src[padding_mask(src_lengths, 6).logical_not()] = PAD_ID
    tgt_in[padding_mask(tgt_lengths, 5).logical_not()] = PAD_ID
    return (src, tgt_in), (src_lengths, tgt_lengths)


ARCHITECTURES = [("lstm", "luong"), ("gru", "bahdanau"), ("lstm", "bahdanau"), ("gru", "luong")]


def test_config_accepts_seq2seq_and_names_bad_fields():
    assert small_config().decoder_layers == 3
    # An unknown kind is the recipe's to refuse: no application answers that model shape.
    with pytest.raises(ConfigError,
                       match=r"model kind/input/decoder vec2vec/text is not supported; known: ") as refused:
        recipe_from_dict({"model": {"kind": "vec2vec"}})
    known = str(refused.value).split("known: ", 1)[1].split(", ")
    assert {"seq2vec/text", "seq2seq/text/attention", "language_model/text", "vec2seq/image"} <= set(known)
    with pytest.raises(ValueError, match=r"model.attention: 'dot' is not one of"):
        small_config(attention="dot")
    with pytest.raises(ValueError, match=r"model.decoder_layers must be >= 1, got 0"):
        small_config(decoder_layers=0)
    with pytest.raises(ValueError, match=r"model.tie_embeddings needs embed_dim == hidden_size \(8 != 16\)"):
        small_config(tie_embeddings=True, hidden_size=16)
    with pytest.raises(ValueError, match=r"model.decoder_residual_from must be >= 1 .* got 0"):
        small_config(decoder_residual_from=0)


def test_layer_list_is_the_documented_cuttable_order():
    config = small_config(num_layers=3, decoder_layers=4, residual_from=2, decoder_residual_from=2, dropout=0.1)
    model = build(config)
    kinds = [type(layer) for layer in model.layers.values()]
    assert kinds == [SourceEmbedding, EncoderLayer, EncoderLayer, EncoderLayer, TargetEmbedding,
                     AttentionDecoderLayer, DecoderLayer, DecoderLayer, DecoderLayer, Generator]
    assert len(kinds) == seq2seq_num_layers(config)
    encoder = [model.layers[str(i)].recurrent for i in (1, 2, 3)]
    assert [layer.bidirectional for layer in encoder] == [True, False, False]
    assert [layer.residual for layer in encoder] == [False, False, True]
    assert [model.layers[str(i)].residual for i in (6, 7, 8)] == [False, True, True]  # decoder layers 1-3
    costs = model.layer_costs()
    assert len(costs) == len(kinds) and all(c > 0 for c in costs)
    # Every dropout draws from its own stream, numbered by the layer it sits in.
    streams = {name: m.stream for name, m in model.named_modules() if isinstance(m, SeededDropout)}
    assert len(set(streams.values())) == len(streams)
    assert all(name.split(".")[1] == str(stream) for name, stream in streams.items())


def test_generator_is_the_expensive_layer_for_a_real_vocabulary():
    model = build_seq2seq(small_config(), source=source_tokens(100), tgt_vocab_size=8000)
    costs = model.layer_costs()
    assert costs[-1] == max(costs)


@pytest.mark.parametrize("kind", ["luong", "bahdanau"])
def test_attention_gives_padded_source_steps_zero_weight(kind):
    torch.manual_seed(0)
    attention = Attention(kind=kind, query_size=4, memory_size=6)
    query, memory = torch.randn(2, 3, 4), torch.randn(2, 5, 6)
    mask = padding_mask(torch.tensor([5, 2]), 5)
    context, weights = attention(query, memory, mask)
    assert context.shape == (2, 3, 6) and weights.shape == (2, 3, 5)
    assert torch.equal(weights[1, :, 2:], torch.zeros(3, 3))
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3))
    # Garbage (even inf-free huge values) in the padded memory never reaches the context...
    noisy = memory.clone()
    noisy[1, 2:] = 1e4
    torch.testing.assert_close(attention(query, noisy, mask)[0], context)
    # ...and more padding columns change nothing.
    padded = torch.cat([memory, torch.randn(2, 3, 6)], dim=1)
    torch.testing.assert_close(attention(query, padded, padding_mask(torch.tensor([5, 2]), 8))[0], context)


@pytest.mark.parametrize("cell, attention", ARCHITECTURES)
def test_padding_never_influences_valid_outputs(cell, attention):
    model = build(small_config(cell=cell, attention=attention)).eval()
    (src, tgt_in), lengths = toy_batch()
    logits = model((src, tgt_in), lengths)
    assert logits.shape == (3, 5, TGT_VOCAB)
    valid = padding_mask(lengths[1], 5)
    # Other token ids in padded source and target positions, and three more source columns.
    noisy_src = torch.cat([src, torch.full((3, 3), 7)], dim=1)
    noisy_src[~padding_mask(lengths[0], 9)] = 11
    noisy_tgt = tgt_in.masked_fill(~valid, 5)
    noisy = model((noisy_src, noisy_tgt), lengths)
    torch.testing.assert_close(noisy[valid], logits[valid])
    # Each sentence alone, unpadded, gives what it gets in the batch.
    for row in range(3):
        s, t = int(lengths[0][row]), int(lengths[1][row])
        alone = model((src[row : row + 1, :s], tgt_in[row : row + 1, :t]),
                      (lengths[0][row : row + 1], lengths[1][row : row + 1]))
        torch.testing.assert_close(alone[0], logits[row, :t], rtol=1e-5, atol=1e-6)


def test_a_slice_built_alone_has_the_full_models_weights():
    config = small_config()
    full = build(config, seed=7)
    part = build(config, seed=7, keep=range(3, 6))
    assert list(part.layers.keys()) == ["3", "4", "5"]
    full_state = full.state_dict()
    for name, value in part.state_dict().items():
        torch.testing.assert_close(value, full_state[name], rtol=0, atol=0)
    other_seed = build(config, seed=8)
    name = "layers.4.recurrent.rnn.weight_hh_l0"
    assert not torch.equal(other_seed.state_dict()[name], full_state[name])
    with pytest.raises(ValueError, match="contiguous"):
        build(config, keep=[1, 3])


@pytest.mark.parametrize("cell, attention", ARCHITECTURES[:2])
def test_chained_slices_equal_the_whole_model_at_every_cut(cell, attention):
    """What the pipeline engine relies on: stage 0 = layers 0..k, stage 1 = k+1..N,
    each built alone, compose to the whole model (dropout masks included)."""
    config = small_config(cell=cell, attention=attention, dropout=0.3)
    n = seq2seq_num_layers(config)
    full = build(config, seed=3).train()
    x, lengths = toy_batch()
    with dropout_key(3, 1, 0):
        expected = full(x, lengths)
    for k in range(n - 1):
        first = build(config, seed=3, keep=range(0, k + 1)).train()
        second = build(config, seed=3, keep=range(k + 1, n)).train()
        with dropout_key(3, 1, 0):
            boundary = first(x, lengths)
            assert isinstance(boundary, tuple) and all(isinstance(t, torch.Tensor) for t in boundary)
            torch.testing.assert_close(second(boundary, lengths), expected, rtol=0, atol=0)


def test_tied_embeddings_share_one_matrix_only_inside_one_model():
    config = small_config(tie_embeddings=True)
    embedding, generator = tied_layer_indices(config)
    assert (embedding, generator) == (3, seq2seq_num_layers(config) - 1)
    assert tied_layer_indices(small_config()) is None
    model = build_seq2seq(config, source=source_tokens(SRC_VOCAB), tgt_vocab_size=SRC_VOCAB)
    shared = model.layers[str(embedding)].embedding.embed.weight
    assert model.layers[str(generator)].proj.weight is shared
    untied = build_seq2seq(small_config(), source=source_tokens(SRC_VOCAB), tgt_vocab_size=SRC_VOCAB)
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in model.parameters()) == shared.numel()
    # Both uses of the matrix train it.
    (src, tgt_in), lengths = toy_batch()
    model((src, tgt_in), lengths).sum().backward()
    assert shared.grad is not None and shared.grad[PAD_ID].abs().sum() > 0  # from the projection only
    # A stage holding only the generator has its own matrix: the engine must not cut there.
    alone = build_seq2seq(config, source=source_tokens(SRC_VOCAB), tgt_vocab_size=SRC_VOCAB, keep=[generator])
    assert not torch.equal(alone.layers[str(generator)].proj.weight, shared)


@pytest.mark.parametrize("input_feeding", [False, True], ids=["plain", "input-fed"])
@pytest.mark.parametrize("cell, attention", ARCHITECTURES)
def test_decoding_step_by_step_equals_teacher_forcing(cell, attention, input_feeding):
    """Training (whole target at once) and inference (one token at a time) agree."""
    config = small_config(cell=cell, attention=attention, num_layers=1, residual_from=1, input_feeding=input_feeding)
    model = build(config).eval()
    (src, tgt_in), lengths = toy_batch(seed=1)
    expected = torch.log_softmax(model((src, tgt_in), lengths), dim=-1)
    memory = model.encode(src, lengths[0])
    state = model.init_decoder_state(3)
    assert memory.shape == (3, 6, 16)  # one bidirectional layer: 2 * hidden
    valid = padding_mask(lengths[1], 5)
    for t in range(5):
        log_probs, state = model.decode_step(tgt_in[:, t], state, memory, lengths[0])
        torch.testing.assert_close(log_probs[valid[:, t]], expected[valid[:, t], t], rtol=0, atol=1e-5)


def test_reorder_state_picks_rows_of_every_layer():
    model = build(small_config(cell="lstm"))
    state = tuple(torch.randn(3, 4, 8) for _ in range(2))
    reordered = model.reorder_state(state, torch.tensor([2, 2, 0]))
    assert len(reordered) == 2 and reordered[0].shape == (3, 3, 8)
    torch.testing.assert_close(reordered[1][:, 1], state[1][:, 2])
    # GRU: every layer's h, then the last context (two encoder layers: H_mem = 8).
    assert [t.shape for t in build(small_config(cell="gru")).init_decoder_state(5)] == [(3, 5, 8), (1, 5, 8)]


def test_incremental_decoding_needs_the_whole_model():
    part = build(small_config(), keep=range(0, 3))
    with pytest.raises(RuntimeError, match=r"needs the whole model; this one holds layers 0..2"):
        part.encode(torch.ones(1, 2, dtype=torch.int64), torch.tensor([2]))


def test_sequence_loss_sums_over_valid_target_tokens_only():
    logits = torch.randn(2, 3, 5)
    targets = torch.tensor([[4, 3, PAD_ID], [4, 4, 3]])
    by_hand = -sum(
        torch.log_softmax(logits[b, t], -1)[targets[b, t]]
        for b in range(2) for t in range(3) if targets[b, t] != PAD_ID
    )
    torch.testing.assert_close(sequence_loss(logits, targets), by_hand)
    assert sequence_loss(logits, targets, label_smoothing=0.1) > 0
