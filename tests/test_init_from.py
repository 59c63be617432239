"""``train.init_from``: which tensors a checkpoint gives a new model, and what the log says
about the ones it cannot (same name, another shape). No Ray."""

from __future__ import annotations

import torch

from models import ModelConfig, build_seq2vec
from models.frontends import tokens
from pipelines.engine.worker import init_from_line, init_matching


def test_tensors_of_another_width_are_left_out_and_named(tmp_path):
    narrow = build_seq2vec(ModelConfig(embed_dim=8, hidden_size=8, num_layers=1), frontend=tokens(30), num_labels=3,
                           seed=1)
    torch.save(narrow.state_dict(), tmp_path / "model.pt")
    wide = build_seq2vec(ModelConfig(embed_dim=8, hidden_size=12, num_layers=1), frontend=tokens(30), num_labels=3,
                         seed=2)
    before = {k: v.clone() for k, v in wide.state_dict().items()}

    loaded, total, reshaped = init_matching(wide, tmp_path / "model.pt")

    after, source = wide.state_dict(), narrow.state_dict()
    same_shape = [k for k in after if after[k].shape == source[k].shape]
    assert loaded == len(same_shape) and total == len(after) and 0 < loaded < total
    for name in after:
        expected = source[name] if name in same_shape else before[name]
        torch.testing.assert_close(after[name], expected, rtol=0, atol=0)
    assert sorted(r.split(" ")[0] for r in reshaped) == sorted(set(after) - set(same_shape))
    weight = next(r for r in reshaped if ".weight_hh" in r)
    assert "(32, 8) -> (48, 12)" in weight  # 4 LSTM gates x width

    line = init_from_line(0, loaded, total, reshaped, "runs/narrow/checkpoint")
    assert line.startswith(f"stage 0: {loaded} of {total} parameter tensors from runs/narrow/checkpoint; "
                           "not taken, another shape there: ")
    assert f"({len(reshaped)} in all)" in line and line.count(" -> ") == 3


def test_a_checkpoint_of_the_same_shape_gives_every_tensor(tmp_path):
    config = ModelConfig(embed_dim=8, hidden_size=8, num_layers=2)
    source = build_seq2vec(config, frontend=tokens(30), num_labels=3, seed=1)
    torch.save(source.state_dict(), tmp_path / "model.pt")
    target = build_seq2vec(config, frontend=tokens(30), num_labels=3, seed=2)
    loaded, total, reshaped = init_matching(target, tmp_path / "model.pt")
    assert loaded == total and reshaped == []
    assert (init_from_line(1, loaded, total, reshaped, "ckpt")
            == f"stage 1: {total} of {total} parameter tensors from ckpt")
