"""Tests for `vi-lab study`: Optuna studies whose trials are ordinary `train` runs.

All studies run on a shrunken configs/study/smoke.yaml (the linear-Gaussian data, 700
points, 2-3 epochs), write under tmp_path, and use one torch thread per process so that
they stay fast on a busy 2-core machine.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from tests.postgres import PASSWORD, find_bin_dir, free_port, postgres_server
from vi_lab.cli import main
from vi_lab.config import ConfigError, load_config
from vi_lab.study import runner as study_module
from vi_lab.study.config import load_study_config
from vi_lab.study.runner import open_study, run_study, summarize_study
from vi_lab.study.storage import STORAGE_ENV, StorageLocation, resolve_storage

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMOKE = CONFIGS / "study" / "smoke.yaml"
TINY = ["overrides.data.synthetic.num_points=700", "overrides.train.epochs=2"]


@pytest.fixture(autouse=True)
def no_storage_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORAGE_ENV, raising=False)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def smoke_config(root: Path, *overrides: str):
    return load_study_config(SMOKE, [f"root={root}", *TINY, *overrides])


def load(config, location: StorageLocation | None = None) -> optuna.Study:
    return open_study(config, location or resolve_storage(config, None, 1, existing=True))


def write_study(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(f"base: {CONFIGS / 'linear_gaussian.yaml'}\n{text}")
    return path


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The shipped smoke study, three trials, run through the CLI once for several tests."""
    root = tmp_path_factory.mktemp("studies")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    code = main(["study", str(SMOKE), f"root={root}", *TINY, "pruner.kind=none"])  # all three run to the end
    torch.set_num_threads(threads)
    assert code == 0
    return root, (root / "smoke").as_posix()


def test_smoke_study_records_trials_with_params_and_values(smoke_study) -> None:
    root, study_dir = smoke_study
    config = smoke_config(root)
    trials = load(config).trials
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert (Path(study_dir) / "study.db").is_file() and (Path(study_dir) / "study.yaml").is_file()
    for trial in trials:
        lr, latent_dim = trial.params["train.lr"], trial.params["model.latent_dim"]
        assert 1e-3 <= lr <= 3e-2 and latent_dim in (2, 4, 8)
        run_dir = Path(study_dir) / f"trial_{trial.number:04d}"
        assert trial.user_attrs["run_dir"] == str(run_dir)
        # the value is the run's own final valid ELBO, and the run used the suggested values
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert trial.value == pytest.approx(metrics["valid_log_px"]) and math.isfinite(trial.value)
        assert metrics["epochs"] == 2
        assert trial.intermediate_values.keys() == {1, 2}
        assert trial.intermediate_values[2] == pytest.approx(trial.value)
        saved = load_config(run_dir / "config.yaml")
        assert saved.train.lr == lr and saved.model.latent_dim == latent_dim
        assert saved.model.hidden == json.loads(trial.params["model.hidden"])  # list choices travel as JSON
    assert len({t.params["train.lr"] for t in trials}) == 3


def hparams_records(folder: Path) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    """The HParams records (experiment, session start, session end) TensorBoard reads in a folder."""
    events = EventAccumulator(str(folder))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(data) for tag, data in content.items()}


def session_status(run_dir: Path) -> str:
    """The status TensorBoard shows for a run's session: UNKNOWN while no end is recorded."""
    end = hparams_records(run_dir).get("_hparams_/session_end_info")
    return api_pb2.Status.Name(end.session_end_info.status) if end else "STATUS_UNKNOWN"


def test_trial_folders_hold_tensorboard_hparams(smoke_study) -> None:
    root, study_dir = smoke_study
    trials = load(smoke_config(root)).trials
    for trial in trials:
        run_dir = Path(study_dir) / f"trial_{trial.number:04d}"
        records = hparams_records(run_dir)
        # one per study folder, in its first trial's folder (a file in the study folder would be a run)
        assert ("_hparams_/experiment" in records) is (trial.number == 0)
        hparams = records["_hparams_/session_start_info"].session_start_info.hparams
        assert set(hparams) == {"train.lr", "model.latent_dim", "model.hidden"}  # the params, not the config
        assert hparams["train.lr"].number_value == pytest.approx(trial.params["train.lr"])
        assert hparams["model.latent_dim"].string_value == str(trial.params["model.latent_dim"])  # not 8.0000
        assert hparams["model.hidden"].string_value == trial.params["model.hidden"]
        assert session_status(run_dir) == "STATUS_SUCCESS"
        events = EventAccumulator(str(run_dir))
        events.Reload()
        assert events.Scalars("valid/log_px")[-1].value == pytest.approx(trial.value, rel=1e-5)
    experiment = hparams_records(Path(study_dir) / "trial_0000")["_hparams_/experiment"].experiment
    assert "valid/log_px" in [m.name.tag for m in experiment.metric_infos]
    infos = {info.name: info for info in experiment.hparam_infos}
    differing = {
        k for k in ("train.lr", "model.latent_dim", "model.hidden") if len({t.params[k] for t in trials}) > 1
    }
    assert set(infos) == differing and "train.lr" in differing  # the constant ones left out
    lrs = [t.params["train.lr"] for t in trials]
    assert infos["train.lr"].differs
    assert infos["train.lr"].domain_interval.min_value == pytest.approx(min(lrs))
    assert infos["train.lr"].domain_interval.max_value == pytest.approx(max(lrs))
    if "model.hidden" in infos:
        hidden = {value.string_value for value in infos["model.hidden"].domain_discrete.values}
        assert hidden == {t.params["model.hidden"] for t in trials}


def test_summary_shows_best_trial_table_and_importances(smoke_study, capsys: pytest.CaptureFixture) -> None:
    root, _ = smoke_study
    config = smoke_config(root)
    best = load(config).best_trial
    assert main(["study", str(SMOKE), f"root={root}", *TINY, "--summary"]) == 0
    text = capsys.readouterr().out
    assert "3 complete" in text and "3 of n_trials=3 done" in text
    assert f"best trial:\n  trial {best.number:04d} COMPLETE: valid/log_px {best.value:.4g}" in text
    rows = [line for line in text.splitlines() if line.startswith("| 000")]
    assert len(rows) == 3 and all("| complete |" in row for row in rows)
    assert "parameter importances for valid/log_px: " in text and "train.lr" in text.split("importances")[1]
    assert "(a rough guide only: 3 complete trials for 3 parameters; importances settle with about 15" in text
    assert "optuna-dashboard 'sqlite:///" in text


def test_rerun_resumes_to_the_target_number_of_trials(tmp_path: Path) -> None:
    first = run_study(smoke_config(tmp_path, "n_trials=2"), verbose=False).trials
    again = run_study(smoke_config(tmp_path, "n_trials=2"), verbose=False).trials
    assert len(first) == len(again) == 2  # the target was met: nothing to do
    more = run_study(smoke_config(tmp_path, "n_trials=3"), verbose=False).trials
    assert [t.number for t in more] == [0, 1, 2]
    assert [t.state for t in more[:2]] == [TrialState.COMPLETE] * 2
    assert more[2].state in (TrialState.COMPLETE, TrialState.PRUNED)  # the median pruner may stop it
    assert [t.params for t in more[:2]] == [t.params for t in first]
    assert more[2].params not in [t.params for t in first]  # a fresh sampler stream, not a replay
    assert len(optuna.get_all_study_summaries(resolve_storage(smoke_config(tmp_path), None, 1).open())) == 1


def test_pruner_stops_a_hopeless_trial(tmp_path: Path) -> None:
    path = write_study(
        tmp_path,
        "overrides: {progress: false, data: {synthetic: {num_points: 700}}, train: {epochs: 3, lr: 0.02}}\n"
        "space: {train.batch_size: {type: categorical, choices: [50, 100]}}\n"
        "pruner: {kind: median, n_startup_trials: 2, n_warmup_steps: 0}\n",
    )
    good = run_study(load_study_config(path, [f"root={tmp_path}", "n_trials=2"]), verbose=False).trials
    assert [t.state for t in good] == [TrialState.COMPLETE] * 2
    # same study, but the base learning rate leaves the model where it started
    hopeless = load_study_config(path, [f"root={tmp_path}", "n_trials=3", "overrides.train.lr=1e-7"])
    trial = run_study(hopeless, verbose=False).trials[2]
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]  # stopped after its first epoch of three
    assert trial.intermediate_values[1] < min(t.intermediate_values[1] for t in good)
    assert json.loads((tmp_path / "study" / "trial_0002" / "metrics.json").read_text())["epochs"] == 1
    assert "pruned after epoch 1" in summarize_study(hopeless)
    statuses = [session_status(tmp_path / "study" / f"trial_{n:04d}") for n in range(3)]
    assert statuses == ["STATUS_SUCCESS", "STATUS_SUCCESS", "STATUS_FAILURE"]  # pruned is not success


def test_failing_trial_is_recorded_and_the_study_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_train = study_module.train

    def flaky_train(config, run_dir, **kwargs):
        if Path(run_dir).name == "trial_0001":
            raise RuntimeError("boom in trial 1")
        return real_train(config, run_dir, **kwargs)

    monkeypatch.setattr(study_module, "train", flaky_train)
    config = smoke_config(tmp_path, "pruner.kind=none")
    trials = run_study(config, verbose=False).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, *[TrialState.COMPLETE] * 2]
    assert trials[1].user_attrs["error"] == "RuntimeError: boom in trial 1"
    assert len(run_study(config, verbose=False).trials) == 4  # a failed trial is replaced, once
    assert "RuntimeError: boom in trial 1" in summarize_study(config)


def test_nan_loss_fails_the_trial_with_its_error(tmp_path: Path) -> None:
    path = write_study(
        tmp_path,
        "overrides: {progress: false, data: {synthetic: {num_points: 700}}, train: {epochs: 2}}\n"
        "space: {train.lr: {type: categorical, choices: [1.0e+6]}}\nn_trials: 1\n",
    )
    config = load_study_config(path, [f"root={tmp_path}"])
    (trial,) = run_study(config, verbose=False).trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["error"].startswith("NonFiniteLossError: the training loss became non-finite")
    assert session_status(config.study_dir / "trial_0000") == "STATUS_FAILURE"
    assert "need at least 2 complete trials (have 0)" in summarize_study(config)


def test_two_workers_share_a_journal_without_losing_or_duplicating_trials(tmp_path: Path) -> None:
    config = smoke_config(tmp_path, "n_trials=4", "pruner.kind=none")
    run_study(config, workers=2, verbose=False)
    study_dir = tmp_path / "smoke"
    assert (study_dir / "journal.log").is_file() and not (study_dir / "study.db").exists()
    trials = load(config).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    pids = [t.user_attrs["pid"] for t in trials]
    assert len(set(pids)) == 2  # both workers ran trials; how many each depends on their speed
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4  # workers draw different points
    assert sorted(p.name for p in study_dir.glob("trial_*")) == [f"trial_{n:04d}" for n in range(4)]
    for trial in trials:
        assert (
            json.loads((study_dir / f"trial_{trial.number:04d}" / "metrics.json").read_text())["epochs"] == 2
        )
    # a study that started with workers stays in its journal; SQLite studies refuse workers
    assert resolve_storage(config, None, 1).journal == str(study_dir.resolve() / "journal.log")
    run_study(smoke_config(tmp_path, "name=other", "n_trials=1"), verbose=False)
    with pytest.raises(ValueError, match="without --workers"):
        run_study(smoke_config(tmp_path, "name=other", "n_trials=2"), workers=2, verbose=False)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_trial_left_running_by_a_dead_worker_is_failed_and_replaced(tmp_path: Path) -> None:
    config = smoke_config(tmp_path, "n_trials=1")
    study = run_study(config, verbose=False)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    orphan = study.ask()  # as a worker would leave it when killed mid-trial
    orphan.set_user_attr("host", study.trials[0].user_attrs["host"])
    orphan.set_user_attr("pid", int(dead.stdout))
    elsewhere = study.ask()  # a live worker on another machine: left alone
    elsewhere.set_user_attr("host", "another-machine")
    elsewhere.set_user_attr("pid", 1)
    trials = run_study(smoke_config(tmp_path, "n_trials=3"), verbose=False).trials
    states = {t.number: t.state for t in trials}
    assert states[orphan.number] == TrialState.FAIL and "error" not in trials[orphan.number].user_attrs
    assert states[elsewhere.number] == TrialState.RUNNING
    # target 3 = trial 0 + the running one elsewhere + one new trial replacing the orphan
    assert [n for n, s in states.items() if s == TrialState.COMPLETE] == [0, 3]


def test_multi_objective_study_records_both_values(tmp_path: Path) -> None:
    config = smoke_config(
        tmp_path,
        "n_trials=2",
        "objectives=[{metric: valid/log_px, direction: maximize}, {metric: seconds, direction: minimize}]",
        "pruner.kind=none",
    )
    study = run_study(config, verbose=False)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    for trial in study.trials:
        metrics = json.loads((tmp_path / "smoke" / f"trial_{trial.number:04d}" / "metrics.json").read_text())
        assert trial.values == pytest.approx([metrics["valid_log_px"], metrics["seconds"]])
    assert "Pareto-optimal trials:" in summarize_study(config)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("train.lr: {type: floaty, low: 0.1, high: 1}", "space.train.lr.type"),
        ("train.lr: {low: 0.1, high: 0.1}", "space.train.lr: low (0.1) must be < high (0.1)"),
        ("train.lr: {low: 0.0, high: 0.1, log: true}", "space.train.lr.log: a log scale needs low > 0"),
        ("model.hidden: {type: categorical, choices: []}", "space.model.hidden.choices"),
        ("train.lrr: {low: 0.001, high: 0.1}", "space.train.lrr: cannot be applied"),
        ("train.epochs: {type: int, low: 1, high: 2.5}", "space.train.epochs.high: must be an integer"),
        ("train.epochs: {low: 0.5, high: 2}", "space.train.epochs: cannot be applied .* train.epochs"),
        ("model.decoder: {type: categorical, choices: [mlp, transformer]}", "space.model.decoder: cannot be"),
        ("train.lr: {low: 0.001, high: 0.1, colour: red}", "space.train.lr.colour"),
    ],
)
def test_bad_search_space_entry_is_an_error_naming_it(tmp_path: Path, entry: str, message: str) -> None:
    path = write_study(tmp_path, f"space:\n  {entry}\n")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_study_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("space: {train.lr: {low: 0.001, high: 0.1}}\nn_trails: 3\n", "n_trails"),
        ("space: {train.lr: {low: 0.001, high: 0.1}}\nn_trials: three\n", "n_trials"),
        (
            "space: {train.lr: {low: 0.001, high: 0.1}}\nobjectives: [{metric: valid/elbow}]\n",
            "objectives.0.metric",
        ),
        ("space: {train.lr: {low: 0.001, high: 0.1}}\noverrides: {train: {epoch: 3}}\n", "train.epoch"),
        (
            "space: {train.lr: {low: 0.001, high: 0.1}}\n"
            "objectives: [{metric: valid/log_px}, {metric: seconds, direction: minimize}]\n",
            "pruner.kind",
        ),
        ("space: {}\n", "space: give at least one parameter"),
    ],
)
def test_bad_study_config_is_an_error_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_study_config(write_study(tmp_path, text))


def test_shipped_study_configs_load_against_their_base_configs() -> None:
    for path in sorted((CONFIGS / "study").glob("*.yaml")):
        config = load_study_config(path)
        assert config.name == path.stem and Path(config.base).is_file() and config.space


def test_storage_urls_are_checked_and_passwords_redacted(tmp_path: Path) -> None:
    config = smoke_config(tmp_path)
    location = resolve_storage(config, "postgresql+psycopg2://bob:s3cr3t@db.lab:5432/vi", workers=4)
    assert "s3cr3t" not in location.describe() and "bob:***@db.lab" in location.describe()
    assert "s3cr3t" not in location.dashboard_command()
    with pytest.raises(ValueError, match="not a database URL"):
        resolve_storage(config, "db.lab/vi", 1)
    with pytest.raises(ValueError, match="not supported"):
        resolve_storage(config, "redis://db.lab:6379", 1)
    with pytest.raises(FileNotFoundError, match="no study"):
        summarize_study(config)
    assert main(["study", str(SMOKE), f"root={tmp_path}", "--summary"]) == 2


def test_storage_from_the_environment_keeps_the_password_out_of_printed_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = smoke_config(tmp_path)
    url = "postgresql+psycopg://bob:s3cr3t@db.lab:5432/vi"
    assert resolve_storage(config, url, 1).dashboard_command() == f'optuna-dashboard "${STORAGE_ENV}"  ' + (
        f"(with {STORAGE_ENV} set to the --storage URL)"
    )
    assert resolve_storage(config, "postgresql://bob@db.lab/vi", 1).dashboard_command() == (
        "optuna-dashboard 'postgresql://bob@db.lab/vi'"  # no password: pasteable as it is
    )
    monkeypatch.setenv(STORAGE_ENV, url)
    location = resolve_storage(config, None, 1)
    assert location.url == url and location.env == STORAGE_ENV
    assert location.dashboard_command() == f'optuna-dashboard "${STORAGE_ENV}"'
    assert "s3cr3t" not in location.describe() and location.describe().endswith(f"(from ${STORAGE_ENV})")
    assert resolve_storage(config, "sqlite:///other.db", 1).url == "sqlite:///other.db"  # --storage wins
    monkeypatch.setenv(STORAGE_ENV, "not a url")
    with pytest.raises(ValueError, match=rf"\${STORAGE_ENV} \(not shown\) is not a database URL"):
        resolve_storage(config, None, 1)


@pytest.mark.parametrize(
    "storage",
    [
        f"postgresql+psycopg://vi:{PASSWORD}@127.0.0.1:{free_port()}/postgres",  # nothing listens there
        "sqlite:///{tmp}/no/such/folder/study.db",
    ],
    ids=["wrong-port", "missing-sqlite-folder"],
)
def test_unreachable_storage_is_one_line_and_exit_2_leaving_no_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture, storage: str
) -> None:
    storage = storage.format(tmp=tmp_path)
    root = tmp_path / "studies"
    assert main(["study", str(SMOKE), f"root={root}", *TINY, "--storage", storage]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vi-lab study: error: cannot open storage ") and err.count("\n") == 1, err
    assert PASSWORD not in err
    assert not root.exists()  # no empty study folder left behind


def test_processes_with_one_seed_draw_distinct_parameters_and_replay_them(tmp_path: Path) -> None:
    """Two Study objects on one storage stand for two processes that start together."""
    config = smoke_config(tmp_path, "sampler.kind=random")
    location = resolve_storage(config, None, 2)
    config.study_dir.mkdir(parents=True)
    first, second = (open_study(config, location, create=True) for _ in range(2))
    trials = [study.ask() for _ in range(3) for study in (first, second)]
    drawn = [study_module.suggest(trial, config.space) for trial in trials]
    assert len({json.dumps(d, sort_keys=True) for d in drawn}) == 6
    again = smoke_config(tmp_path, "sampler.kind=random", "name=again")
    again.study_dir.mkdir()
    replay = open_study(again, resolve_storage(again, None, 2), create=True)
    assert [study_module.suggest(replay.ask(), again.space) for _ in range(6)] == drawn  # same seed


def _study_command(root: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "vi_lab.cli", "study", str(SMOKE), f"root={root}", *TINY, *overrides]


def _run_together(commands: list[list[str]], env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """Start the commands at once; wait for all."""
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}
    processes = [subprocess.Popen(command, **pipes) for command in commands]
    outputs = [p.communicate(timeout=300) for p in processes]
    return [
        subprocess.CompletedProcess(p.args, p.returncode, *out)
        for p, out in zip(processes, outputs, strict=True)
    ]


def _subprocess_env(**extra: str) -> dict[str, str]:
    """This checkout first on the path; one torch thread per process (two cores, several processes)."""
    path = [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path)), "OMP_NUM_THREADS": "1", **extra}


def _check_target_met_exactly(study: optuna.Study, n_trials: int) -> list[optuna.trial.FrozenTrial]:
    """n_trials complete with distinct parameters, nothing left running or queued, no failure but surplus."""
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n_trials, [(t.number, t.state.name) for t in trials]
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == n_trials  # no duplicates
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]  # none lost
    assert [t.number for t in trials] == list(range(len(trials)))
    return trials


@pytest.mark.slow
def test_two_invocations_on_one_journal_draw_distinct_parameters_and_meet_the_target(tmp_path: Path) -> None:
    n_trials = 4
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke" / "journal.log").touch()  # the study folder's storage: a journal file
    command = _study_command(tmp_path, f"n_trials={n_trials}", "pruner.kind=none")
    runs = _run_together([command, command], _subprocess_env())
    assert [r.returncode for r in runs] == [0, 0], [r.stderr[-2000:] for r in runs]
    config = smoke_config(tmp_path)
    assert resolve_storage(config, None, 1).journal is not None
    trials = _check_target_met_exactly(load(config), n_trials)
    assert all(t.user_attrs.get("surplus") for t in trials if t.state == TrialState.FAIL)


@pytest.mark.slow
def test_two_invocations_on_a_fresh_sqlite_file_meet_the_target(tmp_path: Path) -> None:
    """The first to open the fresh study.db creates Optuna's tables while the other waits
    (study.db.lock): neither dies on the UNIQUE constraint of alembic_version."""
    n_trials = 4
    command = _study_command(tmp_path, f"n_trials={n_trials}", "pruner.kind=none")
    runs = _run_together([command, command], _subprocess_env())
    assert [r.returncode for r in runs] == [0, 0], [r.stderr[-2000:] for r in runs]
    config = smoke_config(tmp_path)
    assert resolve_storage(config, None, 1).url == f"sqlite:///{tmp_path.resolve() / 'smoke' / 'study.db'}"
    trials = _check_target_met_exactly(load(config), n_trials)
    assert all(t.user_attrs.get("surplus") for t in trials if t.state == TrialState.FAIL)


@pytest.fixture(scope="module")
def postgres_url() -> str:
    bin_dir, why = find_bin_dir()
    if bin_dir is None:
        print(f"\nskipping the PostgreSQL tests: {why}")
        pytest.skip(why)
    with postgres_server(bin_dir) as url:
        yield url


@pytest.mark.slow
def test_unreachable_password_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, postgres_url: str
) -> None:
    wrong = postgres_url.replace(PASSWORD, "wrong-password")
    assert main(["study", str(SMOKE), f"root={tmp_path / 'studies'}", *TINY, "--storage", wrong]) == 2
    err = capsys.readouterr().err
    assert "password authentication failed" in err and err.count("\n") == 1 and "wrong-password" not in err
    assert not (tmp_path / "studies").exists()


@pytest.mark.slow
def test_postgres_study_shared_by_invocations_survives_a_killed_worker(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two invocations on a fresh database, then kill -9 of a worker mid-trial and a re-run."""
    heartbeat = ["heartbeat.interval=1", "heartbeat.grace_period=2", "pruner.kind=none"]
    env = _subprocess_env(**{STORAGE_ENV: postgres_url})
    runs = _run_together([_study_command(tmp_path, "n_trials=4", *heartbeat)] * 2, env)
    assert [r.returncode for r in runs] == [0, 0], [r.stderr[-2000:] for r in runs]
    assert all(PASSWORD not in r.stdout + r.stderr for r in runs)
    assert all(f'optuna-dashboard "${STORAGE_ENV}"' in r.stdout for r in runs)
    config = smoke_config(tmp_path)
    location = StorageLocation(url=postgres_url)
    _check_target_met_exactly(load(config, location), 4)

    # kill -9 a worker once its trial has drawn all its parameters (they are stored one by one)
    command = _study_command(tmp_path, "n_trials=6", *heartbeat)
    worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    study, deadline = load(config, location), time.monotonic() + 120
    while not (running := study.get_trials(states=(TrialState.RUNNING,))) or set(running[0].params) != set(
        config.space
    ):
        assert worker.poll() is None and time.monotonic() < deadline, "the worker never started a trial"
        time.sleep(0.1)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    (killed,) = running
    assert killed.user_attrs["pid"] == worker.pid
    time.sleep(3)  # past the grace period: the heartbeat says the worker is gone

    rerun = subprocess.run(
        _study_command(tmp_path, "n_trials=6", *heartbeat), env=env, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"reclaimed trial {killed.number:04d}: its worker" in rerun.stdout
    assert "sent no heartbeat for 2 s; its parameters are queued to run again" in rerun.stdout
    trials = _check_target_met_exactly(load(config, location), 6)
    assert trials[killed.number].state == TrialState.FAIL
    (retried,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retried.state == TrialState.COMPLETE and retried.params == killed.params


def test_study_folder_is_bound_to_its_storage_and_study(tmp_path: Path) -> None:
    config = smoke_config(tmp_path, "n_trials=1")
    run_study(config, verbose=False)
    other = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    with pytest.raises(ConfigError, match="holds the trials of study 'smoke' in sqlite:///"):
        run_study(config, storage=other, verbose=False)
    assert len(load(config).trials) == 1  # nothing ran, nothing counted
    assert not optuna.get_all_study_summaries(StorageLocation(url=other).open())  # nor was it created


def test_harness_failure_does_not_consume_the_trial_budget(tmp_path: Path) -> None:
    config = smoke_config(tmp_path, "n_trials=2")
    (tmp_path / "smoke" / "trial_0000").mkdir(parents=True)
    (tmp_path / "smoke" / "trial_0000" / "stray.txt").write_text("left by hand")
    with pytest.raises(study_module.TrialHarnessError, match="trial 0"):
        run_study(config, verbose=False)
    (trial,) = load(config).trials
    assert trial.state == TrialState.FAIL and "harness_error" in trial.user_attrs
    assert trial.state not in study_module.TARGET_STATES
    trials = run_study(config, verbose=False).trials  # the re-run runs the whole budget
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 2


def test_a_url_from_the_environment_is_the_storage_the_folder_is_bound_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    run_study(smoke_config(tmp_path, "n_trials=1"), storage=url, verbose=False)
    assert json.loads((tmp_path / "smoke" / "study.json").read_text()) == {"storage": url, "study": "smoke"}
    monkeypatch.setenv(STORAGE_ENV, url)
    run_study(smoke_config(tmp_path, "n_trials=2"), verbose=False)
    assert len(load(smoke_config(tmp_path), StorageLocation(url=url)).trials) == 2
    monkeypatch.setenv(STORAGE_ENV, f"sqlite:///{tmp_path / 'other.db'}")
    with pytest.raises(ConfigError, match="holds the trials of study 'smoke' in sqlite:///"):
        run_study(smoke_config(tmp_path, "n_trials=3"), verbose=False)


def test_harness_failure_in_a_spawned_worker_stops_the_study_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "smoke" / "trial_0000").mkdir(parents=True)
    (tmp_path / "smoke" / "trial_0000" / "stray.txt").write_text("left by hand")
    args = [f"root={tmp_path}", *TINY, "n_trials=2", "pruner.kind=none", "--workers", "2"]
    with pytest.raises(SystemExit) as stop:
        main(["study", str(SMOKE), *args])
    assert stop.value.code == 2
    assert "a trial failed outside its parameters" in capsys.readouterr().err
    trials = load(smoke_config(tmp_path)).trials
    assert trials[0].state == TrialState.FAIL and "harness_error" in trials[0].user_attrs
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert "harness failure (replaced on resume)" in summarize_study(smoke_config(tmp_path))


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", ""])
def test_study_name_must_be_one_safe_path_component(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="name"):
        smoke_config(tmp_path, f"name='{name}'")
