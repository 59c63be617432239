"""Video: the per-frame CNN front end, the vec2seq captioner, video-folder listing, the
Ray Data ingest with frame bucketing, and inference on checkpoints. Clips are made by the
tests (``pipelines.media.video.synthetic``), never the shared files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import mp4_bytes
from models import ModelConfig, build_seq2vec, frontends
from models.decoding import generate
from models.seq2seq import source
from models.vec2seq import build_vec2seq, vec2seq_num_layers
from models.video import FrameEncoder
from pipelines.config import ConfigError, recipe_from_dict
from pipelines.errors import DataError
from pipelines.scoring.text import caption_scores

SMALL = dict(embed_dim=12, hidden_size=12, num_layers=2, frontend_channels=4, dropout=0.0)


def _clips(rows: int, steps: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (rows, steps, size, size, 3), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


# ---------------------------------------------------------------- front end and models


def test_frame_encoder_ignores_padding_and_streams_in_chunks(one_thread):
    encoder = FrameEncoder(frame_size=16, channels=4, output_size=8).double()
    frames, lengths = _clips(3, 7), torch.tensor([7, 4, 1])
    out = encoder(frames, lengths)
    assert out.shape == (3, 7, 8)
    assert torch.all(out[1, 4:] == 0) and torch.all(out[2, 1:] == 0)
    alone = encoder(frames[1:2, :4], lengths[1:2])
    torch.testing.assert_close(out[1:2, :4], alone)
    noisy = frames.clone()
    noisy[1, 4:] = 255  # whatever sits in the padding
    torch.testing.assert_close(encoder(noisy, lengths), out)
    chunks = [encoder.forward_chunk(frames[:, i : i + 3], lengths, i, None)[0] for i in range(0, 7, 3)]
    torch.testing.assert_close(torch.cat(chunks, dim=1), out)


def test_frame_encoder_checks_its_input():
    encoder = FrameEncoder(frame_size=16, channels=4, output_size=8)
    with pytest.raises(ValueError, match=r"expected frames \(batch, time, 16, 16, 3\)"):
        encoder(_clips(2, 3, size=24), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="multiple of 8"):
        FrameEncoder(frame_size=20, channels=4, output_size=8)


def test_the_rnn_sees_frame_order_and_the_bag_of_frames_ablation_does_not(one_thread):
    frames, lengths = _clips(2, 6), torch.tensor([6, 6])
    shuffled = frames[:, torch.tensor([3, 0, 5, 1, 4, 2])]
    bag = build_seq2vec(ModelConfig(input="video", **{**SMALL, "num_layers": 0}), frontend=frontends.frames(16),
                        num_labels=8).eval()
    torch.testing.assert_close(bag(frames, lengths), bag(shuffled, lengths))
    rnn = build_seq2vec(ModelConfig(input="video", **SMALL), frontend=frontends.frames(16), num_labels=8).eval()
    assert not torch.allclose(rnn(frames, lengths), rnn(shuffled, lengths))


def test_vec2seq_decodes_step_by_step_exactly_as_it_trains(one_thread):
    config = ModelConfig(kind="vec2seq", input="video", decoder_layers=2, **SMALL)
    model = build_vec2seq(config, source=source(frontends.frames(16)), tgt_vocab_size=20).double().eval()
    assert len(model.layers) == vec2seq_num_layers(config)
    frames, lengths = _clips(3, 5), torch.tensor([5, 3, 2])
    tokens = torch.cat([torch.full((3, 1), 2), torch.randint(4, 20, (3, 5))], dim=1)
    teacher = torch.log_softmax(model((frames, tokens), (lengths, torch.full((3,), 6))), dim=-1)
    memory = model.encode(frames, lengths)
    assert memory.shape == (3, 1, 12)  # one vector per clip: all the decoder sees
    state = model.init_decoder_state(3)
    for t in range(6):
        log_probs, state = model.decode_step(tokens[:, t], state, memory, lengths)
        torch.testing.assert_close(log_probs.double(), teacher[:, t], atol=1e-5, rtol=1e-5)
    greedy = generate(model, frames, lengths, beam_size=1, max_length=6)
    beam = generate(model, frames, lengths, beam_size=3, max_length=6)
    assert len(greedy) == len(beam) == 3 and all(h[0].score <= 0 for h in beam)


def test_model_config_refuses_what_video_models_cannot_do():
    # vec2seq on text: the recipe refuses it (no application answers that model shape).
    with pytest.raises(ConfigError, match=r"model kind/input/decoder vec2seq/text is not supported; "
                                          r"known: .*vec2seq/video"):
        recipe_from_dict({"model": {"kind": "vec2seq", "input": "text"}})
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        ModelConfig(kind="vec2seq", input="video", num_layers=0)
    with pytest.raises(ValueError, match="tie_embeddings is for seq2seq"):
        ModelConfig(kind="vec2seq", input="video", tie_embeddings=True, embed_dim=16, hidden_size=16)


@pytest.mark.parametrize("override, message", [
    ({"data": {"video": {"size": 20}}}, "multiple of 8"),
    ({"data": {"video": {"max_frames": 99}}}, "frame budget"),
    ({"data": {"format": "csv"}}, "video-folder"),
    ({"parallel": {"schedule": "wavefront"}, "model": {"kind": "vec2seq"}},
     r"^parallel\.schedule: wavefront runs applications whose layers stream over time chunks; video_caption does "
     r"not \(its conditioned decoder layer has no chunked form yet; translate's encoder-decoder has one\), so use "
     r"gpipe or 1f1b$"),
    ({"data": {"video": {"stride": 0}}}, "stride"),
])
def test_recipe_checks_video_settings(override, message):
    raw = {"data": {"video": {"size": 16, "max_frames": 32}}, "model": {"input": "video"},
           "batching": {"max_tokens": 64}}
    for key, value in override.items():
        for sub, v in value.items():
            raw.setdefault(key, {})[sub] = {**raw.get(key, {}).get(sub, {}), **v} if isinstance(v, dict) else v
    with pytest.raises(ConfigError, match=message):
        recipe_from_dict(raw)


def test_caption_exact_match_ignores_case_and_spacing_only():
    scores = caption_scores(["a red  square moves left", "A blue circle", "a green circle"],
                            ["a red square moves left", "a blue circle", "a green square"])
    assert scores["exact_match"] == pytest.approx(2 / 3, abs=1e-4) and scores["examples"] == 3
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        caption_scores(["a", "b"], ["a"])


# ---------------------------------------------------------------- folders


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory):
    from pipelines.media.video.synthetic import write_moving_shapes

    root = tmp_path_factory.mktemp("video")
    write_moving_shapes(root / "train", count=48, seed=0, size=32, workers=1)
    write_moving_shapes(root / "valid", count=16, seed=1, size=32, workers=1)
    return root


def test_listing_reads_the_manifest_and_names_bad_rows(clips_dir, tmp_path):
    from pipelines.media.video.folders import list_video_folder

    records = list_video_folder(clips_dir / "train", target="caption")
    assert len(records) == 48 and records[0]["caption"].startswith("a ") and not records[0]["error"]
    (tmp_path / "manifest.jsonl").write_text('{"path": "gone.mp4", "label": "x"}\n{"path": "a.mp4"}\nnot json\n')
    (tmp_path / "a.mp4").write_bytes(b"")
    errors = [(r["origin"], r["error"]) for r in list_video_folder(tmp_path, target="label")]
    assert "no such file or folder" in errors[0][1] and "gone.mp4" in errors[0][0]
    assert errors[1][1] == "missing label" and "not valid JSON" in errors[2][1]
    with pytest.raises(DataError, match="needs a manifest.csv or manifest.jsonl"):
        list_video_folder(clips_dir, target="label")


# ---------------------------------------------------------------- Ray ingest


def _recipe(root, **data):
    return recipe_from_dict({
        "data": {"root": str(root), "train": "train", "valid": "valid", "format": "video-folder",
                 "video": {"size": 16, "max_frames": 24}, **data},
        "model": {"input": "video"},
        "batching": {"max_tokens": 160, "max_batch_size": 16, "pool_size": 64},
    })


@pytest.mark.ray
def test_ingest_buckets_every_clip_once_under_the_frame_budget(ray_head, clips_dir):
    from pipelines.apps.video_classify.data import prepare_video_classification

    data = prepare_video_classification(_recipe(clips_dir))
    assert len(data.labels) == 8 and data.report["train_examples"] == 48 and data.report["valid_examples"] == 16
    seen = 0
    for row in data.train.iter_rows():
        tokens, lengths = row["tokens"], row["lengths"]
        assert tokens.dtype == np.uint8 and tokens.shape[2:] == (16, 16, 3)
        assert tokens.shape[0] * tokens.shape[1] <= 160 and tokens.shape[1] == lengths.max()
        assert np.all((8 <= lengths) & (lengths <= 20))
        for r, n in enumerate(lengths):
            assert tokens[r, n:].max(initial=0) == 0  # padding is black
        seen += len(lengths)
    assert seen == 48


@pytest.mark.ray
def test_ingest_stops_on_a_corrupt_clip_or_skips_and_counts_it(ray_head, clips_dir, tmp_path):
    import shutil

    from pipelines.apps.video_classify.data import prepare_video_classification

    shutil.copytree(clips_dir / "valid", tmp_path / "train")
    shutil.copytree(clips_dir / "valid", tmp_path / "valid")
    broken = tmp_path / "train" / "clips" / "00003.mp4"
    broken.write_bytes(broken.read_bytes()[:300])
    with pytest.raises(DataError, match=r"row 4 \(clips/00003.mp4\)"):
        prepare_video_classification(_recipe(tmp_path))
    data = prepare_video_classification(_recipe(tmp_path, on_bad_record="skip", video={"size": 16, "max_frames": 10}))
    assert data.report["skipped_records"] == 1 and data.report["train_examples"] == 15
    assert data.report["truncated_examples"] > 0  # clips of 12-20 frames cut to 10


@pytest.mark.ray
def test_captions_are_tokenized_against_frames(ray_head, clips_dir):
    from pipelines.apps.video_caption.data import prepare_captions

    raw = _recipe(clips_dir)
    raw.tokenizer.kind, raw.tokenizer.min_frequency = "wordlevel", 1
    data = prepare_captions(raw)
    row = next(iter(data.train.iter_rows()))
    assert row["src_tokens"].dtype == np.uint8 and row["tgt_in"].shape[0] == row["src_tokens"].shape[0]
    ids = data.tokenizer.encode("a red square moves left then up then right then down", add_special_tokens=False).ids
    assert len(ids) == 11 and 1 not in ids  # a word a token, none unknown (UNK = 1)
    assert data.tokenizer.get_vocab_size() < 40


# ---------------------------------------------------------------- inference


def test_classifier_scores_each_upload_as_it_would_alone(tiny_video_classifier):
    from pipelines.apps.video_classify.predictor import VideoClassifier
    from pipelines.checkpoint import load_inference

    classifier = VideoClassifier(load_inference(tiny_video_classifier))
    blobs = [mp4_bytes(frames=n, seed=n) for n in (6, 12, 9)]
    together = classifier.probabilities(classifier.rows(list(zip(["a", "b", "c"], blobs))))
    assert together.shape == (3, 8) and np.allclose(together.sum(1), 1, atol=1e-5)
    for i, blob in enumerate(blobs):
        np.testing.assert_allclose(classifier.probabilities(classifier.rows([("x", blob)]))[0], together[i],
                                   atol=1e-5)


def test_captioner_writes_words_of_its_vocabulary(tiny_video_captioner, tiny_video_classifier):
    from pipelines.apps.video_caption.predictor import VideoCaptioner
    from pipelines.apps.video_classify.predictor import VideoClassifier
    from pipelines.checkpoint import load_inference, load_predictor

    captioner = VideoCaptioner(load_inference(tiny_video_captioner))
    out = captioner.predict([("a", mp4_bytes(frames=8)), ("b", mp4_bytes(frames=5, seed=3))], beam_size=2,
                            max_length=6)
    assert len(out) == 2 and all(isinstance(o["text"], str) and o["score"] <= 0 for o in out)
    # No wrong class on a checkpoint any more: each loads as its own application's predictor.
    assert type(load_predictor(tiny_video_captioner)) is VideoCaptioner
    assert type(load_predictor(tiny_video_classifier)) is VideoClassifier
