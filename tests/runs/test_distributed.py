"""Training and evaluation under `torchrun --nproc_per_node 2` on CPU (gloo), against one process.

One torchrun launch (`torchrun_job.py`, module fixture) trains both kinds on linear-Gaussian
data, trains them again in two legs (one epoch, then a resume) and evaluates them; the
tests read what it left. Single-process references run here, in this process.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vi_lab import distributed
from vi_lab.config import load_config
from vi_lab.distributed import Shard
from vi_lab.evaluation.evaluate import evaluate_run
from vi_lab.runs.checkpoint import CheckpointError, load_checkpoint, load_model_state
from vi_lab.runs.folder import load_run
from vi_lab.train import train

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
KINDS = ("local", "amortized")
SETTINGS = [
    "progress=false",
    "device=cpu",  # gloo, also where there is a GPU
    "data.synthetic.num_points=700",  # 550 training rows, 50 validation points, 100 test points
    "train.epochs=2",
    "train.valid_num_points=50",
    "train.valid_num_samples=100",
    "train.gaps_every=1",
    "train.gaps_num_points=100",
    "eval.refine.max_steps=100",
]
EVAL = ["num_points=100", "num_samples=500"]
REPLICATED = ("decoder.", "posterior.encoder.")


def _config(kind: str, *extra: str):
    return load_config(
        ROOT / "configs" / "linear_gaussian.yaml", [*SETTINGS, f"inference.kind={kind}", *extra]
    )


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("torchrun")
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"),
        *(str(ROOT / "tests" / "runs" / "torchrun_job.py"), str(out), *SETTINGS, "--eval", *EVAL),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _ranks(job: Path, kind: str, run: str) -> list[dict[str, torch.Tensor]]:
    return [torch.load(job / kind / f"{run}.rank{rank}.pt", weights_only=True) for rank in range(2)]


@pytest.mark.parametrize("kind", KINDS)
def test_ranks_end_with_identical_decoders_and_one_writer(job, kind):
    rank0, rank1 = _ranks(job, kind, "full")
    replicated = [key for key in rank0 if key.startswith(REPLICATED)]
    assert replicated and all(torch.equal(rank0[key], rank1[key]) for key in replicated)
    events = (job / kind / "full").glob("events.out.*")
    writers = {re.search(r"\.(\d+)\.\d+$", path.name).group(1) for path in events}
    assert len(writers) == 1  # every event file of the run from one process: rank 0


def test_every_row_is_owned_and_updated_by_one_rank(job):
    config = _config("local")
    visits = config.train.epochs * config.inference.inner.max_steps  # a visit per epoch, never stopped early
    ranks = _ranks(job, "local", "full")
    gathered = load_run(job / "local" / "full").model.posterior  # one process reads every shard
    num_rows = gathered.params.shape[0]
    assert num_rows == 550 and torch.equal(gathered.step, torch.full((num_rows,), float(visits)))
    for rank, state in enumerate(ranks):
        assert state["posterior.params"].shape[0] == len(range(rank, num_rows, 2))  # half the table each
        for name in ("params", "exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state[f"posterior.{name}"], getattr(gathered, name)[rank::2])
    assert bool((gathered.params != 0).any(1).all())  # every row moved from the prior


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("run", ["split", "stopped"])
def test_resume_under_torchrun_is_bit_identical(job, kind, run):
    """`split` stopped after its first epoch; `stopped` by SIGINT to one rank mid-epoch."""
    if run == "stopped":  # both ranks stopped after the step during which rank 1 got the signal
        position = json.loads((job / kind / "stopped.position.json").read_text())
        assert (position["epoch"], position["batch"], position["step"]) == (0, 3, 3)
    for full, resumed in zip(_ranks(job, kind, "full"), _ranks(job, kind, run), strict=True):
        assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)
    full, resumed = (load_checkpoint(job / kind / name) for name in ("full", run))
    assert full["optimizer"]["state"].keys() == resumed["optimizer"]["state"].keys()
    for key, moments in full["optimizer"]["state"].items():
        assert all(torch.equal(value, resumed["optimizer"]["state"][key][n]) for n, value in moments.items())
    metrics = [json.loads((job / kind / name / "metrics.json").read_text()) for name in ("full", run)]
    assert metrics[1]["train_elbo"] == pytest.approx(metrics[0]["train_elbo"], abs=1e-4)  # sums regrouped


def _valid_log_px(run_dir: Path) -> float:
    """Exact mean log p(x) of the validation points under the run's decoder (no Monte Carlo)."""
    run = load_run(run_dir)
    with torch.no_grad():
        return run.model.decoder.log_marginal(run.data.x["valid"]).mean().item()


@pytest.mark.parametrize("kind", KINDS)
def test_final_bound_matches_single_process_runs_of_the_same_global_batches(job, kind, tmp_path, monkeypatch):
    """Two ranks vs one process: same initial decoder and global batches, other Monte Carlo draws.

    The spread of the single-process result over 6 Monte Carlo streams (monkeypatched where
    training seeds its ranks' streams) is the yardstick: the two-rank run must lie within 5
    standard deviations of their mean (|t| > 5 has probability 0.004 with 5 degrees of
    freedom). Negative controls, runs that do not take the single process's global step:
    batches of B/2 (ranks stepping alone) and twice the step (gradients summed, not averaged).
    """
    values = []
    for stream in range(6):
        reseed = lambda stream=stream: torch.manual_seed(1000 + stream)  # noqa: E731
        monkeypatch.setattr(distributed, "decorrelate_rng", reseed)
        train(_config(kind), tmp_path / str(stream))
        values.append(_valid_log_px(tmp_path / str(stream)))
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    tolerance = 5 * sd * math.sqrt(1 + 1 / len(values))
    assert abs(_valid_log_px(job / kind / "full") - mean) < tolerance
    for control in ("train.batch_size=50", "train.lr=0.02"):
        train(_config(kind, control), tmp_path / control)
        assert abs(_valid_log_px(tmp_path / control) - mean) > tolerance


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_under_torchrun_reproduces_the_single_process_report(job, kind, tmp_path):
    """Per-point values agree within Monte Carlo error (each rank draws its own numbers);
    exact log p(x) agrees bit for bit, which also shows the points gathered in order."""
    single_dir = tmp_path / "single"
    shutil.copytree(job / kind / "full", single_dir)
    shutil.rmtree(single_dir / "eval")
    single = evaluate_run(single_dir, EVAL, progress=False)
    twin = json.loads((job / kind / "full" / "eval" / "gaps.json").read_text())
    assert twin["num_points"] == single["num_points"] == 100 and twin["split"] == single["split"]
    name = twin["evaluation"]
    assert single["evaluation"] == name
    points = [np.load(folder / "eval" / name / "points.npz") for folder in (job / kind / "full", single_dir)]
    assert np.array_equal(points[0]["log_px_exact"], points[1]["log_px_exact"])
    gaps = ("approximation_gap", *(("amortization_gap", "inference_gap") if kind == "amortized" else ()))
    for key in ("elbo_refined", "log_px", *gaps):
        difference = points[0][key] - points[1][key]  # paired: the same model and points
        se = difference.std(ddof=1) / math.sqrt(difference.shape[0])
        assert abs(twin[key] - single[key]) <= 4 * se, key
    for key in ("elbo_refined", "log_px"):  # Monte Carlo error per point is far below the spread over points
        spread = points[1][key].std()
        assert (points[0][key] - points[1][key]).std() < 0.1 * spread, key
        shuffled = np.roll(points[0][key], 1) - points[1][key]  # negative control: points out of order
        assert shuffled.std() > 0.1 * spread, key


def test_a_checkpoint_reshards_to_any_number_of_processes(job, tmp_path):
    run_dir = job / "local" / "full"
    state, keys = load_checkpoint(run_dir), ["posterior.params", "posterior.step"]
    whole, rng = load_model_state(run_dir, state, Shard(), keys, 550)
    assert rng is None  # written by 2 processes: no stream for 1
    for rank in range(3):
        part, _ = load_model_state(run_dir, state, Shard(rank, 3), keys, 550)
        assert all(torch.equal(part[key], whole[key][rank::3]) for key in keys)
    own, rng = load_model_state(run_dir, state, Shard(1, 2), keys, 550)
    assert rng is not None and torch.equal(own["posterior.params"], whole["posterior.params"][1::2])

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    metrics = train(_config("local", "train.epochs=3"), copy, resume=True)  # 2 processes -> 1
    assert metrics["epochs"] == 3 and math.isfinite(metrics["train_elbo"])
    assert "shards" not in load_checkpoint(copy)  # one process writes the whole table again
    (copy / state["shards"]["folder"] / "rank1-of-2.pt").unlink()
    with pytest.raises(CheckpointError, match=r"rank1-of-2\.pt: a shard of the checkpoint is unreadable"):
        load_model_state(copy, state, Shard(), keys, 550)
