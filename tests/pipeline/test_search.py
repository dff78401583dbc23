"""Hyperparameter search inside the k-fold: pruning, warm starts, the rows trials are scored on, resuming a study,
and several real processes sharing one study on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from datetime import date

import optuna
import pytest

from pipeline import registry, search
from pipeline.config import load_config
from pipeline.evaluate import FoldPlan, fit_folds
from pipeline.metrics import metric_value
from pipeline.record import SEARCH, CycleRecord
from tests.conftest import small_frame, write_config
from tests.pipeline.test_cycle_reruns import AS_OF, CYCLE_ID, make_store, pipeline_command, run


def search_config(tmp_path, **search_settings):
    return load_config(write_config(tmp_path, training={
        "family": "xgboost", "params": {"n_estimators": 40, "max_depth": 3},
        "search": {"trials": 8, **search_settings}}), environ={})


@pytest.fixture
def frame():
    return small_frame(2000, days=10)


def tuned(config, frame, name="study", champion_window=None, champion=None):
    return search.tune(config, frame, "cpu", FoldPlan.of(config, frame), name, champion_window, champion)


def test_trials_behind_the_others_are_pruned_after_their_first_folds(tmp_path, frame):
    result = tuned(search_config(tmp_path), frame)
    summary = result.summary
    assert len(summary.trials) == 8
    pruned = [t for t in summary.trials if t.state == "pruned"]
    assert pruned and all(len(t.fold_values) < 3 for t in pruned)
    best = summary.trial(summary.best_number)
    assert best.state == "complete" and len(best.fold_values) == 3
    assert f"tuned: 8 trials ({len(pruned)} pruned)" in summary.describe()
    # The chosen trial ran here: its folds (and their models) are the candidate's k-fold.
    assert result.folds is not None and len(result.folds.models) == 3
    assert result.params == {"n_estimators": 40, "max_depth": 3, **best.params}


def test_a_trial_that_ran_every_fold_is_complete_not_pruned(tmp_path, frame):
    # At k = 3 successive halving's second rung is the last fold. One at a time the seed's trials repeat, and
    # trial 12 of these reaches that rung behind the others.
    summary = tuned(search_config(tmp_path, trials=16, parallel=1), frame).summary
    assert summary.count("pruned") > 0
    assert all(len(t.fold_values) < 3 for t in summary.trials if t.state == "pruned")


def test_without_a_pruner_every_trial_runs_every_fold(tmp_path, frame):
    summary = tuned(search_config(tmp_path, pruner="none", trials=4), frame).summary
    assert [t.state for t in summary.trials] == ["complete"] * 4


def test_the_first_trial_is_the_fixed_parameters_and_the_second_the_champions(tmp_path, frame):
    champion = ("3", {"n_estimators": 40, "max_depth": 5, "learning_rate": 0.1, "gamma": 99.0})
    summary = tuned(search_config(tmp_path, trials=3), frame, champion=champion).summary
    first, second = summary.trials[:2]
    assert (first.role, first.params) == ("training.params", {"n_estimators": 40, "max_depth": 3})
    assert second.role == "champion v3"
    # Warm-started where the space can take the value; gamma 99 lies outside its range and is sampled instead.
    assert (second.params["max_depth"], second.params["learning_rate"]) == (5, 0.1)
    assert second.params["gamma"] != 99.0


def test_trials_are_scored_only_on_rows_the_gate_will_not_compare(tmp_path, frame):
    config = search_config(tmp_path, trials=2)
    inside = (date(2026, 1, 1), date(2026, 1, 7))  # the champion's window: 7 of the 10 days
    plan = FoldPlan.of(config, frame)
    selection = search.selection_rows(config, frame, plan, inside)
    days = frame["ts"].dt.date
    assert selection.sum() == ((days >= inside[0]) & (days <= inside[1])).sum()
    summary = search.tune(config, frame, "cpu", plan, "study", inside).summary
    assert summary.selection_rows == selection.sum()
    # The baseline (training.params) scored each fold on that fold's rows inside the window only.
    scores = fit_folds(config, frame, "cpu", plan=plan, probe=False).scores
    for fold, (_, test_idx) in zip(summary.trials[0].fold_values, plan.splits, strict=True):
        chosen = test_idx[selection[test_idx]]
        assert fold == pytest.approx(metric_value("roc_auc", plan.y[chosen], scores[chosen]))


def test_no_search_runs_when_the_gate_would_compare_most_held_out_rows(tmp_path, frame):
    config = search_config(tmp_path)
    result = tuned(config, frame, champion_window=(date(2025, 1, 1), date(2025, 1, 31)))
    assert result.summary.trials == [] and result.folds is None
    assert result.params == config.training.params
    assert result.summary.describe().startswith("not tuned: only 0 of the 2,000 held-out rows")


def test_a_study_run_again_keeps_its_trials_and_runs_only_the_rest_of_the_budget(tmp_path, frame):
    first = tuned(search_config(tmp_path, trials=3), frame).summary
    again = tuned(search_config(tmp_path, trials=6), frame).summary
    assert [t.number for t in again.trials] == list(range(6))
    assert [(t.number, t.params) for t in again.trials[:3]] == [(t.number, t.params) for t in first.trials]
    # Resumed, the sampler is seeded apart from the first run's: no trial repeats another's parameters.
    sampled = [tuple(sorted(t.params.items())) for t in again.trials[1:]]
    assert len(set(sampled)) == len(sampled)


def test_trials_run_at_once_sharing_the_fit_threads_and_each_queued_one_runs_once(tmp_path, frame):
    from itertools import combinations

    from threadpoolctl import threadpool_info

    config = search.with_training(search_config(tmp_path, trials=7, pruner="none", parallel=2), threads=2)
    plan = FoldPlan.of(config, frame)
    limits = [pool["num_threads"] for pool in threadpool_info()]
    # Two queued trials (the fixed parameters and the champion's), which the two threads ask for at once.
    study = search.open_study(config, "study", champion=("3", {"max_depth": 5}))
    objective = search.run_trials(config, frame, "cpu", plan, search.selection_rows(config, frame, plan, None), study,
                                  lambda message: None)
    trials = study.trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 7  # the budget exactly, none failed
    assert [t.user_attrs.get("role") for t in trials[:3]] == ["training.params", "champion v3", None]
    assert any(a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete
               for a, b in combinations(trials, 2))
    assert objective.config.training.threads == 1
    assert [pool["num_threads"] for pool in threadpool_info()] == limits  # the process's limits are as they were


def test_the_chosen_trials_fold_models_get_every_fit_thread_back(tmp_path, frame):
    config = search.with_training(search_config(tmp_path, trials=3, pruner="none", parallel=3), threads=3)
    folds = tuned(config, frame).folds
    assert folds is not None
    assert [model[-1].get_params()["n_jobs"] for model in folds.models] == [3, 3, 3]
    # The booster predicts with them too, not only the estimator's parameter.
    assert [json.loads(model[-1].get_booster().save_config())["learner"]["generic_param"]["nthread"]
            for model in folds.models] == ["3"] * 3


@pytest.mark.parametrize(("parallel", "threads", "device", "expected"), [
    pytest.param("auto", 1, "cpu", 1, id="auto-one-cpu"),
    pytest.param("auto", 2, "cpu", 2, id="auto-one-trial-per-fit-thread"),
    pytest.param("auto", 16, "cpu", search.MAX_AUTO_PARALLEL, id="auto-at-most-four"),
    pytest.param("auto", 16, "cuda", 1, id="auto-one-on-a-gpu"),
    pytest.param(3, 16, "cuda", 3, id="set-in-the-config"),
])
def test_how_many_trials_run_at_once(tmp_path, parallel, threads, device, expected):
    config = search.with_training(search_config(tmp_path, parallel=parallel), threads=threads)
    assert search.parallel_trials(config, device) == expected


def test_a_changed_space_starts_another_study(tmp_path, frame):
    config = search_config(tmp_path)
    other = search_config(tmp_path, spaces={"xgboost": {"max_depth": {"type": "int", "low": 2, "high": 4}}})
    assert search.study_name(config, "c", "sha", None) != search.study_name(other, "c", "sha", None)
    assert search.study_name(config, "c", "sha", None) == search.study_name(search_config(tmp_path), "c", "sha", None)


# ---------------------------------------------------------------------------- whole cycles, real processes


def studies(config) -> list[optuna.study.FrozenStudy]:
    return optuna.get_all_study_summaries(config.promotion.database_url)


def the_study(config):
    [summary] = studies(config)
    return optuna.load_study(study_name=summary.study_name, storage=config.promotion.database_url)


def test_a_train_task_killed_mid_search_resumes_the_study_and_records_each_trial_once(tmp_path):
    config_path = make_store(tmp_path, training={"params": {"n_estimators": 60, "max_depth": 3},
                                                 # one at a time: trial 3 ends after trials 0 to 2
                                                 "search": {"trials": 8, "pruner": "none", "parallel": 1}})
    config = load_config(config_path, environ={})
    process = subprocess.Popen(pipeline_command(config_path, "train", "--as-of", AS_OF), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in process.stderr:
        if "[train] trial 3:" in line:  # printed as trial 3 ends, before Optuna records it
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    killed = {t.number: t.user_attrs["worker"] for t in the_study(config).trials if t.state.is_finished()}
    assert set(killed) >= {0, 1, 2}

    again = run(config_path, "train", "--as-of", AS_OF)
    assert again.returncode == 0, again.stderr
    assert "[train] trial 0:" not in again.stderr  # the finished trials stand

    study = the_study(config)
    finished = [t for t in study.trials if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL]
    assert len(finished) == 8
    assert all(t.user_attrs["worker"] == killed[t.number] for t in finished if t.number in killed)
    cycle = CycleRecord.find(config, CYCLE_ID)
    summary = cycle.require(SEARCH)
    assert len(summary.trials) == 8
    children = registry.child_runs(config, cycle.run_id, "trial.number")
    assert sorted(children.finished, key=int) == [str(t.number) for t in summary.trials]
    again = run(config_path, "train", "--as-of", AS_OF)  # once more: nothing is logged twice
    assert again.returncode == 0, again.stderr
    assert registry.child_runs(config, cycle.run_id, "trial.number") == children
    shown = run(config_path, "show")
    assert "Search      tuned: 8 trials (0 pruned), best params" in shown.stdout


def test_a_trials_child_run_a_kill_left_unfinished_is_completed_not_made_again(tmp_path):
    config = search_config(tmp_path)
    parent = registry.cycle_run_id(config, "c1", "retrain", {}, "c1")
    client = registry.client(config)
    half = client.create_run(client.get_run(parent).info.experiment_id, run_name="trial 0",
                             tags={"mlflow.parentRunId": parent, "trial.number": "0"})
    children = registry.child_runs(config, parent, "trial.number")
    assert (children.finished, children.unfinished) == ({}, {"0": half.info.run_id})

    done = registry.log_child_run(config, parent, children, "trial 0", "trial.number", "0", params={"model.C": 1.0},
                                  metrics={"trial.objective": 0.8}, step_metrics={}, tags={"trial.state": "complete"})

    assert done == half.info.run_id
    assert registry.child_runs(config, parent, "trial.number").finished == {"0": done}
    assert client.get_run(done).data.metrics["trial.objective"] == 0.8
    assert [run.info.run_id for run in registry.find_runs(config, "retrain", max_results=10)] == [parent]  # no cycle


def test_two_processes_run_trials_of_one_study_on_postgresql(tmp_path, postgres_url):
    """A `pipeline tune` worker joins the train task's study while it runs: the budget counts the trials of both."""
    # Trials of about a second (no pruning, up to 400 rounds each), one at a time in each process, so the worker
    # joins while most are still to run and each process can overshoot the budget by one trial only.
    config_path = make_store(tmp_path, training={"params": {"n_estimators": 400, "max_depth": 3},
                                                 "search": {"trials": 24, "pruner": "none", "parallel": 1}},
                             promotion={"approval": "auto", "database_url": postgres_url})
    config = load_config(config_path, environ={})
    train_task = subprocess.Popen(pipeline_command(config_path, "train", "--as-of", AS_OF), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    printed = []
    for line in train_task.stderr:
        printed.append(line)
        if "[train] search:" in line:
            break
    worker = subprocess.Popen(pipeline_command(config_path, "tune", "--cycle-id", CYCLE_ID, "--worker", "1"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker_out, worker_err = worker.communicate(timeout=600)
    train_out, train_err = train_task.communicate(timeout=600)
    assert (train_task.returncode, worker.returncode) == (0, 0), "".join(printed) + train_err + worker_err

    study = the_study(config)
    finished = [t for t in study.trials if t.state.is_finished()]
    # Each process stops once the study holds the budget; the other may finish the trial it had begun meanwhile.
    assert 24 <= len(finished) <= 25
    ran = {}
    for trial in finished:
        ran[trial.user_attrs["worker"]] = ran.get(trial.user_attrs["worker"], 0) + 1
    assert len(ran) == 2 and min(ran.values()) >= 2, ran
    assert f"ran {ran[f'{socket.gethostname()}:{worker.pid}']} trials" in worker_out
    assert [t.user_attrs.get("role") for t in study.trials].count("training.params") == 1
    summary = CycleRecord.find(config, CYCLE_ID).require(SEARCH)
    assert 24 <= len(summary.trials) <= len(finished)
    assert {t.worker for t in summary.trials} == set(ran)


def test_a_tuned_cycle_says_so_and_its_champion_warm_starts_the_next_search(tmp_path):
    from pipeline.approval import decide_version, reviewer_decision
    from pipeline.cycle import run_cycle
    from pipeline.record import CycleOutcome, VersionTags
    from pipeline.review import approval_body
    from pipeline.summary import format_outcome
    from tests.conftest import label_flip_store

    # A poor fixed C, so that a trial beats it and the champion has tuned parameters to warm-start from.
    config = label_flip_store(tmp_path, training={"params": {"C": 0.001}, "search": {"trials": 4}})
    first = run_cycle(config, date(2026, 1, 10))
    tags = VersionTags.of(registry.get_version(config, first.version.version))
    assert tags.params == first.cycle.require(SEARCH).best_params
    assert "no champion the floors judged the chosen trial's k-fold mean" in approval_body(CycleOutcome.read(first.cycle))
    decide_version(config, first.version.version, reviewer_decision(True, "alice", "cli"))

    second = run_cycle(config, date(2026, 1, 12))  # 3 of its 5 days are in the champion's window
    summary = second.cycle.require(SEARCH)
    assert [t.role for t in summary.trials[:2]] == ["training.params", "champion v1"]
    assert summary.trials[1].params == {"C": tags.params["C"]}
    line = f"tuned: 4 trials ({summary.count('pruned')} pruned), best params C="
    assert line in format_outcome(second)
    body = approval_body(CycleOutcome.read(second.cycle))
    assert f"**Search** — {line}" in body and "choosing among them biases nothing the gate decided on" in body
