"""Images as a medium and image captioning: the image reader (good and bad files), image
folders, the recipe's checks, the CNN -> vector -> LSTM model, the predictor on a tiny
checkpoint and ``rayseq generate digit-captions`` (no Ray); then ingest and a CLI run at
test scale on the session's Ray head (``ray``)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import IMAGE_MODEL, IMAGE_RECIPE, image_bytes, last_json_line, read_predictions
from models.config import ModelConfig
from pipelines.config import ImageConfig, VideoConfig, recipe_from_dict
from pipelines.errors import ConfigError, DataError
from pipelines.media.image.decode import ImageReader, ImageTooLarge
from pipelines.media.image.folders import list_image_folder, read_image_batch
from test_digit_canvas import fake_mnist

SMALL = ImageConfig(size=16, max_pixels=64 * 64)


def reader(config: ImageConfig = SMALL) -> ImageReader:
    return ImageReader(config)


def write_folder(folder: Path, images: dict[str, bytes], captions: dict[str, str] | None = None) -> Path:
    """An image folder: ``images`` (name -> bytes) under ``folder/images`` and a manifest."""
    (folder / "images").mkdir(parents=True)
    with open(folder / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "caption"])
        for name, data in images.items():
            (folder / "images" / name).write_bytes(data)
            writer.writerow([f"images/{name}", (captions or {}).get(name, "seven top left , two bottom right")])
    return folder


# ---------------------------------------------------------------- the reader


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "WEBP"])
def test_reader_gives_one_rgb_frame_of_the_configured_size(fmt):
    data = image_bytes((40, 24), fmt=fmt)
    frame = reader()(data, "x")
    assert frame.shape == (1, 16, 16, 3) and frame.dtype == np.uint8 and frame.flags.c_contiguous


def test_reader_reads_bytes_and_files_alike_and_grey_becomes_three_equal_channels(tmp_path):
    grey = image_bytes((64, 64), mode="L", seed=3)
    (tmp_path / "g.png").write_bytes(grey)
    from_bytes, from_file = reader()(grey, "g"), reader()(tmp_path / "g.png", "g")
    assert np.array_equal(from_bytes, from_file)
    assert (np.array_equal(from_bytes[..., 0], from_bytes[..., 1])
            and np.array_equal(from_bytes[..., 0], from_bytes[..., 2]))
    # each output pixel is the mean of the 4x4 source pixels it covers (BOX): no aliasing
    source = np.asarray(Image.open(io.BytesIO(grey)), dtype=np.float64)
    means = source.reshape(16, 4, 16, 4).mean(axis=(1, 3))
    assert np.abs(from_bytes[0, ..., 0] - means).max() <= 1.0


def test_an_image_reads_as_the_same_frame_in_a_video_frame_folder(tmp_path):
    """One resize for both media: a model sees a PNG as an image exactly as a frame."""
    from pipelines.media.video.decode import VideoFeaturizer

    data = image_bytes((50, 30), seed=1)
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "frame_0.png").write_bytes(data)
    frames = VideoFeaturizer(VideoConfig(size=16))(tmp_path / "clip", "clip").frames
    assert np.array_equal(frames, reader()(data, "x"))


def test_a_camera_jpeg_with_extra_pictures_reads_its_first():
    """Pillow opens a JPEG carrying more pictures (phones' MPO files) as ``MPO``."""
    first, second = (Image.fromarray(np.full((20, 20, 3), v, np.uint8)) for v in (200, 10))
    buffer = io.BytesIO()
    first.save(buffer, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    assert abs(int(reader()(buffer.getvalue(), "x").mean()) - 200) <= 2


def test_reader_applies_exif_orientation():
    pixels = np.zeros((16, 32, 3), np.uint8)
    pixels[:, :16] = 255  # left half white
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # stored rotated: displayed turned 90 degrees clockwise
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif, quality=100)
    frame = reader()(buffer.getvalue(), "x")[0, ..., 0].astype(int)
    assert frame[:6].mean() > 200 and frame[-6:].mean() < 50  # the white half is on top once upright


def truncated_png() -> bytes:
    data = image_bytes((40, 40), seed=2)
    return data[: len(data) // 2]


@pytest.mark.parametrize("data, message", [
    (b"", r"^file\[0\] 'a.png': empty file$"),
    (b"hello, not an image", r"^file\[0\] 'a.png': not a readable image; images are PNG, JPEG, BMP or WebP$"),
    (image_bytes(fmt="GIF"), r"^file\[0\] 'a.png': a GIF image; images are PNG, JPEG, BMP or WebP$"),
    (image_bytes(fmt="TIFF"), r"^file\[0\] 'a.png': a TIFF image"),
    (truncated_png(), r"^file\[0\] 'a.png': truncated or corrupt image \("),
])
def test_bad_images_are_data_errors_naming_the_file(data, message):
    with pytest.raises(DataError, match=message) as caught:
        reader()(data, "file[0] 'a.png'")
    assert not isinstance(caught.value, ImageTooLarge)


def test_too_many_pixels_are_refused_before_decoding(monkeypatch):
    big = image_bytes((65, 64))
    with pytest.raises(ImageTooLarge, match=r"^x: 65x64 = 4,160 pixels; the limit is 4,096 \(data.image.max_pixels\)$"):
        reader()(big, "x")
    assert reader()(image_bytes((64, 64)), "x").shape == (1, 16, 16, 3)  # at the limit is fine
    small = image_bytes((32, 32))
    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded an image its header refuses"))
        with pytest.raises(ImageTooLarge):
            reader()(big, "x")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # past twice Pillow's own limit: its bomb error
    with pytest.raises(ImageTooLarge, match="too many pixels to decode"):
        reader(ImageConfig(size=16))(small, "x")


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"^a.png: no such file"):
        reader()(tmp_path / "a.png", "a.png")


@pytest.mark.parametrize("raw, message", [
    ({"size": 60}, r"data.image.size must be a multiple of 8 in 8..512"),
    ({"size": 1024}, r"data.image.size must be a multiple of 8 in 8..512"),
    ({"size": 64, "max_pixels": 100}, r"data.image.max_pixels must be at least size x size = 4096"),
])
def test_image_config_is_checked(raw, message):
    with pytest.raises(ConfigError, match=message):
        recipe_from_dict({"data": {**IMAGE_RECIPE, "image": raw}, "model": IMAGE_MODEL})


# ---------------------------------------------------------------- image folders (no Ray)


def test_listing_reads_the_manifest_and_names_missing_files(tmp_path):
    folder = write_folder(tmp_path / "f", {"a.png": image_bytes()})
    with open(folder / "manifest.csv", "a") as f:
        f.write("images/gone.png,one top left , two top right\n")
        f.write("images/a.png,\n")
    records = list_image_folder(folder, target="caption")
    assert [r["error"] for r in records][0] == ""
    assert records[1]["error"].startswith("no such file") and records[1]["origin"].endswith("row 2 (images/gone.png)")
    assert records[2]["error"] == "missing caption"
    with pytest.raises(DataError, match="needs a manifest.csv or manifest.jsonl with path,caption"):
        list_image_folder(tmp_path, target="caption")
    with pytest.raises(DataError, match="not a folder"):
        list_image_folder(tmp_path / "nope", target="caption")


def test_a_batch_of_records_becomes_one_frame_rows_and_bad_images_name_themselves(tmp_path):
    folder = write_folder(tmp_path / "f", {"a.png": image_bytes(seed=1), "b.jpg": image_bytes(fmt="JPEG"),
                                           "c.png": b"garbage", "d.png": image_bytes((80, 80))})
    records = list_image_folder(folder, target="caption")
    batch = {k: np.array([r[k] for r in records], dtype=object) for k in records[0]}
    batch["index"] = np.arange(len(records))
    out = read_image_batch(batch, vars(SMALL))
    assert [x.shape for x in out["frames"]] == [(1, 16, 16, 3)] * 4
    assert out["length"].tolist() == [1, 1, 1, 1] and not out["cut"].any()
    assert out["error"][:2].tolist() == ["", ""]
    assert out["error"][2].startswith("not a readable image")
    assert out["error"][3].startswith("80x80 = 6,400 pixels; the limit is 4,096")
    assert out["frames"][2].max() == 0  # a bad record's placeholder is black
    assert np.array_equal(out["frames"][0], reader()(image_bytes(seed=1), "a"))
    assert out["caption"][0] == "seven top left , two bottom right" and out["index"].tolist() == [0, 1, 2, 3]


# ---------------------------------------------------------------- recipes


def test_image_models_are_image_captioning_and_num_layers_may_be_zero():
    from pipelines import apps

    recipe = recipe_from_dict({"data": IMAGE_RECIPE, "model": IMAGE_MODEL})
    app = apps.app_for(recipe)
    assert app.name == "image_caption" and app.medium == "image" and app.route == "generate"
    assert recipe_from_dict({"app": "image_caption", "data": IMAGE_RECIPE, "model": IMAGE_MODEL}).model.num_layers == 0
    with pytest.raises(ValueError, match="num_layers must be >= 1"):  # a clip's frames need the encoder RNN
        ModelConfig(kind="vec2seq", input="video", num_layers=0)
    with pytest.raises(ConfigError, match=r"app 'image_caption' trains model kind/input/decoder vec2seq/image"):
        recipe_from_dict({"app": "image_caption", "data": IMAGE_RECIPE,
                          "model": {**IMAGE_MODEL, "input": "video", "num_layers": 1}})


@pytest.mark.parametrize("override, message", [
    ({"data": {**IMAGE_RECIPE, "format": "video-folder"}}, r"model.input=image reads data.format image-folder, "
                                                           r"got 'video-folder'"),
    ({"data": {**IMAGE_RECIPE, "format": "csv"}}, r"model.input=image reads data.format image-folder"),
    ({"parallel": {"schedule": "wavefront"}}, r"wavefront .* image_caption does not"),
    ({"data": {**IMAGE_RECIPE, "window": 8}}, r"data.window is not read by the image_caption application"),
    ({"data": {**IMAGE_RECIPE, "generate": {"name": "digit-captions"}}},
     r"digit-captions composes canvases from a folder of MNIST digits.*rayseq generate digit-captions "
     r"MNIST_FOLDER ROOT/train"),
])
def test_recipe_checks_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        recipe_from_dict({"data": IMAGE_RECIPE, "model": IMAGE_MODEL, **override})


def test_the_digit_captions_recipe_loads():
    from pipelines.config import load_recipe

    recipe = load_recipe("recipes/digit_captions.yaml")
    assert recipe.model.kind == "vec2seq" and recipe.model.input == "image" and recipe.model.num_layers == 0
    assert recipe.data.format == "image-folder" and recipe.data.image.size == 64


# ---------------------------------------------------------------- the model


def build(num_layers: int = 0, seed: int = 0):
    from pipelines import apps

    recipe = recipe_from_dict({"data": IMAGE_RECIPE, "model": {**IMAGE_MODEL, "num_layers": num_layers}})
    return apps.app_for(recipe).build(recipe.model, {"frame_size": 16, "tgt_vocab_size": 20}, seed=seed).eval()


def test_the_model_is_cnn_then_one_vector_then_the_decoder():
    from models.seq2seq import SourceFrontEnd
    from models.vec2seq import SequenceSummary
    from models.video import FrameEncoder

    model = build()
    layers = list(model.layers.values())
    assert [type(x).__name__ for x in layers] == ["SourceFrontEnd", "SequenceSummary", "TargetEmbedding",
                                                  "ConditionedDecoderLayer", "Generator"]
    assert isinstance(layers[0], SourceFrontEnd) and isinstance(layers[0].frontend, FrameEncoder)
    assert isinstance(layers[1], SequenceSummary) and layers[1].proj.in_features == IMAGE_MODEL["embed_dim"]
    assert [type(x).__name__ for x in build(num_layers=1).layers.values()][1] == "EncoderLayer"


def test_decoding_step_by_step_equals_the_teacher_forced_forward(one_thread):
    """Greedy and beam search run on images unchanged: the incremental decoder gives the
    same log-probabilities as the training forward, whatever the batch holds."""
    model = build(seed=1)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 1, 16, 16, 3), generator=g, dtype=torch.uint8)
    tgt_in = torch.randint(4, 20, (3, 5), generator=g)
    tgt_in[:, 0] = 2
    lengths = (torch.ones(3, dtype=torch.int64), torch.full((3,), 5))
    with torch.no_grad():
        forward = torch.log_softmax(model((images, tgt_in), lengths).double(), -1)
    memory = model.encode(images, lengths[0])
    assert memory.shape == (3, 1, 16)
    state = model.init_decoder_state(3)
    for t in range(5):
        log_probs, state = model.decode_step(tgt_in[:, t], state, memory, lengths[0])
        torch.testing.assert_close(log_probs.double(), forward[:, t], atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        alone = torch.log_softmax(model((images[1:2], tgt_in[1:2]), (lengths[0][:1], lengths[1][:1])).double(), -1)
    torch.testing.assert_close(alone[0], forward[1], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- the predictor


def test_predictor_captions_uploads_as_the_model_decodes_them(tiny_image_captioner, one_thread):
    from models.decoding import generate
    from pipelines.apps.image_caption.predictor import ImageCaptioner
    from pipelines.checkpoint import load_inference, load_predictor

    loaded = load_inference(tiny_image_captioner)
    captioner = load_predictor(tiny_image_captioner)
    assert type(captioner) is ImageCaptioner
    uploads = [("a.png", image_bytes((40, 40), seed=0)), ("b.jpg", image_bytes((20, 32), fmt="JPEG", seed=1)),
               ("c.png", image_bytes((64, 64), mode="L", seed=2))]
    rows = captioner.rows(uploads)
    assert [r.shape for r in rows] == [(1, 16, 16, 3)] * 3
    for beam in (1, 2):
        out = captioner.run(rows, beam_size=beam, max_length=8)
        assert len(out) == 3 and all(isinstance(o["text"], str) and o["score"] <= 0 for o in out)
        for row, answer in zip(rows, out):  # each as the model alone decodes it
            ((best, *_),) = generate(loaded.model, torch.from_numpy(row[None]), torch.ones(1, dtype=torch.int64),
                                     beam_size=beam, **loaded.recipe.decode.limits(max_length=8))
            assert answer["text"] == captioner.detokenize(best.tokens)
            assert answer["score"] == pytest.approx(best.score, abs=1e-5)
    streamed = [item for item in captioner.stream(rows, max_length=8) if item["type"] == "final"]
    greedy = captioner.run(rows, beam_size=1, max_length=8)
    assert [item["text"] for item in sorted(streamed, key=lambda i: i["index"])] == [g["text"] for g in greedy]
    with pytest.raises(DataError, match=r"^file\[1\] 'notes.txt': not a readable image"):
        captioner.rows([("file[0] 'a.png'", uploads[0][1]), ("file[1] 'notes.txt'", b"some notes")])
    with pytest.raises(ImageTooLarge, match=r"^big: 65x65 = 4,225 pixels"):
        captioner.rows([("big", image_bytes((65, 65)))])


def test_captions_are_capped_by_max_length_only(tiny_image_captioner, one_thread):
    """An image is one source step: the sentence-sized ``max_length_ratio`` (2 x 1 + 10 = 12
    tokens) must not cut a caption of 15 words. A decoder that never ends runs to ``max_length``."""
    from models.seq2seq import EOS_ID
    from pipelines.checkpoint import load_predictor

    captioner = load_predictor(tiny_image_captioner)
    assert captioner.recipe.decode.max_length_ratio == 2.0
    generator = captioner.model.layers[str(len(captioner.model.layers) - 1)]
    with torch.no_grad():
        generator.proj.bias[EOS_ID] = -1e4  # EOS only where forced: at max_length
    rows = captioner.rows([("a", image_bytes(seed=4)), ("b", image_bytes(seed=5))])
    for beam in (1, 2):
        found = captioner.search(rows, beam_size=beam, max_length=16)
        assert [len(h[0].tokens) for h in found] == [16, 16]
    assert [len(o["text"].split()) for o in captioner.run(rows)] == [16, 16]  # the recipe's decode.max_length
    streamed = [item for item in captioner.stream(rows, max_length=15) if item["type"] == "final"]
    assert [len(item["tokens"]) for item in streamed] == [15, 15]


def test_checkpoint_meta_names_the_image_application(tiny_image_captioner):
    meta = json.loads((tiny_image_captioner / "meta.json").read_text())
    assert meta["kind"] == "vec2seq" and meta["input"] == "image" and meta["task"] == "generate"
    assert meta["frame_size"] == 16 and meta["tgt_vocab_size"] > 15
    assert "image" in (tiny_image_captioner / "config.yaml").read_text()


# ---------------------------------------------------------------- rayseq generate digit-captions


def test_generate_digit_captions_writes_an_image_folder(tmp_path, capsys):
    from pipelines.cli import main

    mnist = fake_mnist(tmp_path / "mnist", indices=range(4))
    assert main(["generate", "digit-captions", str(mnist), str(tmp_path / "out"), "--count", "12", "--seed", "3",
                 "--index-range", "2-3"]) == 0
    summary = last_json_line(capsys.readouterr().out)
    assert summary["output"] == str(tmp_path / "out") and summary["images"] == 12
    assert summary["source_images"] == 20 and summary["index_range"] == [2, 3]
    assert sum(summary["digits_per_canvas"].values()) == 12
    records = list_image_folder(tmp_path / "out", target="caption")
    assert len(records) == 12 and not any(r["error"] for r in records)
    assert reader(ImageConfig())(records[0]["path"], "x").shape == (1, 64, 64, 3)


@pytest.mark.parametrize("args, message", [
    (["--index-range", "999"], "--index-range must be LO-HI with 0 <= LO <= HI, e.g. 0-999; got '999'"),
    (["--index-range", "9-2"], "--index-range must be LO-HI"),
    (["--count", "0"], "--count must be an integer >= 1"),
])
def test_generate_digit_captions_bad_arguments_exit_2_with_one_line(tmp_path, capsys, args, message):
    from pipelines.cli import main

    mnist = fake_mnist(tmp_path / "mnist", indices=range(2))
    base = ["generate", "digit-captions", str(mnist), str(tmp_path / "out"), "--count", "4", "--seed", "0"]
    assert main([*base, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "out").exists()


def test_generate_lists_digit_captions(capsys):
    from pipelines.cli import main

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "digit-captions" in capsys.readouterr().out


# ---------------------------------------------------------------- on Ray


@pytest.mark.ray
def test_ingest_buckets_images_against_captions_and_stops_on_a_bad_image(ray_head, tmp_path):
    from pipelines.apps.image_caption.data import prepare_captions
    from pipelines.media.image.digit_canvas import write_digit_captions

    mnist = fake_mnist(tmp_path / "mnist", indices=range(3))
    write_digit_captions(mnist, tmp_path / "train", count=40, seed=0)
    write_digit_captions(mnist, tmp_path / "valid", count=10, seed=1)
    raw = {"data": {**IMAGE_RECIPE, "root": str(tmp_path)}, "model": IMAGE_MODEL,
           "tokenizer": {"kind": "wordlevel", "vocab_size": 32, "min_frequency": 1},
           "batching": {"max_tokens": 128, "max_batch_size": 16}}
    data = prepare_captions(recipe_from_dict(raw))
    assert data.report["train_examples"] == 40 and data.report["valid_examples"] == 10
    seen = 0
    for row in data.train.iter_rows():
        assert row["src_tokens"].dtype == np.uint8 and row["src_tokens"].shape[1:] == (1, 16, 16, 3)
        assert row["src_lengths"].tolist() == [1] * len(row["src_lengths"])
        seen += len(row["src_lengths"])
    assert seen == 40
    ids = data.tokenizer.encode("seven top left , two bottom right", add_special_tokens=False).ids
    assert len(ids) == 7 and 1 not in ids  # a word a token, "," included; none unknown
    (tmp_path / "train" / "images" / "00003.png").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"row 4 \(images/00003.png\): not a readable image"):
        prepare_captions(recipe_from_dict(raw))


@pytest.mark.ray
def test_cli_trains_evaluates_and_the_pipeline_runs_two_stages(ray_head, tmp_path):
    from pipelines.media.image.digit_canvas import write_digit_captions
    from test_train_cli import rayseq, sets

    mnist = fake_mnist(tmp_path / "mnist", indices=range(4))
    # What `rayseq generate digit-captions --index-range` writes (that command line is
    # tested above, without Ray), written in this process: a subprocess would only add
    # its start-up to the Ray tier.
    for split, count, seed, indices in (("train", 120, 1, (0, 2)), ("valid", 24, 2, (3, 3))):
        write_digit_captions(mnist, tmp_path / "data" / split, count=count, seed=seed, index_range=indices)
    out = tmp_path / "run"
    done = rayseq("train", "recipes/digit_captions.yaml", "--output", str(out),
                  *sets(f"data.root={tmp_path / 'data'}", "data.image.size=16", "model.embed_dim=16",
                        "model.hidden_size=16", "model.frontend_channels=4", "train.max_steps=12",
                        "train.eval_every=12", "train.log_every=4", "train.warmup_steps=2", "decode.beam_size=2",
                        "parallel.pp=2", "parallel.microbatches=2", "parallel.threads_per_worker=1"))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = last_json_line(done.stdout)
    assert summary["steps"] == 12 and 0.0 <= summary["val_exact_match"] <= 1.0 and "val_bleu" in summary
    done = rayseq("eval", str(out / "checkpoint"), "--data", str(tmp_path / "data" / "valid"),
                  "--predictions", str(tmp_path / "valid.jsonl"))
    assert done.returncode == 0, done.stderr[-3000:]
    scores = last_json_line(done.stdout)
    assert scores["examples"] == 24 and scores["beam_size"] == 2
    assert scores["exact_match"] == pytest.approx(summary["val_exact_match"], abs=1e-4)
    assert len(read_predictions(scores)) == 24
