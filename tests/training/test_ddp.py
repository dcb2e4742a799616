"""DDP over 2 gloo processes on the CPU (paddy.training.distributed): the real training step, with accumulation and
no_sync,
gives the gradient of one process's whole batch, frozen phase and unfrozen alike (docs/scale.md)."""

import json
import os
import shlex
import socket

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers.pipeline import copy_pipeline, sh
from helpers.training import CaptureGradients

from paddy.errors import PaddyError
from paddy.settings import parse_settings
from paddy.training import distributed
from paddy.training.augment import BatchAugment
from paddy.training.checkpoints import Checkpoint, Progress, load_checkpoint
from paddy.training.models import create_model, set_frozen
from paddy.training.step import Step, shard_parts, train_step

N, MICRO, WORLD = 24, 5, 2  # 12 samples per rank in 3 micro-batches of 4: accumulation > 1 on each


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (N, 64, 64, 3), dtype=torch.uint8, generator=g), torch.randint(
        0, 10, (N,), generator=g
    )


def vit():
    torch.manual_seed(0)
    return create_model("test_vit", 10, head="timm").train()  # LayerNorm only, no dropout: exact sample counting


def step(model, net, micro, shard=None, no_sync=None):
    augment = BatchAugment((160, 160), (0.5,) * 3, (0.5,) * 3)
    capture = CaptureGradients(model)
    items, targets = batch()
    step = Step(augment, "fp32", micro, shard=shard)
    loss = train_step(net, capture, items, targets, torch.Generator().manual_seed(7), step, no_sync=no_sync)
    return capture.grads, loss


def rank_main(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))  # fmt: skip
    torch.set_num_threads(1)
    with distributed.process_group(torch.device("cpu")):
        model, reductions = vit(), []
        results = {}
        for phase, frozen in (("frozen", True), ("unfrozen", False)):
            set_frozen(model, frozen)
            net = distributed.wrap(model)  # as fine_tune does: the frozen phase's wrapper goes

            def count(phase, bucket):
                reductions.append(phase)
                return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda f: f.value()[0] / WORLD)

            net.register_comm_hook(phase, count)
            shard = (distributed.rank(), distributed.world_size())
            grads, loss = step(model, net, MICRO, shard, distributed.no_sync(net))
            results[phase] = grads, distributed.all_reduce_sum(loss).item(), reductions.count(phase)
        # DDP regroups its gradient buckets after the first step: count on later steps, with no_sync and without
        for key, context in (("with_no_sync", distributed.no_sync(net)), ("without_no_sync", None)):
            reductions.clear()
            step(model, net, MICRO, shard, context)
            results[key], results[f"{key}_by"] = len(reductions), set(reductions)
        # Resume: rank 0 writes the checkpoint; every rank restores it, rank 1 from a path that does not exist on its
        # "machine": it gets rank 0's file through the process group.
        Checkpoint(out / f"resume{rank}.pt", 10).save(Progress(MICRO, epoch=1, step=3), model)
        torch.manual_seed(rank + 10)
        fresh = create_model("test_vit", 10, head="timm")
        progress = Checkpoint(out / f"resume{rank}.pt", 10).load(fresh, None)
        results["resumed"] = (
            (progress.epoch, progress.step),
            all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values())),
        )
        results["written"] = (out / f"resume{rank}.pt").exists()
        results["stop"] = distributed.any_rank(rank == 1), distributed.any_rank(False)  # a signal seen by rank 1 alone
    torch.save(results, out / f"rank{rank}.pt")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(rank_main, args=(free_port(), out), nprocs=WORLD, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("frozen", [True, False])
def test_two_ranks_give_the_single_process_whole_batch_gradient(ranks, frozen):
    model = vit()
    set_frozen(model, frozen)
    expected, loss = step(model, model, N)  # one process, the whole batch at once
    phase = "frozen" if frozen else "unfrozen"
    assert sum(e is None for e in expected) == (sum(not p.requires_grad for p in model.parameters()))
    for r, results in enumerate(ranks):
        got, ddp_loss, _ = results[phase]
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert (g is None) == (e is None), f"rank {r}: a frozen parameter got a gradient or a trained one none"
            if e is not None:
                torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
        assert ddp_loss == pytest.approx(loss.item(), rel=1e-5)


def test_one_ranks_share_alone_would_differ(ranks):
    """The check above can fail: a rank's own share without the average is not the whole batch's gradient."""
    model = vit()
    expected, _ = step(model, model, N)
    alone, _ = step(model, model, MICRO, shard=(0, WORLD))  # no process group: nothing averages the shares
    i = [name for name, _ in model.named_parameters()].index("patch_embed.proj.weight")
    assert not torch.allclose(alone[i], expected[i], rtol=1e-3)


def test_gradients_cross_between_ranks_once_per_step(ranks):
    for results in ranks:
        buckets = results["with_no_sync"]  # one reduction per gradient bucket, once per step
        assert buckets >= 1
        assert results["without_no_sync"] == 3 * buckets  # 3 micro-batches: no_sync saves 2 of every 3 reductions
        # the frozen phase's wrapper, replaced, reduces nothing more
        assert results["with_no_sync_by"] == results["without_no_sync_by"] == {"unfrozen"}


def test_rank_0_alone_writes_the_checkpoint_and_every_rank_resumes_from_it(ranks):
    assert [r["written"] for r in ranks] == [True, False]
    assert [r["resumed"] for r in ranks] == [((1, 3), True)] * 2


def test_ranks_agree_to_stop_when_any_got_a_signal(ranks):
    assert [r["stop"] for r in ranks] == [(True, False)] * 2


def test_shares_are_even_and_cover_the_batch():
    for n, micro, world in [(24, 5, 2), (64, 32, 4), (37, 8, 2), (65, 16, 4)]:
        parts = [shard_parts(n, micro, r, world) for r in range(world)]
        flat = [p for rank in parts for p in rank]
        assert flat[0][0] == 0 and flat[-1][1] == n and all(a[1] == b[0] for a, b in zip(flat, flat[1:]))
        assert len({len(rank) for rank in parts}) == 1  # as many forwards and backwards on every rank
        assert all(0 < stop - start <= micro for start, stop in flat)


def test_a_batch_too_small_to_share_is_refused():
    with pytest.raises(PaddyError, match="cannot be split over 2 processes"):
        shard_parts(1, 8, 0, 2)


def test_devices_is_validated(params):
    params["train"]["devices"] = 0
    with pytest.raises(PaddyError, match="train.devices"):
        parse_settings(params)


def test_rendezvous_flags_come_from_the_environment(monkeypatch):
    argv = ["stages/train.py", "vit", "data/prepared"]
    monkeypatch.delenv(distributed.ARGS_ENV, raising=False)
    cmd = distributed.torchrun_command(4, argv)
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"] and cmd[-5:] == ["--nproc_per_node", "4", *argv]
    flags = "--nnodes 2 --node-rank 1 --rdzv-backend c10d --rdzv-endpoint host0:29400 --rdzv-id paddy"
    monkeypatch.setenv(distributed.ARGS_ENV, flags)
    cmd = distributed.torchrun_command(4, argv)
    assert "--standalone" not in cmd and shlex.join(cmd[3:-5]) == flags


@pytest.mark.slow
def test_dvc_exp_run_with_two_devices_trains_both_models_and_writes_a_submission(tmp_path):
    """The default models through the whole pipeline, train@ as 2 gloo processes under torchrun, with a frozen epoch
    (the model is wrapped again when the body unfreezes)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_pipeline(repo, micro_batch=4)  # 8 samples per process: 2 micro-batches each, no_sync on the first
    log = sh("dvc exp run -S train.devices=2 -S train.frozen_epochs=1", repo, timeout=600)
    for name in ("resnet", "vit"):
        assert f"{name}: cpu, fp32, micro-batch 4 x 2 on each of 2 processes" in log, log[-5000:]
        metrics = json.loads((repo / "dvclive" / name / "metrics.json").read_text())
        assert 0 <= metrics["valid_acc"] <= 1 and metrics["train_time_s"] > 0, metrics
        assert json.loads((repo / "dvclive" / name / "run.json").read_text())["accumulation"] == 2
        history = (repo / "dvclive" / name / "plots" / "metrics" / "split0" / "valid_acc.tsv").read_text().splitlines()
        assert len(history) == 1 + 2, history  # a header, then the frozen and the unfrozen epoch
        model, meta = load_checkpoint(repo / "data" / "models" / name, "v0")  # plain keys, no `module.` prefix
        assert meta["effective_batch"] == 16
    sub = pd.read_csv(repo / "submission.csv")
    sample = pd.read_csv(repo / "data" / "raw" / "sample_submission.csv")
    assert sub.image_id.tolist() == sample.image_id.tolist() and sub.label.notna().all()
    assert json.loads((repo / "metrics" / "ensemble.json").read_text())
    assert not (repo / "data" / "resume" / "vit").exists()  # rank 0 removed the resume folder once done
