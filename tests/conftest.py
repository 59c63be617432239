"""Shared fixtures.

Integration tests share ONE Ray head per session (``tests/ray_session.py``: started here,
or by ``scripts/test.sh`` for the Ray tier's two shards). Unit tests never touch Ray.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import pytest

from ray_session import OWN_CLUSTER_TESTS, SHARED_HEAD_ENV, prepare_environment, select_shard, start_head, stop_head

prepare_environment()
from pipelines.runtime import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    # Files that start a Ray head of their own first, before the shared head exists
    # (ray_session.OWN_CLUSTER_TESTS); stable: the order is kept otherwise.
    items.sort(key=lambda item: item.path.name not in OWN_CLUSTER_TESTS)
    # `scripts/test.sh fast`: process K of N runs every Nth test; test by test, not file by
    # file, so the long parametrized files split evenly.
    if fast := os.environ.get("RAYSEQ_FAST_SHARD"):
        k, n = (int(x) for x in fast.split("/"))
        config.hook.pytest_deselected(items=[item for i, item in enumerate(items) if i % n != k - 1])
        items[:] = [item for i, item in enumerate(items) if i % n == k - 1]
    select_shard(config, items)


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """Address info of the session's Ray head; the test process is connected. The head
    ``RAYSEQ_TEST_HEAD`` names is joined and left running (its starter stops it, and the
    other shard may be using Serve on it); otherwise one is started and stopped here."""
    import ray

    from pipelines.runtime import init_ray

    shared = os.environ.get(SHARED_HEAD_ENV)
    if shared:
        info = json.loads(Path(shared).read_text())
        ray.init(address=info["address"], log_to_driver=False)
        head = None
    else:
        head, info = start_head(tmp_path_factory.mktemp("ray-head") / "head.log")
    os.environ["RAY_ADDRESS"] = info["address"]
    init_ray()  # the same Data settings the CLI uses
    yield {"address": info["address"], "dashboard": info["dashboard"]}
    if head is not None:
        with contextlib.suppress(Exception):
            from ray import serve

            serve.shutdown()
    ray.shutdown()
    os.environ.pop("RAY_ADDRESS", None)
    if head is not None:
        stop_head(head.pid, info["address"], head)


@pytest.fixture(scope="session")
def sentiment_dir(tmp_path_factory) -> Path:
    """Small generated labeled-lines dataset (train.txt, valid.txt)."""
    from pipelines.apps.text_classify.generate import write_sentiment

    return write_sentiment(tmp_path_factory.mktemp("sentiment"), size=400, seed=1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, sentiment_dir) -> Path:
    """An inference checkpoint with random weights, made without Ray (fast)."""
    from pipelines.config import recipe_from_dict
    from pipelines.media.tokenization import train_tokenizer

    recipe = recipe_from_dict({
        "name": "tiny_sentiment",
        "data": {"root": str(sentiment_dir), "max_length": 32},
        "tokenizer": {"vocab_size": 200},
        "model": {"embed_dim": 16, "hidden_size": 16, "num_layers": 2},
    })
    texts = [line.split(" ", 1)[1] for line in (sentiment_dir / "train.txt").read_text().splitlines()]
    tokenizer = train_tokenizer(texts, recipe.tokenizer)
    labels = ["negative", "positive"]
    meta = {"labels": labels, "vocab_size": tokenizer.get_vocab_size()}
    return _export(tmp_path_factory, "tiny", recipe, {"vocab_size": tokenizer.get_vocab_size(), "num_labels": 2},
                   {"tokenizer.json": tokenizer.to_str()}, meta)


@pytest.fixture(scope="session")
def tiny_translator(tmp_path_factory) -> Path:
    """A seq2seq inference checkpoint with random weights, made without Ray (fast).

    A joint BPE tokenizer trained on 48 generated English -> German number pairs
    (``pipelines.apps.translate.generate.number_pair``), a 2+2-layer LSTM encoder-decoder of width 16,
    sources cut to 16 tokens. Untrained, it rarely emits EOS, so its outputs run to the
    decoder's length limit: only their shape and bookkeeping are meaningful.
    """
    import random

    from pipelines.apps.translate.generate import number_pair
    from pipelines.config import recipe_from_dict
    from pipelines.media.tokenization import train_translation_tokenizers, translation_tokenizer_files

    recipe = recipe_from_dict({
        "name": "tiny_translation",
        "data": {"format": "parallel", "source_lang": "en", "target_lang": "de", "valid": "", "max_length": 16},
        "tokenizer": {"vocab_size": 160, "min_frequency": 1, "lowercase": False, "joint": True},
        "model": {"kind": "seq2seq", "embed_dim": 16, "hidden_size": 16, "num_layers": 2, "decoder_layers": 2,
                  "dropout": 0.0},
    })
    pairs = [number_pair(n) for n in random.Random(0).sample(range(10_000), 48)]
    tokenizers = train_translation_tokenizers(lambda: (en for en, _ in pairs), lambda: (de for _, de in pairs),
                                              recipe.tokenizer)
    src_vocab, tgt_vocab = tokenizers.vocab_sizes
    sizes = {"src_vocab_size": src_vocab, "tgt_vocab_size": tgt_vocab}
    meta = {**sizes, "source_lang": "en", "target_lang": "de"}
    return _export(tmp_path_factory, "tiny-translation", recipe, sizes, translation_tokenizer_files(tokenizers),
                   meta)


AUDIO_RECIPE = {"format": "audio-folder", "valid": "",
                "audio": {"sample_rate": 8000, "n_mels": 16, "max_seconds": 4.0}}
AUDIO_MODEL = {"input": "audio", "embed_dim": 16, "hidden_size": 16, "num_layers": 2, "frontend_channels": 4,
               "dropout": 0.0}


def _export(tmp_path_factory, name: str, recipe, sizes: dict, files: dict, meta: dict) -> Path:
    """An inference checkpoint of ``recipe``'s application with random (seeded) weights,
    exported as training would."""
    import torch

    from pipelines import apps
    from pipelines.checkpoint import export_inference

    app = apps.app_for(recipe)
    model = app.build(recipe.model, sizes, seed=0)
    shard_dir = tmp_path_factory.mktemp(f"{name}-train")
    torch.save(model.state_dict(), shard_dir / "model.stage0.pt")
    out = tmp_path_factory.mktemp(name) / "checkpoint"
    return export_inference(shard_dir, out, recipe=recipe, app=app, files=files, meta=meta)


@pytest.fixture(scope="session")
def tiny_audio_classifier(tmp_path_factory) -> Path:
    """A spoken-digit classifier checkpoint with random weights (8 kHz, 16 mel bands, at
    most 4 s), made without Ray: for the upload routes, not for accuracy."""
    from pipelines.config import recipe_from_dict

    recipe = recipe_from_dict({"name": "tiny_digits", "data": AUDIO_RECIPE, "model": AUDIO_MODEL})
    labels = [str(d) for d in range(10)]
    return _export(tmp_path_factory, "tiny-digits", recipe, {"feature_dim": 16, "num_labels": len(labels)}, {},
                   {"labels": labels, "feature_dim": 16})


@pytest.fixture(scope="session")
def tiny_speech_recognizer(tmp_path_factory) -> Path:
    """A speech-to-text checkpoint with random weights and a word-level tokenizer of the
    ten digit words (8 kHz, 16 mel bands, at most 4 s), made without Ray."""
    from pipelines.config import recipe_from_dict
    from pipelines.media.tokenization import train_tokenizer

    recipe = recipe_from_dict({
        "name": "tiny_speech", "data": {**AUDIO_RECIPE, "max_target_length": 12},
        "tokenizer": {"kind": "wordlevel", "vocab_size": 32, "min_frequency": 1},
        "model": {**AUDIO_MODEL, "kind": "seq2seq", "decoder_layers": 1},
        "decode": {"beam_size": 2, "max_length": 12},
    })
    words = "zero one two three four five six seven eight nine".split()
    tokenizer = train_tokenizer([" ".join(words[i:] + words[:i]) for i in range(10)], recipe.tokenizer)
    meta = {"feature_dim": 16, "tgt_vocab_size": tokenizer.get_vocab_size()}
    return _export(tmp_path_factory, "tiny-speech", recipe, meta, {"tokenizer.json": tokenizer.to_str()}, meta)


TAGGER_RECIPE = {"name": "tiny_tagger", "app": "tag",
                 "data": {"format": "conll", "tag_scheme": "iob1", "max_length": 16},
                 "model": {"kind": "tagger", "embed_dim": 8, "hidden_size": 8, "num_layers": 1, "char_embed_dim": 4,
                           "char_channels": 4, "dropout": 0.0, "tag_scheme": "iobes"}}


@pytest.fixture(scope="session")
def tiny_tagger(tmp_path_factory) -> Path:
    """A tagger checkpoint made without Ray whose scores favour ``S-PER`` for every
    token, whatever it reads: each token comes back as a one-token PER entity, so every
    offset is checked. Tags answer in IOB1 (``I-PER B-PER B-PER ...``)."""
    import torch

    from pipelines import apps
    from pipelines.apps.tag.vocab import TaggerVocab
    from pipelines.checkpoint import export_inference
    from pipelines.config import recipe_from_dict
    from pipelines.media.tags import tag_set

    recipe = recipe_from_dict(TAGGER_RECIPE)
    vocab = TaggerVocab.build([["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]],
                              tag_set(["LOC", "PER"], "iobes"), "iobes", min_frequency=1, max_words=100, lowercase=True)
    sizes = {"num_words": len(vocab.words), "num_chars": len(vocab.chars), "num_tags": len(vocab.tags)}
    model = apps.app_for(recipe).build(recipe.model, sizes, seed=0)
    scorer = model.layers[str(len(model.layers) - 1)]
    with torch.no_grad():
        scorer.project.weight.zero_()
        scorer.project.bias.zero_()
        scorer.project.bias[vocab.tags.index("S-PER")] = 10.0
    shard_dir = tmp_path_factory.mktemp("tiny-tagger-train")
    torch.save(model.state_dict(), shard_dir / "model.stage0.pt")
    out = tmp_path_factory.mktemp("tiny-tagger") / "checkpoint"
    return export_inference(shard_dir, out, recipe=recipe, app=apps.app_for(recipe),
                            files={"vocab.json": vocab.to_json()},
                            meta={**sizes, "tags": vocab.tags, "tag_scheme": vocab.scheme})


MUSIC_RECIPE = {"name": "tiny_music", "app": "music", "data": {"format": "chorales"},
                "model": {"kind": "music", "embed_dim": 4, "hidden_size": 8, "num_layers": 2, "residual_from": 1,
                          "head_size": 6, "dropout": 0.0}}


@pytest.fixture(scope="session")
def tiny_music(tmp_path_factory) -> Path:
    """An untrained music checkpoint made without Ray: its sampling is what the in-process
    predictor gives for the same seed."""
    import torch

    from pipelines import apps
    from pipelines.checkpoint import export_inference
    from pipelines.config import recipe_from_dict

    recipe = recipe_from_dict(MUSIC_RECIPE)
    app = apps.app_for(recipe)
    shard_dir = tmp_path_factory.mktemp("tiny-music-train")
    torch.save(app.build(recipe.model, {}, seed=0).state_dict(), shard_dir / "model.stage0.pt")
    out = tmp_path_factory.mktemp("tiny-music") / "checkpoint"
    return export_inference(shard_dir, out, recipe=recipe, app=app, files={}, meta={"voices": 4, "pitches": 128})


TTS_RECIPE = {"name": "tiny_tts", "app": "speech_synthesis",
              "data": {"format": "audio-folder", "max_length": 8,
                       "audio": {"sample_rate": 8000, "n_mels": 16, "window_ms": 50.0,
                                                           "hop_ms": 12.5, "max_seconds": 1.0}},
              "model": {"kind": "synthesis", "embed_dim": 4, "hidden_size": 8, "num_layers": 2, "residual_from": 1,
                        "prenet_size": 8, "frames_per_step": 2, "postnet_channels": 4, "postnet_layers": 2,
                        "dropout": 0.0},
              "synthesis": {"max_seconds": 0.3, "griffin_lim_iters": 4, "pause_ms": 100.0}}
TTS_META = {"words": [str(d) for d in range(10)], "speakers": ["alice", "theo"], "feature_dim": 16,
            "frame_mean": [-6.0] * 16, "frame_std": [2.0] * 16}


@pytest.fixture(scope="session")
def tiny_tts(tmp_path_factory) -> Path:
    """An untrained speech synthesis checkpoint (words 0-9, speakers alice and theo) made
    without Ray: its audio is what the in-process predictor gives for the same seed."""
    import torch

    from pipelines import apps
    from pipelines.checkpoint import export_inference
    from pipelines.config import recipe_from_dict

    recipe = recipe_from_dict(TTS_RECIPE)
    app = apps.app_for(recipe)
    shard_dir = tmp_path_factory.mktemp("tiny-tts-train")
    sizes = {"frame_size": 16, "num_words": 10, "num_speakers": 2}
    torch.save(app.build(recipe.model, sizes, seed=0).state_dict(), shard_dir / "model.stage0.pt")
    out = tmp_path_factory.mktemp("tiny-tts") / "checkpoint"
    return export_inference(shard_dir, out, recipe=recipe, app=app, files={}, meta=dict(TTS_META))


VIDEO_RECIPE = {"format": "video-folder", "train": "train", "valid": "valid",
                "video": {"size": 16, "max_frames": 24, "max_seconds": 10.0}}
VIDEO_MODEL = {"input": "video", "embed_dim": 16, "hidden_size": 16, "num_layers": 1, "frontend_channels": 4,
               "dropout": 0.0}


GENERATOR_RECIPE = {"name": "tiny_generate", "app": "text_generate",
                    "data": {"format": "labeled-lines", "train": "train.txt", "valid": "valid.txt", "max_length": 32},
                    "tokenizer": {"kind": "wordlevel", "vocab_size": 200, "min_frequency": 1},
                    "model": {"kind": "language_model", "embed_dim": 16, "hidden_size": 32, "decoder_layers": 2,
                              "dropout": 0.0},
                    "decode": {"beam_size": 3}, "generation": {"num_samples": 20, "max_length": 24}}


def _language_model(tmp_path_factory, name: str, sentiment_dir: Path, *, conditioned: bool, steps: int) -> Path:
    """A language model of the sentiment reviews (conditioned on their label, or not),
    trained in this process for ``steps`` Adam steps (no Ray): small, but it has learned
    which words each condition writes."""
    import random

    import torch

    from models.seq2seq import sequence_loss
    from pipelines import apps
    from pipelines.checkpoint import export_inference
    from pipelines.config import recipe_from_dict
    from pipelines.media.bucketing import pad_batch
    from pipelines.media.tokenization import encode_targets, train_tokenizer

    recipe = recipe_from_dict({**GENERATOR_RECIPE, "name": name, "data": {**GENERATOR_RECIPE["data"],
                               "root": str(sentiment_dir)}, "generation": {**GENERATOR_RECIPE["generation"],
                                                                            "conditioned": conditioned}})
    records = [line.split(" ", 1) for line in (sentiment_dir / "train.txt").read_text().splitlines()]
    tokenizer = train_tokenizer([text for _, text in records], recipe.tokenizer)
    conditions = ["negative", "positive"] if conditioned else ["any"]
    sizes = {"num_conditions": len(conditions), "tgt_vocab_size": tokenizer.get_vocab_size()}
    app = apps.app_for(recipe)
    with torch.random.fork_rng(devices=[]):
        model = app.build(recipe.model, sizes, seed=0).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        targets, _ = encode_targets(tokenizer, [text for _, text in records], 32)
        ids = [conditions.index(label) if conditioned else 0 for label, _ in records]
        rng = random.Random(0)
        for _ in range(steps):
            rows = rng.sample(range(len(records)), 64)
            batch = [targets[r] for r in rows]
            tgt_in = torch.as_tensor(pad_batch([t[:-1] for t in batch]), dtype=torch.int64)
            tgt_out = torch.as_tensor(pad_batch([t[1:] for t in batch]), dtype=torch.int64)
            lengths = torch.tensor([len(t) - 1 for t in batch])
            src = torch.tensor([[ids[r]] for r in rows])
            loss = sequence_loss(model((src, tgt_in), (torch.ones(len(rows), dtype=torch.int64), lengths)), tgt_out)
            optimizer.zero_grad()
            (loss / lengths.sum()).backward()
            optimizer.step()
    shard_dir = tmp_path_factory.mktemp(f"{name}-train")
    torch.save(model.state_dict(), shard_dir / "model.stage0.pt")
    meta = {"conditions": conditions, "tgt_vocab_size": tokenizer.get_vocab_size()}
    return export_inference(shard_dir, tmp_path_factory.mktemp(name) / "checkpoint", recipe=recipe, app=app,
                            files={"tokenizer.json": tokenizer.to_str()}, meta=meta)


@pytest.fixture(scope="session")
def tiny_generator(tmp_path_factory, sentiment_dir) -> Path:
    """A sentiment-conditioned language model of the generated reviews, trained without
    Ray for 150 steps (a few seconds)."""
    return _language_model(tmp_path_factory, "tiny_generate", sentiment_dir, conditioned=True, steps=150)


@pytest.fixture(scope="session")
def tiny_unconditioned_lm(tmp_path_factory, sentiment_dir) -> Path:
    """The same reviews' unconditioned language model (one condition, ``any``)."""
    return _language_model(tmp_path_factory, "tiny_lm", sentiment_dir, conditioned=False, steps=150)


SUMMARIZER_RECIPE = {"name": "tiny_summarize", "app": "summarize",
                     "data": {"format": "jsonl", "train": "train.jsonl", "valid": "valid.jsonl",
                              "source_column": "dialogue", "target_column": "summary", "max_length": 120,
                              "max_target_length": 32},
                     "tokenizer": {"kind": "wordlevel", "vocab_size": 300, "min_frequency": 3},
                     "model": {"kind": "pointer_generator", "embed_dim": 32, "hidden_size": 48, "num_layers": 1,
                               "decoder_layers": 1, "input_feeding": True, "coverage": True, "dropout": 0.0},
                     "decode": {"beam_size": 3, "max_length": 40, "min_length": 4, "no_repeat_ngram": 3}}


@pytest.fixture(scope="session")
def dialogues_dir(tmp_path_factory) -> Path:
    """800 generated training dialogues and 200 validation ones (their names unseen)."""
    from pipelines.apps.summarize.generate import write_dialogues

    return write_dialogues(tmp_path_factory.mktemp("dialogues"), size=800, seed=0)


@pytest.fixture(scope="session")
def tiny_summarizer(tmp_path_factory, dialogues_dir) -> Path:
    """A pointer-generator of the generated dialogues, trained in this process (no Ray)
    for 250 steps: it has learned to copy the made-up names it summarizes."""
    import json
    import random

    import numpy as np
    import torch

    from models.pointer import copy_loss
    from pipelines import apps
    from pipelines.apps.summarize.data import FeaturizeCopyPairs
    from pipelines.apps.summarize.words import train_word_tokenizer
    from pipelines.checkpoint import export_inference
    from pipelines.config import recipe_from_dict
    from pipelines.media.bucketing import pad_batch

    recipe = recipe_from_dict({**SUMMARIZER_RECIPE, "data": {**SUMMARIZER_RECIPE["data"], "root": str(dialogues_dir)}})
    records = [json.loads(line) for line in (dialogues_dir / "train.jsonl").read_text().splitlines()]
    tokenizer = train_word_tokenizer([t for r in records for t in (r["dialogue"], r["summary"])], recipe.tokenizer)
    features = FeaturizeCopyPairs(tokenizer.to_str(), 120, 32)({
        "source": np.array([r["dialogue"] for r in records]), "target": np.array([r["summary"] for r in records]),
        "index": np.arange(len(records))})
    sizes = {"vocab_size": tokenizer.get_vocab_size()}
    app = apps.app_for(recipe)
    with torch.random.fork_rng(devices=[]):
        model = app.build(recipe.model, sizes, seed=0).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
        rng = random.Random(0)
        for _ in range(150):
            rows = rng.sample(range(len(records)), 32)
            src = torch.as_tensor(pad_batch([features["src_ids"][r] for r in rows]), dtype=torch.int64)
            tgt = [features["tgt_ids"][r] for r in rows]
            tgt_in = torch.as_tensor(pad_batch([t[:-1] for t in tgt]), dtype=torch.int64)
            tgt_out = torch.as_tensor(pad_batch([t[1:] for t in tgt]), dtype=torch.int64)
            lengths = (torch.as_tensor(features["src_length"][rows]), torch.tensor([len(t) - 1 for t in tgt]))
            loss = copy_loss(model((src, tgt_in), lengths), tgt_out)
            optimizer.zero_grad()
            (loss / lengths[1].sum()).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
            optimizer.step()
    shard_dir = tmp_path_factory.mktemp("tiny-summarize-train")
    torch.save(model.state_dict(), shard_dir / "model.stage0.pt")
    return export_inference(shard_dir, tmp_path_factory.mktemp("tiny_summarize") / "checkpoint", recipe=recipe,
                            app=app, files={"tokenizer.json": tokenizer.to_str()}, meta=dict(sizes))


@pytest.fixture(scope="session")
def tiny_video_classifier(tmp_path_factory) -> Path:
    """A moving-shape classifier checkpoint with random weights (16x16 frames, at most 24
    frames and 10 s), made without Ray: for the upload routes, not for accuracy."""
    from pipelines.config import recipe_from_dict
    from pipelines.media.video.synthetic import CLASSES

    recipe = recipe_from_dict({"name": "tiny_video", "data": VIDEO_RECIPE, "model": VIDEO_MODEL})
    return _export(tmp_path_factory, "tiny-video", recipe, {"frame_size": 16, "num_labels": len(CLASSES)}, {},
                   {"labels": list(CLASSES), "frame_size": 16})


@pytest.fixture(scope="session")
def tiny_video_captioner(tmp_path_factory) -> Path:
    """A vec2seq captioner checkpoint with random weights and a word-level tokenizer of
    the moving-shape captions (16x16 frames), made without Ray."""
    from pipelines.config import recipe_from_dict
    from pipelines.media.tokenization import train_tokenizer
    from pipelines.media.video.synthetic import CLASSES, COLOURS, SHAPES, caption

    recipe = recipe_from_dict({
        "name": "tiny_caption", "data": {**VIDEO_RECIPE, "max_target_length": 16},
        "tokenizer": {"kind": "wordlevel", "vocab_size": 64, "min_frequency": 1},
        "model": {**VIDEO_MODEL, "kind": "vec2seq", "decoder_layers": 1},
        "decode": {"beam_size": 2, "max_length": 14},
    })
    captions = [caption(label, shape, colour) for label in CLASSES for shape in SHAPES for colour in COLOURS]
    tokenizer = train_tokenizer(captions, recipe.tokenizer)
    meta = {"frame_size": 16, "tgt_vocab_size": tokenizer.get_vocab_size()}
    return _export(tmp_path_factory, "tiny-caption", recipe, meta, {"tokenizer.json": tokenizer.to_str()}, meta)


IMAGE_RECIPE = {"format": "image-folder", "train": "train", "valid": "valid", "max_target_length": 16,
                "image": {"size": 16, "max_pixels": 64 * 64}}
IMAGE_MODEL = {"kind": "vec2seq", "input": "image", "embed_dim": 16, "hidden_size": 16, "num_layers": 0,
               "decoder_layers": 1, "frontend_channels": 4, "dropout": 0.0}


@pytest.fixture(scope="session")
def tiny_image_captioner(tmp_path_factory) -> Path:
    """A digit-canvas captioner checkpoint with random weights (16x16 images, at most
    64x64 pixels read) and a word-level tokenizer of the canvas captions, made without Ray."""
    import itertools

    from pipelines.config import recipe_from_dict
    from pipelines.media.image.digit_canvas import caption_of
    from pipelines.media.tokenization import train_tokenizer

    recipe = recipe_from_dict({
        "name": "tiny_image_caption", "data": IMAGE_RECIPE,
        "tokenizer": {"kind": "wordlevel", "vocab_size": 32, "min_frequency": 1},
        "model": IMAGE_MODEL, "decode": {"beam_size": 2, "max_length": 16},
    })
    captions = [caption_of([(cell, digit), ((cell + 1) % 4, 9 - digit)]) for cell, digit in
                itertools.product(range(4), range(10))]
    tokenizer = train_tokenizer(captions, recipe.tokenizer)
    meta = {"frame_size": 16, "tgt_vocab_size": tokenizer.get_vocab_size()}
    return _export(tmp_path_factory, "tiny-image-caption", recipe, meta, {"tokenizer.json": tokenizer.to_str()},
                   meta)


def image_bytes(size: tuple[int, int] = (40, 40), fmt: str = "PNG", seed: int = 0, mode: str = "RGB") -> bytes:
    """An encoded image of random pixels (``mode`` ``RGB`` or ``L``) in ``fmt`` (Pillow's name)."""
    import io

    import numpy as np
    from PIL import Image

    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)  # 2-D: L, 3-D: RGB
    return buffer.getvalue()


def mp4_bytes(frames: int = 8, size: int = 32, fps: int = 10, seed: int = 0, faststart: bool = False) -> bytes:
    """An H.264 MP4 of a moving-shape clip (``pipelines.media.video.synthetic``). ``faststart``
    puts the index first (as streaming sites serve MP4s): cut short, such a file opens but
    its frames run out mid-stream. FFmpeg moves the index by rewriting the file, so that
    one is written to a temporary file, the other in memory."""
    import io

    import av
    import numpy as np

    from pipelines.media.video.synthetic import CLASSES, render_clip

    clip, _ = render_clip(np.random.default_rng(seed), CLASSES[seed % len(CLASSES)], size=size)
    handle, path = tempfile.mkstemp(suffix=".mp4") if faststart else (None, None)
    if handle is not None:
        os.close(handle)
    target = path or io.BytesIO()
    try:
        with av.open(target, "w", format="mp4", options={"movflags": "faststart"} if faststart else {}) as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            for i in range(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(clip[i % len(clip)]), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        if path is None:
            return target.getvalue()
        with open(path, "rb") as file:
            return file.read()
    finally:
        if path is not None:
            os.remove(path)


def wav_bytes(seconds: float = 0.5, rate: int = 8000, freq: float = 440.0, channels: int = 1,
              subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    """An encoded tone (WAV or FLAC) with a little noise, for upload and ingest tests."""
    import io

    import numpy as np
    import soundfile

    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(0).standard_normal(len(t))
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    buffer = io.BytesIO()
    soundfile.write(buffer, data, rate, subtype=subtype, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def one_thread():
    """Tensors in model unit tests are tiny: a second intra-op thread only adds
    synchronisation, and on a busy 2-core machine that made them ~10x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def last_json_line(stdout: str) -> dict:
    lines = [line for line in stdout.strip().splitlines() if line.strip()]
    assert lines, "no output"
    return json.loads(lines[-1])


def read_predictions(scores: dict) -> list[dict]:
    """The ``rayseq eval --predictions`` file named in ``scores``: one row per scored
    record, agreeing with the scores (classifiers: the accuracy is the rows' hit rate)."""
    rows = [json.loads(line) for line in Path(scores["predictions"]).read_text(encoding="utf-8").splitlines()]
    assert len(rows) == scores["examples"]
    if "accuracy" in scores:
        assert set(rows[0]) == {"origin", "label", "predicted", "score"}
        hits = sum(r["label"] == r["predicted"] for r in rows)
        assert hits / len(rows) == pytest.approx(scores["accuracy"], abs=1e-4)
        assert all(0.0 < r["score"] <= 1.0 for r in rows)
    elif "f1" in scores:
        assert set(rows[0]) == {"origin", "tokens", "gold", "predicted"}
    else:
        assert set(rows[0]) == {"origin", "reference", "hypothesis"}
    return rows


@contextlib.contextmanager
def serve_app(ray_head: dict, app, name: str = "rayseq"):
    """Deploy the Serve ``app`` on the session's head as ``name``; yields its base URL and
    deletes it afterwards. Serve keeps the HTTP port it first started with, so the port
    is read back; a Serve instance this call started is shut down again at the end."""
    from ray import serve
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    serve_was_running = bool(serve.status().proxies)
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})  # ignored if Serve runs already
    try:
        serve.run(app, name=name, route_prefix="/")
        port = ServeSubmissionClient(ray_head["dashboard"]).get_serve_details()["http_options"]["port"]
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.delete(name)
        if not serve_was_running and not serve.status().applications:
            serve.shutdown()


_HANDLE_LOOP = None


@pytest.fixture
def torch_threads():
    """A benchmark run in this process sets torch's intra-op threads for their timings: put them back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def call_deployment(deployment: str, method: str, *args, app_name: str = "rayseq"):
    """``deployment.method(*args)`` through a Serve handle, from sync test code. In Serve's
    throughput mode a handle routes on the event loop it was first used in (no router
    thread), and Serve caches handles: every call runs on one loop, kept in a thread."""
    import asyncio
    import threading

    from ray import serve

    global _HANDLE_LOOP
    if _HANDLE_LOOP is None:
        _HANDLE_LOOP = asyncio.new_event_loop()
        threading.Thread(target=_HANDLE_LOOP.run_forever, daemon=True, name="serve-handles").start()

    async def call():
        handle = serve.get_deployment_handle(deployment, app_name=app_name)
        return await getattr(handle, method).remote(*args)

    return asyncio.run_coroutine_threadsafe(call(), _HANDLE_LOOP).result(timeout=120)


def bursts_until_batched(send_burst, stats, shared, tries: int = 3) -> dict:
    """Send concurrent bursts (``send_burst()`` checks its own answers) until ``shared(stats())``
    holds, at most ``tries`` times, and return the last stats. The adaptive batcher runs a
    lone request at once, so on a loaded machine one burst may reach it one request at a
    time; if batching were broken, no burst would ever share a forward pass."""
    for _ in range(tries):
        send_burst()
        current = stats()
        if shared(current):
            break
    return current


def assert_error(response, status: int, *fragments: str) -> None:
    """An HTTP error answer: ``status``, JSON ``{"error": message}`` naming every fragment."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    for fragment in fragments:
        assert fragment in message, message


def post_files(client, model: str, task: str, files: list[tuple[str, bytes]], **fields):
    """POST ``files`` ((file name, bytes) pairs) as ``file`` parts of a multipart body to a
    model's route, with ``fields`` as plain form fields (an audio or video model's request)."""
    parts = [("file", (name, data, "application/octet-stream")) for name, data in files]
    parts += [(key, (None, str(value))) for key, value in fields.items()]
    return client.post(f"/v1/models/{model}/{task}", files=parts)
