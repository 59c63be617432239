"""The pipeline engine equals a single process.

Worker processes (gloo, no Ray: this tests the engine itself) train the same model with
pp = 1, 2, 3 stages and dp = 1 or 2 replicas under each schedule; losses at every step
and the parameters afterwards must match a plain single-process PyTorch loop to 1e-5
relative, in float64, dropout on. The wavefront schedule also runs a unidirectional GRU
model, whose every layer streams over time chunks (embedding included). The
encoder-decoder runs cut into 2, 3 and 5 stages, so the encoder's memory and the target
tokens cross stage boundaries inside the encoder, between encoder and decoder, and
inside the decoder; under the wavefront (the decoder streaming over target chunks) it
runs cut at each of those places and k from 2 to 8. Audio models (convolutional front end with SpecAugment, then the
RNN stack) run as 2- and 3-stage pipelines, the front end a stage of its own. Video
models (a per-frame CNN over uint8 frames) run as a 2-stage GPipe classifier, under the
wavefront schedule (the CNN streams over time chunks) and as a 3-stage vec2seq captioner;
the image captioner (the CNN over one frame, no encoder RNN, then the decoder) as 2 and 3
stages.
The tagger (character CNN, BiLSTM stack, CRF) runs as 2 and 3 stages: the CRF's
transition scores and the tag scheme's mask live in the last stage with the loss. The
music model (chord embedding, unidirectional LSTM stack, voice heads) runs as 2 and 3
stages: the chords ride along to the heads, which read the voices above each one.
"""

from __future__ import annotations

import os
import pkgutil
from contextlib import nullcontext

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import free_port
from models import ModelConfig
from models.dropout import dropout_key
from pipelines import apps
from pipelines.apps.base import App
from pipelines.config import Recipe, TokenizerConfig, TrainConfig
from pipelines.engine.averaging import ParameterAverage
from pipelines.engine.optim import build_optimizer
from pipelines.engine.schedules import StageRunner, broadcast_plan
from pipelines.engine.stage_plan import plan_stages
from pipelines.engine.topology import Topology
from pipelines.engine.worker import optimizer_step
from pipelines.media.tags import tag_set, to_scheme

MODEL = ModelConfig(embed_dim=6, hidden_size=6, num_layers=3, dropout=0.2, pooling="last")
# Dropout masks are keyed by (step, micro-batch): data parallelism regroups the rows into
# other micro-batches, so the dp comparison runs without dropout.
NO_DROPOUT = ModelConfig(embed_dim=6, hidden_size=6, num_layers=3, dropout=0.0, pooling="last")
UNIDIRECTIONAL = ModelConfig(embed_dim=6, hidden_size=6, num_layers=3, dropout=0.2, pooling="last",
                             cell="gru", bidirectional_bottom=False)
SEQ2SEQ = ModelConfig(kind="seq2seq", embed_dim=6, hidden_size=6, num_layers=2, decoder_layers=3, dropout=0.2)
INPUT_FED = ModelConfig(kind="seq2seq", embed_dim=6, hidden_size=6, num_layers=2, decoder_layers=3, dropout=0.2,
                        input_feeding=True)
# Audio: the convolutional front end (with SpecAugment masks) is a stage like any other;
# so is attention pooling (learned weights in the last stage).
AUDIO = ModelConfig(input="audio", embed_dim=6, hidden_size=6, num_layers=2, dropout=0.2, frontend_channels=2,
                    spec_freq_masks=1, spec_freq_width=2, spec_time_masks=1, spec_time_width=4)
AUDIO_ATTENTION = ModelConfig(**{**vars(AUDIO), "pooling": "attention"})
SPEECH = ModelConfig(kind="seq2seq", input="audio", embed_dim=6, hidden_size=6, num_layers=2, decoder_layers=2,
                     dropout=0.2, frontend_channels=2, spec_freq_masks=1, spec_freq_width=2, spec_time_masks=1)
CTC = ModelConfig(kind="seq2seq", input="audio", decoder="ctc", embed_dim=6, hidden_size=6, num_layers=3,
                  dropout=0.2, frontend_channels=2, spec_time_masks=1, spec_time_width=4)
# Video: uint8 frames through the per-frame CNN; the captioner pools to one vector.
VIDEO = ModelConfig(input="video", embed_dim=6, hidden_size=6, num_layers=2, dropout=0.2, frontend_channels=2)
CAPTION = ModelConfig(kind="vec2seq", input="video", embed_dim=6, hidden_size=6, num_layers=2, decoder_layers=2,
                      dropout=0.2, frontend_channels=2)
# Images: one uint8 frame through the same CNN, no encoder RNN: CNN -> vector -> decoder.
IMAGE_CAPTION = ModelConfig(kind="vec2seq", input="image", embed_dim=6, hidden_size=6, num_layers=0,
                            decoder_layers=2, dropout=0.2, frontend_channels=2)
# Tagging: word/case/character features, a BiLSTM stack, the CRF in the last stage
# (word dropout and the tag scheme's transition mask on).
TAGGER = ModelConfig(kind="tagger", embed_dim=6, hidden_size=6, num_layers=2, char_embed_dim=3, char_channels=4,
                     dropout=0.2, word_dropout=0.2)
# Music: chords (4 voices) in, the next chord voice by voice out; residual from layer 1.
MUSIC = ModelConfig(kind="music", embed_dim=3, hidden_size=6, num_layers=3, residual_from=1, head_size=5, dropout=0.2)
# Speech synthesis: frames and a (word, speaker) condition in, 2 frames a step and stop
# logits out (float labels: the frames), the post-net in the last layer.
SYNTHESIS = ModelConfig(kind="synthesis", embed_dim=3, hidden_size=6, num_layers=3, residual_from=1, prenet_size=5,
                        frames_per_step=2, postnet_channels=4, postnet_layers=3, dropout=0.2)
# Conditioned language model: a condition id (one step) in, tokens out; 3 recurrent layers.
LANGUAGE_MODEL = ModelConfig(kind="language_model", embed_dim=4, hidden_size=6, decoder_layers=3, dropout=0.2)
# Pointer-generator: source ids past the vocabulary (copyable words), targets that copy
# them, coverage (its loss rides to the last stage with the attention), 2+2 layers.
POINTER = ModelConfig(kind="pointer_generator", embed_dim=4, hidden_size=6, num_layers=2, decoder_layers=2,
                      input_feeding=True, coverage=True, coverage_weight=0.5, dropout=0.2)
CONFIGS = {"dropout": MODEL, "no_dropout": NO_DROPOUT, "unidirectional": UNIDIRECTIONAL, "seq2seq": SEQ2SEQ,
           "input_fed": INPUT_FED, "audio": AUDIO, "audio_attention": AUDIO_ATTENTION, "speech": SPEECH, "ctc": CTC,
           "video": VIDEO, "caption": CAPTION, "image_caption": IMAGE_CAPTION, "tagger": TAGGER, "music": MUSIC,
           "synthesis": SYNTHESIS, "language_model": LANGUAGE_MODEL, "pointer": POINTER}
TRAIN = TrainConfig(max_steps=4, lr=0.01, warmup_steps=1, clip_norm=0.5, seed=3, label_smoothing=0.1)
VOCAB, LABELS, MICRO, STEPS, MELS, PIXELS = 40, 3, 3, 4, 5, 8
SIZES = {("seq2vec", "text"): {"vocab_size": VOCAB, "num_labels": LABELS},
         ("seq2seq", "text"): {"src_vocab_size": VOCAB, "tgt_vocab_size": VOCAB - 5},
         ("seq2vec", "audio"): {"feature_dim": MELS, "num_labels": LABELS},
         ("seq2seq", "audio"): {"feature_dim": MELS, "tgt_vocab_size": VOCAB - 5},
         ("seq2vec", "video"): {"frame_size": PIXELS, "num_labels": LABELS},
         ("vec2seq", "video"): {"frame_size": PIXELS, "tgt_vocab_size": VOCAB - 5},
         ("vec2seq", "image"): {"frame_size": PIXELS, "tgt_vocab_size": VOCAB - 5},
         ("tagger", "text"): {"num_words": VOCAB, "num_chars": 12, "num_tags": 5}, ("music", "text"): {},
         ("synthesis", "text"): {"frame_size": MELS, "num_words": 4, "num_speakers": 3},
         ("language_model", "text"): {"num_conditions": 3, "tgt_vocab_size": VOCAB - 5},
         ("pointer_generator", "text"): {"vocab_size": VOCAB - 5}}
TAGS = tag_set(["PER"], "iobes")  # O B-PER I-PER E-PER S-PER


def sizes(config: ModelConfig) -> dict[str, int]:
    return SIZES[(config.kind, config.input)]


def app_of(config: ModelConfig) -> App:
    """The application that trains ``config``'s model (a recipe without ``app:`` picks it
    by model kind/input/decoder), handed to the engine as its ``task`` (a tagger bound to
    its tag set, as training binds it)."""
    words = {"tokenizer": TokenizerConfig(kind="wordlevel")} if config.kind == "pointer_generator" else {}
    app = apps.app_for(Recipe(model=config, **words))
    return type(app)(TAGS, "iobes") if config.kind == "tagger" else app


def _tagged(g: torch.Generator, rows: int) -> dict[str, torch.Tensor]:
    """Tagger rows: words, cases, characters (ragged words), IOBES tags padded with -1."""
    lengths = torch.randint(1, 9, (rows,), generator=g)
    words = _padded(g, lengths, VOCAB)
    cases = torch.where(words > 0, torch.randint(1, 7, words.shape, generator=g), 0)
    chars = torch.randint(2, 12, (*words.shape, 4), generator=g)
    chars[torch.arange(4)[None, None, :] >= torch.randint(1, 5, words.shape, generator=g)[..., None]] = 0
    chars[words == 0] = 0
    labels = torch.full(words.shape, -1)
    for r, n in enumerate(lengths.tolist()):
        entities, i = [], 0
        while i < n:
            if torch.rand(1, generator=g) < 0.5:
                end = min(n, i + int(torch.randint(1, 4, (1,), generator=g)))
                entities.append(("PER", i, end))
                i = end
            else:
                i += 1
        labels[r, :n] = torch.tensor([TAGS.index(t) for t in to_scheme(entities, n, "iobes")])
    return {"tokens": words, "cases": cases, "chars": chars, "lengths": lengths, "labels": labels}


def _padded(g: torch.Generator, lengths: torch.Tensor, vocab: int) -> torch.Tensor:
    tokens = torch.randint(4, vocab, (len(lengths), int(lengths.max())), generator=g)
    tokens[torch.arange(tokens.size(1)).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    return tokens


def _frames(g: torch.Generator, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Audio rows as bucketing makes them: frames ``(rows, 4 * longest, MELS)`` zero-padded,
    lengths in frames (multiples of 4)."""
    frames = steps * 4
    x = torch.randn(len(steps), int(frames.max()), MELS, generator=g, dtype=torch.float32)
    x[torch.arange(x.size(1)).unsqueeze(0) >= frames.unsqueeze(1)] = 0
    return x, frames


def _clips(g: torch.Generator, lengths: torch.Tensor) -> torch.Tensor:
    """Video rows: uint8 frames ``(rows, longest, PIXELS, PIXELS, 3)``, padding black."""
    x = torch.randint(0, 256, (len(lengths), int(lengths.max()), PIXELS, PIXELS, 3), generator=g, dtype=torch.uint8)
    x[torch.arange(x.size(1)).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    return x


def batches(config: ModelConfig, replica: int, dp: int) -> list[dict[str, torch.Tensor]]:
    """Variable-length padded batch rows (as ``pipelines.media.bucketing`` makes them);
    replica ``r`` of ``dp`` gets every dp-th row of the global batch, so the union over
    replicas is the reference's batch."""
    kind = config.kind
    out = []
    for step in range(STEPS):
        g = torch.Generator().manual_seed(100 + step)
        rows = 6 + step
        pick = torch.arange(replica, rows, dp)
        if config.input in ("video", "image"):
            lengths = torch.randint(1, 7, (rows,), generator=g)
            if config.input == "image":  # an image: a clip of one frame
                lengths = torch.ones(rows, dtype=torch.int64)
            clips, lengths = _clips(g, lengths)[pick], lengths[pick]
            clips = clips[:, : int(lengths.max())]
            if kind == "seq2vec":
                out.append({"tokens": clips, "lengths": lengths,
                            "labels": torch.randint(0, LABELS, (rows,), generator=g)[pick]})
                continue
            tgt_len = torch.randint(2, 9, (rows,), generator=g)
            tgt = _padded(g, tgt_len, VOCAB - 5)[pick]
            out.append({"src_tokens": clips, "src_lengths": lengths, "tgt_in": tgt, "tgt_out": tgt.roll(-1, 1),
                        "tgt_lengths": tgt_len[pick]})
            continue
        if config.input == "audio":
            ctc = config.decoder == "ctc"  # CTC needs more steps than target tokens
            frames, frame_lengths = _frames(g, torch.randint(8 if ctc else 1, 13 if ctc else 7, (rows,), generator=g))
            frames, frame_lengths = frames[pick][:, : int(frame_lengths[pick].max())], frame_lengths[pick]
            if kind == "seq2vec":
                out.append({"tokens": frames, "lengths": frame_lengths,
                            "labels": torch.randint(0, LABELS, (rows,), generator=g)[pick]})
                continue
            tgt_len = torch.randint(2, 5 if ctc else 9, (rows,), generator=g)
            tgt = _padded(g, tgt_len, VOCAB - 5)[pick]
            out.append({"src_tokens": frames, "src_lengths": frame_lengths, "tgt_in": tgt, "tgt_out": tgt.roll(-1, 1),
                        "tgt_lengths": tgt_len[pick]})
            continue
        if kind == "synthesis":  # frames padded to whole steps of 2, labels: the frames and a real-frame mask
            lengths = torch.randint(1, 9, (rows,), generator=g)
            frames = torch.randn(rows, 8, MELS, generator=g)[pick]
            lengths = lengths[pick]
            longest = -(-int(lengths.max()) // 2) * 2
            frames = frames[:, :longest]
            real = (torch.arange(longest)[None, :] < lengths[:, None]).to(frames.dtype)
            frames = frames * real[..., None]
            conditions = torch.stack([torch.randint(0, 4, (rows,), generator=g),
                                      torch.randint(0, 3, (rows,), generator=g)], 1)[pick]
            out.append({"tokens": frames, "conditions": conditions, "lengths": lengths, "steps": -(-lengths // 2),
                        "labels": torch.cat([frames, real[..., None]], -1)})
            continue
        if kind == "music":  # chords of 4 pitches (some rests), the first note of some rows unscored
            lengths = torch.randint(1, 9, (rows,), generator=g)
            chords = torch.randint(36, 82, (rows, int(lengths.max()), 4), generator=g)
            chords[torch.rand(chords.shape, generator=g) < 0.1] = 0
            chords[torch.arange(chords.size(1))[None, :] >= lengths[:, None]] = 0
            labels = chords.masked_fill(torch.arange(chords.size(1))[None, :, None] >= lengths[:, None, None], -1)
            labels[::2, 0, 0] = -1
            longest = int(lengths[pick].max())
            starts = torch.randint(0, 40, (rows,), generator=g)  # bar positions
            out.append({"tokens": chords[pick][:, :longest], "starts": starts[pick], "lengths": lengths[pick],
                        "labels": labels[pick][:, :longest]})
            continue
        if kind == "tagger":
            row = _tagged(g, rows)
            longest = int(row["lengths"][pick].max())
            out.append({k: v[pick][:, :longest] if v.dim() > 1 else v[pick] for k, v in row.items()})
            continue
        if kind == "seq2vec":
            lengths = torch.randint(1, 9, (rows,), generator=g)
            tokens = _padded(g, lengths, VOCAB)[pick]
            labels = torch.randint(0, LABELS, (rows,), generator=g)
            out.append({"tokens": tokens[:, : int(lengths[pick].max())], "lengths": lengths[pick],
                        "labels": labels[pick]})
            continue
        if kind == "language_model":  # one condition id per row
            tgt_len = torch.randint(2, 9, (rows,), generator=g)
            tgt = _padded(g, tgt_len, VOCAB - 5)[pick]
            conditions = torch.randint(0, 3, (rows, 1), generator=g)[pick]
            out.append({"src_tokens": conditions, "src_lengths": torch.ones(len(conditions), dtype=torch.int64),
                        "tgt_in": tgt, "tgt_out": tgt.roll(-1, 1), "tgt_lengths": tgt_len[pick]})
            continue
        src_len, tgt_len = torch.randint(1, 9, (rows,), generator=g), torch.randint(2, 9, (rows,), generator=g)
        src, tgt = _padded(g, src_len, VOCAB)[pick], _padded(g, tgt_len, VOCAB - 5)[pick]
        if kind == "pointer_generator":  # ids >= VOCAB - 5 are copied words: each target's first copies its source's
            tgt[:, 1] = src[:, 0]
        out.append({"src_tokens": src[:, : int(src_len[pick].max())], "src_lengths": src_len[pick],
                    "tgt_in": tgt, "tgt_out": tgt.roll(-1, 1), "tgt_lengths": tgt_len[pick]})
    return out


def reference(model_config: ModelConfig, ema_decay: float = 0.0) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Losses and final weights (the parameter average's, with ``ema_decay``) of a plain loop."""
    torch.set_default_dtype(torch.float64)
    task = app_of(model_config)
    model = task.build(model_config, sizes(model_config), seed=TRAIN.seed).train()
    optimizer, scheduler = build_optimizer(model.parameters(), TRAIN)
    average = ParameterAverage(model, ema_decay) if ema_decay else None
    losses = []
    for step, row in enumerate(batches(model_config, 0, 1)):
        optimizer.zero_grad()
        plan = task.step_plan(row, MICRO)
        units, total = task.loss_units(plan), 0.0
        for i in range(len(plan.lengths)):
            with dropout_key(TRAIN.seed, step, i):
                out = model(plan.tokens[i], plan.lengths[i])
            loss = task.loss(out, plan.labels[i], TRAIN.label_smoothing)
            (loss / units).backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), TRAIN.clip_norm)
        optimizer.step()
        scheduler.step()
        if average is not None:
            average.update()
        losses.append(total / units)
    with average.swapped_in() if average is not None else nullcontext():
        return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, world: int, dp: int, pp: int, schedule: str, port: int, out: dict, model_config: ModelConfig,
            ema_decay: float = 0.0, time_chunks: int = 3, cuts: tuple[int, ...] | None = None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        topology = Topology.create(rank, dp, pp)
        task, model_sizes = app_of(model_config), sizes(model_config)
        plan = plan_stages(task.build(model_config, model_sizes).layer_costs(), pp)
        layers = plan.layers(topology.stage) if cuts is None else range(*cut_bounds(plan, cuts)[topology.stage])
        model = task.build(model_config, model_sizes, seed=TRAIN.seed, keep=layers).train()
        optimizer, scheduler = build_optimizer(model.parameters(), TRAIN)
        runner = StageRunner(model, topology, torch.device("cpu"), time_chunks=time_chunks, task=task,
                             label_smoothing=TRAIN.label_smoothing)
        average = ParameterAverage(model, ema_decay) if ema_decay else None
        losses = []
        for step, row in enumerate(batches(model_config, topology.dp_rank, dp)):
            step_plan = task.step_plan(row, MICRO) if topology.is_first else None
            step_plan = broadcast_plan(step_plan, topology, torch.device("cpu"))
            if not topology.is_first:  # every stage gets stage 0's labels, shapes included
                sent = task.step_plan(row, MICRO).labels
                assert [x.shape for x in step_plan.labels] == [x.shape for x in sent]
                assert all(torch.equal(a, b) for a, b in zip(step_plan.labels, sent))
            loss_sum = optimizer_step(runner, optimizer, scheduler, step_plan, schedule=schedule,
                                      key=(TRAIN.seed, step), clip_norm=TRAIN.clip_norm, average=average)
            totals = torch.tensor([loss_sum, task.loss_units(step_plan) if topology.is_last else 0.0])
            topology.all_reduce(totals, "world")
            losses.append(float(totals[0] / totals[1]))
        if topology.dp_rank == 0:
            with average.swapped_in() if average is not None else nullcontext():
                out[rank] = {"losses": losses, "state": {k: v.clone() for k, v in model.state_dict().items()}}
    finally:
        dist.destroy_process_group()


# Workers fork from a server that imported torch and the engine once (and never Ray, which
# this test process may hold): a spawned worker re-imported them, seconds per process.
FORKSERVER = mp.get_context("forkserver")
FORKSERVER.set_forkserver_preload(["torch", "torch.distributed", "pipelines.engine.worker", __name__,
                                   *(f"pipelines.apps.{m.name}" for m in pkgutil.iter_modules(apps.__path__))])


def cut_bounds(plan, cuts: tuple[int, ...]) -> list[tuple[int, int]]:
    """Stage bounds with stage ``s + 1`` starting at layer ``cuts[s]`` (not the planner's)."""
    edges = [0, *cuts, plan.bounds[-1][1]]
    return list(zip(edges, edges[1:]))


def run_parallel(dp: int, pp: int, schedule: str, model_config: ModelConfig, ema_decay: float = 0.0, *,
                 time_chunks: int = 3, cuts: tuple[int, ...] | None = None
                 ) -> tuple[list[float], dict[str, torch.Tensor]]:
    with FORKSERVER.Manager() as manager:
        out = manager.dict()
        mp.start_processes(_worker, args=(dp * pp, dp, pp, schedule, free_port(), out, model_config, ema_decay,
                                          time_chunks, cuts),
                           nprocs=dp * pp, join=True, start_method="forkserver")
        results = dict(out)
    state: dict[str, torch.Tensor] = {}
    for rank in range(pp):
        state.update(results[rank]["state"])
    return results[0]["losses"], state


def test_each_model_is_trained_by_its_application():
    """What the engine is handed as ``task``: the application a recipe with that model
    picks (the CTC model is speech-to-text's CTC variant)."""
    from pipelines.apps.speech_to_text.app import SpeechToTextCTC

    assert {name: app_of(config).name for name, config in CONFIGS.items()} == {
        "dropout": "text_classify", "no_dropout": "text_classify", "unidirectional": "text_classify",
        "seq2seq": "translate", "input_fed": "translate", "audio": "audio_classify",
        "audio_attention": "audio_classify", "speech": "speech_to_text", "ctc": "speech_to_text",
        "video": "video_classify", "caption": "video_caption", "image_caption": "image_caption", "tagger": "tag",
        "music": "music", "synthesis": "speech_synthesis", "language_model": "text_generate",
        "pointer": "summarize"}
    assert isinstance(app_of(CTC), SpeechToTextCTC) and not isinstance(app_of(SPEECH), SpeechToTextCTC)


@pytest.fixture(scope="module")
def expected():
    default = torch.get_default_dtype()
    try:
        return {name: reference(config) for name, config in CONFIGS.items()}
    finally:  # reference() runs in this process: later test files must get float32 back
        torch.set_default_dtype(default)


@pytest.mark.parametrize(
    "dp, pp, schedule, model",
    [(1, 1, "1f1b", "dropout"), (1, 2, "gpipe", "dropout"), (1, 2, "1f1b", "dropout"), (1, 3, "gpipe", "dropout"),
     (1, 3, "1f1b", "dropout"), (2, 2, "1f1b", "no_dropout"), (1, 1, "wavefront", "dropout"),
     (1, 2, "wavefront", "dropout"), (1, 3, "wavefront", "dropout"), (1, 2, "wavefront", "unidirectional"),
     (2, 2, "wavefront", "no_dropout"), (1, 2, "1f1b", "seq2seq"), (1, 3, "gpipe", "input_fed"),
     (1, 5, "1f1b", "seq2seq"), (1, 2, "gpipe", "audio"), (1, 3, "1f1b", "speech"), (1, 2, "1f1b", "ctc"),
     (1, 2, "1f1b", "audio_attention"), (1, 2, "gpipe", "video"), (1, 2, "wavefront", "video"),
     (1, 3, "1f1b", "caption"), (1, 2, "1f1b", "image_caption"), (1, 3, "gpipe", "image_caption"),
     (1, 2, "1f1b", "tagger"), (1, 3, "gpipe", "tagger"), (1, 2, "1f1b", "music"), (1, 3, "gpipe", "music"),
     (1, 2, "1f1b", "synthesis"), (1, 3, "gpipe", "synthesis"), (1, 2, "1f1b", "language_model"),
     (1, 4, "gpipe", "language_model"), (1, 2, "1f1b", "pointer"), (1, 4, "gpipe", "pointer"),
     (1, 3, "wavefront", "input_fed"), (1, 4, "wavefront", "seq2seq")],
)
def test_pipeline_matches_single_process(expected, dp, pp, schedule, model):
    ref_losses, ref_state = expected[model]
    losses, state = run_parallel(dp, pp, schedule, CONFIGS[model])
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    config = CONFIGS[model]
    initial = app_of(config).build(config, sizes(config), seed=TRAIN.seed).state_dict()
    name = next(k for k in initial if k.endswith("weight_hh_l0"))
    assert not torch.allclose(initial[name].double(), ref_state[name])
    assert set(state) == set(ref_state)
    for name, value in ref_state.items():
        torch.testing.assert_close(state[name], value, rtol=1e-5, atol=1e-8, msg=name)


# Layers of SEQ2SEQ and INPUT_FED: 0 source embedding, 1-2 encoder, 3 target embedding,
# 4 attention decoder, 5-6 decoder, 7 generator. The planner cuts pp=2 at 5.
@pytest.mark.parametrize("model, cut, time_chunks", [
    ("seq2seq", 5, 3),  # in the decoder: (h, context) chunks cross
    ("input_fed", 5, 2),  # ... and the input-feeding context is carried from chunk to chunk
    ("input_fed", 6, 8),  # k = 8 > most rows: one-step chunks, rows that end early
    ("input_fed", 7, 4),  # the generator alone on the last stage: the loss summed over chunks
    ("input_fed", 4, 5),  # before the attention layer: (memory, target embeddings) whole, once
    ("seq2seq", 3, 3),  # encoder | decoder: (memory, target tokens) whole
    ("seq2seq", 2, 4),  # inside the encoder (whole rows there), the decoder streams on stage 1
])
def test_seq2seq_wavefront_matches_single_process(expected, model, cut, time_chunks):
    """The encoder-decoder under the wavefront, pp=2 cut at ``cut``: the decoder streams
    over target chunks (full BPTT through its RNN states and the carried context), and
    equals one process (float64, dropout on, ragged rows)."""
    ref_losses, ref_state = expected[model]
    losses, state = run_parallel(1, 2, "wavefront", CONFIGS[model], time_chunks=time_chunks, cuts=(cut,))
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    assert set(state) == set(ref_state)
    for name, value in ref_state.items():
        torch.testing.assert_close(state[name], value, rtol=1e-5, atol=1e-8, msg=name)


def test_parameter_average_matches_single_process(expected):
    """``train.ema_decay``: each stage averages its own parameters; the stages' averages
    together are the single process's average (and differ from its raw weights)."""
    default = torch.get_default_dtype()
    try:
        _, ref_average = reference(MODEL, ema_decay=0.5)
    finally:
        torch.set_default_dtype(default)
    losses, state = run_parallel(1, 3, "1f1b", MODEL, ema_decay=0.5)
    assert losses == pytest.approx(expected["dropout"][0], rel=1e-5)  # averaging never touches training
    raw = expected["dropout"][1]
    assert any(not torch.allclose(ref_average[k], raw[k]) for k in raw)
    for name, value in ref_average.items():
        torch.testing.assert_close(state[name], value, rtol=1e-5, atol=1e-8, msg=name)
