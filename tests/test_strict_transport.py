"""The schedules under NCCL's point-to-point rules (``pipelines.engine.strict_links``).

Stages run as threads over a simulated wire on which a send completes only when its
receive is in the peer's running group, each rank's groups run in issue order, matching
is per pair in order without tags, and only fused operations progress together. Every
schedule, pp 2-4, dp x pp, seq2vec and seq2seq, training and validation steps, must
finish on it and give the single-process gradients and validation counts. The transport
that issued every send alone (what rayseq did before) deadlocks 1F1B there: that test
reproduces the hang NCCL would have.
"""

from __future__ import annotations

import threading

import pytest
import torch

from models import ModelConfig
from models.dropout import dropout_key
from pipelines.engine.p2p import HEADER, MAX_TENSORS, Op, Transport, decode_header, encode_header
from pipelines.engine.schedules import StageRunner
from pipelines.engine.stage_plan import plan_stages
from pipelines.engine.strict_links import StrictNetwork, TransportDeadlock
from pipelines.engine.topology import Topology
from pipelines.engine.wavefront import chunk_bounds
from test_pipeline_equivalence import CONFIGS, MICRO, TRAIN, app_of, batches, sizes

SEQ2SEQ_NO_DROPOUT = ModelConfig(kind="seq2seq", embed_dim=6, hidden_size=6, num_layers=2, decoder_layers=3,
                                 dropout=0.0)
MODELS = {**CONFIGS, "seq2seq_no_dropout": SEQ2SEQ_NO_DROPOUT}
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def float64():
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(default)


def rows(config: ModelConfig, replica: int, dp: int) -> list[dict[str, torch.Tensor]]:
    """``batches`` with targets past each row's length padded (its ``roll`` wraps a
    token into the last column, which counts only in micro-batches as wide as the
    batch: harmless when every run splits rows alike, not across dp)."""
    out = batches(config, replica, dp)
    for row in out:
        if "tgt_out" in row:
            past = torch.arange(row["tgt_out"].size(1))[None, :] >= row["tgt_lengths"][:, None]
            row["tgt_out"] = row["tgt_out"].masked_fill(past, 0)
    return out


def reference(config: ModelConfig) -> tuple[list[dict[str, torch.Tensor]], list[float], list[tuple]]:
    """Per step of one process: gradients of ``sum(loss) / units`` (no optimizer step,
    so every step sees the initial weights), summed losses, and validation counts."""
    task = app_of(config)
    model = task.build(config, sizes(config), seed=TRAIN.seed)
    grads, losses, counts = [], [], []
    for step, row in enumerate(rows(config, 0, 1)):
        plan = task.step_plan(row, MICRO)
        units, total = task.loss_units(plan), 0.0
        model.train()
        model.zero_grad()
        for i in range(len(plan.lengths)):
            with dropout_key(TRAIN.seed, step, i):
                loss = task.loss(model(plan.tokens[i], plan.lengths[i]), plan.labels[i], TRAIN.label_smoothing)
            (loss / units).backward()
            total += float(loss.detach())
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
        losses.append(total)
        model.eval()
        with torch.no_grad():
            summed = [0.0] * task.eval_width
            for i in range(len(plan.lengths)):
                out = model(plan.tokens[i], plan.lengths[i])
                summed = [a + b for a, b in zip(summed, task.eval_counts(out, plan.labels[i]))]
        counts.append(tuple(summed))
    return grads, losses, counts


def run_strict(config: ModelConfig, dp: int, pp: int, schedule: str, *, transport=Transport, timeout: float = 60.0,
               validate: bool = True, precision: str = "float32") -> dict[int, dict]:
    """Each rank a thread: per step, ``train_step`` (then ``evaluate_step``) over a
    :class:`StrictNetwork`; returns each rank's gradients, losses and counts."""
    network = StrictNetwork(dp * pp, timeout=timeout)
    task = app_of(config)
    stage_plan = plan_stages(task.build(config, sizes(config)).layer_costs(), pp)
    replicas = [rows(config, r, dp) for r in range(dp)]
    units = [sum(task.loss_units(task.step_plan(steps[s], MICRO)) for steps in replicas)
             for s in range(len(replicas[0]))]
    results: dict[int, dict] = {}
    errors: list[BaseException] = []
    # Built here, not in the threads: layer init seeds the process's global RNG.
    models = [task.build(config, sizes(config), seed=TRAIN.seed, keep=stage_plan.layers(r % pp))
              for r in range(dp * pp)]

    def rank_main(rank: int) -> None:
        try:
            topology = Topology(rank, dp, pp)
            model = models[rank]
            runner = StageRunner(model.train(), topology, CPU, task=task, time_chunks=3,
                                 label_smoothing=TRAIN.label_smoothing, transport=transport(network.links(rank), CPU),
                                 precision=precision)
            out = {"grads": [], "losses": [], "counts": []}
            for step, row in enumerate(replicas[topology.dp_rank]):
                plan = task.step_plan(row, MICRO)  # what broadcast_plan gives every stage
                model.zero_grad()
                loss = runner.train_step(plan, schedule=schedule, key=(TRAIN.seed, step), denominator=units[step])
                out["grads"].append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
                out["losses"].append(loss)
                if validate:
                    model.eval()
                    out["counts"].append(runner.evaluate_step(plan))
                    model.train()
            results[rank] = out
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(error)
            network.fail(f"rank {rank} raised {error!r}")

    threads = [threading.Thread(target=rank_main, args=(r,), daemon=True) for r in range(dp * pp)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout * 3)
    if errors:
        raise next((e for e in errors if isinstance(e, TransportDeadlock)), errors[0])
    assert not any(t.is_alive() for t in threads), "a rank never finished"
    return results


CASES = [(1, 2, "gpipe", "dropout"), (1, 2, "1f1b", "dropout"), (1, 2, "wavefront", "dropout"),
         (1, 3, "gpipe", "dropout"), (1, 3, "1f1b", "dropout"), (1, 3, "wavefront", "dropout"),
         (1, 4, "gpipe", "dropout"), (1, 4, "1f1b", "dropout"), (1, 4, "wavefront", "unidirectional"),
         (1, 2, "gpipe", "seq2seq"), (1, 2, "1f1b", "seq2seq"), (1, 3, "1f1b", "seq2seq"), (1, 4, "gpipe", "seq2seq"),
         (1, 4, "1f1b", "seq2seq"), (1, 3, "1f1b", "pointer"), (1, 2, "wavefront", "seq2seq"),
         (1, 3, "wavefront", "input_fed"), (1, 4, "wavefront", "seq2seq"),
         (2, 2, "gpipe", "no_dropout"), (2, 2, "1f1b", "no_dropout"), (2, 2, "wavefront", "no_dropout"),
         (2, 3, "1f1b", "seq2seq_no_dropout"), (2, 2, "gpipe", "seq2seq_no_dropout")]


@pytest.mark.parametrize("dp, pp, schedule, model", CASES)
def test_schedules_finish_and_match_one_process_under_nccl_rules(dp, pp, schedule, model):
    config = MODELS[model]
    ref_grads, ref_losses, ref_counts = reference(config)
    results = run_strict(config, dp, pp, schedule)
    for step, expected in enumerate(ref_grads):
        got: dict[str, torch.Tensor] = {}
        for out in results.values():
            for name, grad in out["grads"][step].items():
                got[name] = got[name] + grad if name in got else grad  # sum over replicas
        assert set(got) == set(expected)
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, rtol=1e-6, atol=1e-9, msg=f"step {step}: {name}")
        last = [out for rank, out in results.items() if rank % pp == pp - 1]
        assert sum(out["losses"][step] for out in last) == pytest.approx(ref_losses[step], rel=1e-6)
        counts = [sum(values) for values in zip(*(out["counts"][step] for out in last))]
        assert counts == pytest.approx(list(ref_counts[step]), rel=1e-6)


class SendsAlone(Transport):
    """The transport before NCCL-safe grouping: every send issued alone, at once."""

    def post(self, message, dst, *, headed=True):
        super().post(message, dst, headed=headed)
        self.ship()


@pytest.mark.parametrize("pp, model", [(2, "dropout"), (3, "dropout"), (2, "seq2seq")])
def test_sends_issued_alone_deadlock_1f1b(pp, model):
    """1F1B's steady state: stage s sends activation i+1 before receiving gradient i,
    while stage s+1 sends gradient i before receiving activation i+1. Under NCCL's rules
    neither send can complete: the hang the old transport would have had on GPUs."""
    with pytest.raises(TransportDeadlock, match=r"no rank can make progress") as caught:
        run_strict(MODELS[model], 1, pp, "1f1b", transport=SendsAlone, timeout=3.0, validate=False)
    report = str(caught.value)
    assert "rank 0 waits on" in report and "send->" in report and "recv<-" in report


def test_sends_issued_alone_still_finish_gpipe():
    """The simulator is not a deadlock detector that fires on everything: GPipe's sends
    never cross, so issuing them alone finishes (and matches) there."""
    results = run_strict(MODELS["dropout"], 1, 2, "gpipe", transport=SendsAlone, timeout=10.0, validate=False)
    assert set(results) == {0, 1}


class Recording(Transport):
    """Remembers the dtypes of what it sends."""

    sent: list[torch.dtype] = []

    def post(self, message, dst, *, headed=True):
        Recording.sent += [t.dtype for t in (message if isinstance(message, tuple) else (message,))]
        super().post(message, dst, headed=headed)


def test_bf16_autocast_pipelines_like_one_process_and_sends_bf16():
    """``train.precision: bf16``: forwards and losses under autocast on every stage; the
    recurrent layers' outputs cross stages as bfloat16 (half the bytes), and pp=2
    computes what pp=1 does."""
    torch.set_default_dtype(torch.float32)
    config = MODELS["seq2seq_no_dropout"]
    one = run_strict(config, 1, 1, "1f1b", precision="bf16", validate=False)
    Recording.sent = []
    two = run_strict(config, 1, 2, "1f1b", precision="bf16", transport=Recording)
    assert torch.bfloat16 in Recording.sent  # (an embedding's output, not autocast, stays float32)
    merged = {**two[0]["grads"][0], **two[1]["grads"][0]}
    assert set(merged) == set(one[0]["grads"][0])
    for name, value in one[0]["grads"][0].items():
        assert value.dtype == torch.float32  # weights and gradients stay float32
        torch.testing.assert_close(merged[name], value, rtol=1e-3, atol=1e-5, msg=name)
    assert two[1]["losses"][0] == pytest.approx(one[0]["losses"][0], rel=1e-3)


# -- the simulated wire itself ------------------------------------------------------------

def _post(network: StrictNetwork, rank: int, *ops: Op):
    return network.links(rank).post(list(ops))


def test_a_send_completes_only_when_its_receive_runs():
    network = StrictNetwork(2, timeout=1.0)
    sent = _post(network, 0, Op(True, torch.ones(3), 1))
    assert not sent.complete
    buffer = torch.zeros(3)
    received = _post(network, 1, Op(False, buffer, 0))
    assert sent.complete and received.complete and torch.equal(buffer, torch.ones(3))


def test_crossing_lone_sends_deadlock_and_fused_ones_do_not():
    network = StrictNetwork(2, timeout=1.0)
    _post(network, 0, Op(True, torch.ones(2), 1))
    _post(network, 0, Op(False, torch.zeros(2), 1))
    _post(network, 1, Op(True, torch.ones(2), 0))
    waiting = _post(network, 1, Op(False, torch.zeros(2), 0))
    with pytest.raises(TransportDeadlock, match="rank 1 waited"):
        network.links(1).wait(waiting)

    network = StrictNetwork(2, timeout=1.0)
    a, b = torch.zeros(2), torch.zeros(2)
    first = _post(network, 0, Op(True, torch.full((2,), 5.0), 1), Op(False, a, 1))
    second = _post(network, 1, Op(True, torch.full((2,), 7.0), 0), Op(False, b, 0))
    assert first.complete and second.complete and a.tolist() == [7.0, 7.0] and b.tolist() == [5.0, 5.0]


def test_a_ranks_groups_run_in_issue_order_whatever_the_peer():
    """Rank 1's receive from rank 2 waits behind its receive from rank 0 (one stream)."""
    network = StrictNetwork(3, timeout=1.0)
    _post(network, 1, Op(False, torch.zeros(1), 0))
    second = _post(network, 1, Op(False, torch.zeros(1), 2))
    from_2 = _post(network, 2, Op(True, torch.ones(1), 1))
    assert not second.complete and not from_2.complete
    _post(network, 0, Op(True, torch.ones(1), 1))
    assert second.complete and from_2.complete


def test_messages_match_in_order_per_pair_without_tags():
    network = StrictNetwork(2, timeout=1.0)
    _post(network, 0, Op(True, torch.tensor([1.0]), 1), Op(True, torch.tensor([2.0]), 1))
    x, y = torch.zeros(1), torch.zeros(1)
    _post(network, 1, Op(False, x, 0))
    _post(network, 1, Op(False, y, 0))
    assert (x.item(), y.item()) == (1.0, 2.0)


def test_a_buffer_of_the_wrong_shape_is_named():
    network = StrictNetwork(2, timeout=1.0)
    _post(network, 0, Op(True, torch.ones(2, 3), 1))
    with pytest.raises(TransportDeadlock, match=r"rank 1 posted a torch.float64 \(3, 2\) buffer for send #0 of rank 0"):
        _post(network, 1, Op(False, torch.zeros(3, 2), 0))


def test_transport_round_trips_tuples_and_dtypes():
    network = StrictNetwork(2, timeout=5.0)
    sender, receiver = Transport(network.links(0), CPU), Transport(network.links(1), CPU)
    memory, tokens = torch.randn(2, 5, 4), torch.randint(0, 9, (2, 3))
    sender.post((memory, tokens), 1)
    sender.post(torch.randn(1, 2).bfloat16(), 1)
    sender.ship()
    got = receiver.receive(0)
    assert isinstance(got, tuple) and torch.equal(got[0], memory) and torch.equal(got[1], tokens)
    assert receiver.receive(0).dtype == torch.bfloat16
    sender.flush()
    assert sender.groups == 1 and receiver.groups == 2


def test_headers_describe_every_tensor_and_refuse_what_they_cannot():
    header = encode_header([torch.zeros(2, 3), torch.zeros(4, dtype=torch.int64)], True)
    assert header.shape == (HEADER,)
    assert decode_header(header) == ([(torch.float64, [2, 3]), (torch.int64, [4])], True)
    with pytest.raises(ValueError, match="at most 6 dims"):
        encode_header([torch.zeros(*[1] * 7)], False)
    with pytest.raises(ValueError, match=f"at most {MAX_TENSORS}"):
        encode_header([torch.zeros(1)] * (MAX_TENSORS + 1), True)
    with pytest.raises(ValueError, match="complex"):
        encode_header([torch.zeros(1, dtype=torch.complex64)], False)


def test_the_wavefront_announces_only_each_micro_batchs_first_chunk():
    """Later chunks' shapes follow from the first and the step plan's chunk bounds: a
    stage reads one shape header per micro-batch (not per chunk), and still matches
    one process (the test above)."""
    made: dict[int, Transport] = {}

    def counting(links, device):
        transport = Transport(links, device)
        made[len(made)] = transport
        return transport

    config = MODELS["unidirectional"]
    run_strict(config, 1, 3, "wavefront", transport=counting, validate=False)
    task = app_of(config)
    micro_batches = sum(len(task.step_plan(row, MICRO).lengths) for row in rows(config, 0, 1))
    assert sorted(t.headers for t in made.values()) == [0, micro_batches, micro_batches]


class Counting(Transport):
    """Counts the messages it posts per (destination, headed)."""

    def __init__(self, links, device):
        super().__init__(links, device)
        self.posted: dict[tuple[int, bool], int] = {}

    def post(self, message, dst, *, headed=True):
        self.posted[dst, headed] = self.posted.get((dst, headed), 0) + 1
        super().post(message, dst, headed=headed)


def test_the_seq2seq_wavefront_sends_the_memory_once_and_the_decoder_by_chunk():
    """pp=4 cuts the encoder-decoder at encoder | decoder (rank 0 -> 1), after the
    attention layer (1 -> 2) and between decoder layers (2 -> 3). Per micro-batch of
    ``n`` target chunks: ``(memory, target tokens)`` crosses once (one header), its
    gradient once; ``(h, context)`` crosses in ``n`` chunks (the first headed), their
    gradients in ``n`` headerless messages. Every receiving rank reads one header per
    micro-batch."""
    made: dict[int, Counting] = {}

    def counting(links, device):
        made[len(made)] = Counting(links, device)
        return made[len(made) - 1]

    config = MODELS["seq2seq"]
    task = app_of(config)
    assert [list(plan_stages(task.build(config, sizes(config)).layer_costs(), 4).layers(s)) for s in range(4)] == [
        [0, 1, 2], [3, 4], [5], [6, 7]]
    run_strict(config, 1, 4, "wavefront", transport=counting, validate=False)
    plans = [task.step_plan(row, MICRO) for row in rows(config, 0, 1)]
    micro = sum(len(plan.lengths) for plan in plans)
    chunks = sum(len(chunk_bounds(int(tgt.max()), 3)) for plan in plans for _, tgt in plan.lengths)
    assert chunks > micro  # some micro-batches do stream in several chunks
    by_rank = {t.links.rank: t for t in made.values()}
    assert by_rank[0].posted == {(1, True): micro}
    assert by_rank[1].posted == {(0, False): micro, (2, True): micro, (2, False): chunks - micro}
    assert by_rank[2].posted == {(1, False): chunks, (3, True): micro, (3, False): chunks - micro}
    assert by_rank[3].posted == {(2, False): chunks}
    assert [by_rank[r].headers for r in range(4)] == [0, micro, micro, micro]
