"""Benchmark one cycle on synthetic data: ``python -m pipeline.bench [--rows N ...]`` (``make bench``).

For each size: generate N rows × 30 features (24 numeric, 6 categorical, binary target) per
window into a SQLite warehouse: the champion's window, and the current window, which drifts in
three features and whose label depends on one feature the other way round, so the cycle finds
drift, scores the champion on every current row and promotes a candidate that beats it. Then:
snapshot the current window through each reader (Arrow and SQLAlchemy, ``source.reader``); time
the bare 5-fold training of the configured model (scikit-learn's ``cross_validate``, nothing
else); per ``--final-model``, train and promote the champion on its window (outside the clock)
and time one full cycle on the current one; print per-stage wall time, peak RSS, the
cycle-to-bare-training ratio, the final model and the threads each fit used, what each
Airflow task's process pays to start (``orchestration.startup``) before its stage's work, and
``retrain_model``'s runs of the demo on a real scheduler against its stages' own durations
(``orchestration.dagrun_cost``, ``--dagrun``).
Every step runs in its own process, so each peak RSS is that step's own (a stage's figure is
the cycle's peak so far). ``--load-only`` measures the readers and nothing else.

Both measurements import their libraries before the clock starts, as a warm worker has them, and
the cycle's imports are reported apart; both run their fits under the same thread limits
(``training.threads``, ``--threads``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.memory import peak_rss_mb

AS_OF = date(2026, 3, 31)
DAYS = 28
CHAMPION_AS_OF = AS_OF - timedelta(days=DAYS)
NUMERIC, CATEGORICAL = 24, 6
DRIFTED = ("num_01", "num_02", "cat_1")  # what the current window changes; the rest keeps its distribution
TREES = 200  # XGBoost trees per fit, depth 6
# What a warm worker has imported before a cycle's stage runs; the cycle's clock starts after them.
LIBRARIES = ("great_expectations", "evidently", "mlflow", "xgboost", "sklearn")


def synthetic_frame(rows: int, seed: int = 0, as_of: date = AS_OF, drifted: bool = False) -> pd.DataFrame:
    """``rows`` rows over the DAYS days up to ``as_of``; ``drifted``: the current window's changes."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(rows, NUMERIC)).astype("float64")
    weights = np.array([0.8, -0.6, 0.5, 0.4, -0.3, 0.2])
    if drifted:
        numeric[:, 1] += 0.5  # half a standard deviation
        numeric[:, 2] *= 1.5
        weights[3] = -0.8  # the label now falls with num_03: a champion that learnt otherwise is beaten
    frame = pd.DataFrame(numeric, columns=[f"num_{i:02d}" for i in range(NUMERIC)])
    for i in range(CATEGORICAL):
        values = [f"v{j}" for j in range(3 + 2 * i)]
        odds = np.ones(len(values))
        if drifted and i == 1:
            odds[0] = 3.0  # its first value three times as common as the others
        # Each value one str object shared by its rows, as a read from Arrow gives them: not one per row (3 GB at 10M).
        codes = rng.choice(len(values), size=rows, p=odds / odds.sum())
        frame[f"cat_{i}"] = pd.Categorical.from_codes(codes, values).astype(object)
    frame.loc[rng.random(rows) < 0.02, "num_00"] = np.nan
    logit = numeric[:, :6] @ weights + (frame["cat_0"] == "v0") * 0.7
    frame["target"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    start = pd.Timestamp(as_of - timedelta(days=DAYS - 1))
    frame.insert(0, "ts", start + pd.to_timedelta(np.sort(rng.integers(0, DAYS * 86400, size=rows)), unit="s"))
    return frame


def current_frame(rows: int) -> pd.DataFrame:
    return synthetic_frame(rows, seed=0, drifted=True)


def bench_config(data: Path, store: Path, final_model: str = "refit", threads: str | int = "auto",
                 trees: int = TREES, search: int = 0) -> dict:
    """The config of one measurement: the warehouse and suite in ``data``, registry and runs in ``store``."""
    features = {"numeric": [f"num_{i:02d}" for i in range(NUMERIC)], "categorical": [f"cat_{i}" for i in range(CATEGORICAL)]}
    return {
        "model_name": "bench",
        "task": "classification",
        "source": {"url": f"sqlite:///{data / 'warehouse.db'}", "table": "events", "timestamp_column": "ts",
                   "target_column": "target", "features": features},
        "windows": {"current_days": DAYS, "initial_reference_days": DAYS, "min_rows": 1},
        "validation": {"suite": str(data / "suite.json")},
        # Both measurements train the same trees: early stopping would make the cycle look cheaper than it is.
        "training": {"family": "xgboost", "device": "cpu", "early_stopping_rounds": None, "final_model": final_model,
                     "threads": threads, "params": {"n_estimators": trees, "max_depth": 6},
                     "search": {"trials": search}},
        "evaluation": {"k": 5},
        "registry": {"tracking_uri": f"sqlite:///{store / 'mlflow.db'}", "artifact_root": str(store / "artifacts")},
        "promotion": {"approval": "auto", "database_url": f"sqlite:///{store / 'pipeline.db'}"},
        "storage": {"root": str(store / "runs")},
    }


def write_config(data: Path, store: Path, final_model: str = "refit", threads: str | int = "auto",
                 trees: int = TREES, search: int = 0) -> None:
    import yaml

    store.mkdir(parents=True, exist_ok=True)
    (store / "config.yaml").write_text(yaml.safe_dump(bench_config(data, store, final_model, threads, trees, search)))


def _config(root: Path):
    from pipeline.config import load_config

    return load_config(root / "config.yaml", environ={})


def _prepare(root: Path, rows: int) -> dict:
    """The warehouse (the champion's window and the current one, N rows each) and a suite proposed on the former."""
    from pipeline import demo
    from pipeline.validate import propose_suite, write_suite

    config = _config(root)
    champion = synthetic_frame(rows, seed=1, as_of=CHAMPION_AS_OF)
    write_suite(propose_suite(config, champion), config.validation.suite)
    # One window in memory at a time: two and their concatenation would not fit at 10M rows.
    demo.write_tables(config.source.url, {"events": champion}, "ts")
    del champion
    demo.write_tables(config.source.url, {"events": current_frame(rows)}, "ts", if_exists="append")
    return {}


READERS = ("arrow", "sqlalchemy")


def in_memory_mb(frame: pd.DataFrame) -> float:
    """One window as the stages hold it (its snapshot read back): each column's array, and each distinct object of an
    object column once. pandas' ``memory_usage(deep=True)`` counts a string once per row that points at it, though
    Arrow's conversion gives all rows of a value one shared object: that doubled the 1M-row window."""
    shared = sum(sys.getsizeof(value) for column in frame.select_dtypes("object") for value in pd.unique(frame[column]))
    return (frame.memory_usage(index=True, deep=False).sum() + shared) / 2**20


def _load(root: Path, rows: int, reader: str) -> dict:
    """The cycle's snapshot of the current window through one reader: seconds, and peak memory in this
    process against its peak after the imports (pandas, pyarrow, SQLAlchemy, the driver)."""
    import adbc_driver_sqlite.dbapi  # noqa: F401  (a warm worker's import, outside the clock like the others)

    from pipeline import data

    config = _config(root)
    source = config.source.model_copy(update={"reader": reader})
    window = data.current_window(config, AS_OF)
    before = peak_rss_mb()
    started = time.perf_counter()
    snapshot = data.snapshot_window(source, window, root / f"load-{reader}.parquet")
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    held = in_memory_mb(pd.read_parquet(root / f"load-{reader}.parquet"))
    return {f"load_{reader}": {"seconds": seconds, "peak_rss_mb": peak, "above_imports_mb": peak - before,
                               "rows": snapshot.rows, "sha256": snapshot.sha256}, "window_mb": held}


def _bare_training(root: Path, rows: int) -> dict:
    """5-fold cross-validation of the same model on the same rows, under the same thread limits, and nothing else."""
    from sklearn.model_selection import StratifiedKFold, cross_validate

    from pipeline.train import build_model, encode_target, fit_threads

    config = _config(root)
    frame = current_frame(rows)
    y = encode_target(config, frame["target"])
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=config.training.seed)
    started = time.perf_counter()
    with fit_threads(config) as threads:
        cross_validate(build_model(config, "cpu"), frame, y, cv=cv, scoring="roc_auc")
    return {"bare_5fold_s": time.perf_counter() - started, "bare_peak_rss_mb": peak_rss_mb(), "bare_threads": threads}


def _champion(root: Path, rows: int, as_of: date = CHAMPION_AS_OF) -> dict:
    """v1, trained on the champion's window and promoted (auto approval): the cycle then has a champion to beat."""
    from pipeline.cycle import run_cycle

    outcome = run_cycle(_config(root), as_of)
    if outcome.version is None:
        raise RuntimeError(f"the champion's cycle ended {outcome.status.value}, no version to compare with")
    return {"champion_version": outcome.version.version}


def _cycle(root: Path, rows: int) -> dict:
    import importlib

    started = time.perf_counter()
    for library in LIBRARIES:
        importlib.import_module(library)
    imports_s = time.perf_counter() - started
    from pipeline import registry
    from pipeline.cycle import STAGES, run_cycle
    from pipeline.record import STATUS
    from pipeline.train import resolve_threads

    config = _config(root)
    registry.ensure_experiment_id(config)  # a migrated MLflow store, outside the cycle's clock
    started = time.perf_counter()
    outcome = run_cycle(config, AS_OF)
    stages = outcome.cycle.require(STATUS).stages
    drift = outcome.drift
    return {
        "cycle_s": time.perf_counter() - started, "imports_s": imports_s, "status": outcome.status.value,
        # Each stage resets the kernel's high-water mark to measure its own peak: the cycle's is the largest of theirs.
        "peak_rss_mb": max([peak_rss_mb(), *(timing.peak_rss_mb for timing in stages.values())]),
        "stages": {s: stages[s].seconds if s in stages else None for s in STAGES},
        "stage_rss_mb": {s: stages[s].peak_rss_mb if s in stages else None for s in STAGES},
        "auc": outcome.evaluation.primary_mean if outcome.evaluation else None,
        "compared_rows": outcome.verdict.compare_rows if outcome.verdict else 0,
        "drifted": [f.feature for f in drift.features if f.drifted] if drift else [],
        "final_model": config.training.final_model, "threads": resolve_threads(config),
        "search": config.training.search.trials, "tuning": outcome.evaluation.tuning if outcome.evaluation else None,
    }


def _orchestration(module: str, *args: str, show: bool = False):
    """``python -m orchestration.<module> ARGS --json F`` with dags/ on the path (its modules know Airflow; this one
    must not); what it wrote to F. ``show``: its own table goes to stdout."""
    dags = Path(__file__).resolve().parents[1] / "dags"
    with tempfile.TemporaryDirectory(prefix=f"{module}-") as tmp:
        out = Path(tmp) / f"{module}.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(dags), os.environ.get("PYTHONPATH")]))}
        subprocess.run([sys.executable, "-m", f"orchestration.{module}", *args, "--json", str(out)],
                       env=env, check=True, stdout=None if show else subprocess.DEVNULL)
        return json.loads(out.read_text())


def task_startup(repeats: int) -> list[dict]:
    """Each Airflow task's start-up before its work (``orchestration.startup``), in fresh interpreters."""
    return _orchestration("startup", "--repeats", str(repeats))


def dagrun_cost(starts: list[str]) -> list[dict]:
    """retrain_model's runs on a real scheduler, per way of starting tasks (``orchestration.dagrun_cost``): prints
    its table."""
    return _orchestration("dagrun_cost", "--start", *starts, show=True)


def _in_child(step, *args) -> dict:
    """Each step in a fresh process, so its peak RSS is its own."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(step, args)


def run(rows: int, final_models: list[str], threads: str | int = "auto", load_only: bool = False,
        readers: tuple[str, ...] = READERS, trees: int = TREES, search: int = 0) -> list[dict]:
    """One warehouse, its reads and one bare training per size, then one cycle per final model, each in a fresh
    registry; with ``search``, one more (a refit) tuned by that many trials, against a champion a week older than
    the current window's end (the trials are scored on its three weeks, the gate compares on the fourth)."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        root = Path(tmp)
        write_config(root, root, threads=threads, trees=trees)
        shared = {"rows": rows, "trees": trees} | _in_child(_prepare, root, rows)
        for reader in readers:
            shared |= _in_child(_load, root, rows, reader)
        if load_only:
            return [shared]
        shared |= _in_child(_bare_training, root, rows)
        results = []
        for final_model in final_models:
            store = root / final_model
            write_config(root, store, final_model, threads, trees)
            champion = _in_child(_champion, store, rows)
            results.append(shared | champion | _in_child(_cycle, store, rows))
        if search:
            store = root / "search"
            write_config(root, store, "refit", threads, trees, search)
            champion = _in_child(_champion, store, rows, AS_OF - timedelta(days=7))
            results.append(shared | champion | _in_child(_cycle, store, rows))
        return results


def print_load_table(results: list[dict]) -> None:
    header = f"{'load (current window)':<26}" + "".join(f"{r['rows']:>11,} rows  peak RSS  above imports" for r in results)
    print(header)
    print("-" * len(header))
    readers = [reader for reader in READERS if all(f"load_{reader}" in r for r in results)]
    for reader in readers:
        cells = "".join(f"{r[f'load_{reader}']['seconds']:>16.1f}s {r[f'load_{reader}']['peak_rss_mb']:>6,.0f} MB"
                        f"{r[f'load_{reader}']['above_imports_mb']:>12,.0f} MB" for r in results)
        print(f"{reader:<26}{cells}")
    if len(readers) > 1:
        same = ["yes" if len({r[f"load_{reader}"]["sha256"] for reader in readers}) == 1 else "NO" for r in results]
        print(f"{'same sha256':<26}" + "".join(f"{s:>17}{'':>26}" for s in same))


def print_table(results: list[dict]) -> None:
    """One column per cycle: its size and final model on top, then time and peak RSS per stage."""
    from pipeline.cycle import STAGES

    def line(label: str, cells: list[str]) -> None:
        print(f"{label:<22}" + "".join(cells).rstrip())

    def timed(value: str) -> str:
        return f"{value:>15}{'':12}"

    def sized(value: str) -> str:
        return f"{'':16}{value:>9}  "

    line("", [timed(f"{r['rows']:,} rows") for r in results])
    line("", [timed(r["final_model"] + (f", search {r['search']}" if r["search"] else "")) for r in results])
    line("stage", [f"{'time':>15} {'peak RSS':>9}  " for _ in results])
    print("-" * (22 + 27 * len(results)))
    for stage in STAGES:
        line(stage, [f"{(r['stages'][stage] or 0):>14.1f}s {(r['stage_rss_mb'][stage] or 0):>6,.0f} MB  " for r in results])
    line("cycle total (wall)", [timed(f"{r['cycle_s']:.1f}s") for r in results])
    line("imports (apart)", [timed(f"{r['imports_s']:.1f}s") for r in results])
    line("bare 5-fold training", [timed(f"{r['bare_5fold_s']:.1f}s") for r in results])
    line("cycle / bare 5-fold", [timed(f"{r['cycle_s'] / r['bare_5fold_s']:.2f}x") for r in results])
    line("train / bare 5-fold", [timed(f"{(r['stages']['train'] or 0) / r['bare_5fold_s']:.2f}x") for r in results])
    line("peak RSS, cycle", [sized(f"{r['peak_rss_mb']:,.0f} MB") for r in results])
    line("peak RSS, bare 5-fold", [sized(f"{r['bare_peak_rss_mb']:,.0f} MB") for r in results])
    line("one window in memory", [sized(f"{r['window_mb']:,.0f} MB") for r in results])
    line("peak RSS / window", [timed(f"{r['peak_rss_mb'] / r['window_mb']:.1f}x") for r in results])
    line("drifted features", [timed(",".join(r["drifted"]) or "none") for r in results])
    line("champion compared on", [timed(f"v{r['champion_version']}, {r['compared_rows']:,} rows") for r in results])
    line("trees per fit", [timed(str(r["trees"])) for r in results])
    line("k-fold AUC", [timed(f"{r['auc']:.4f}") for r in results])
    line("threads per fit", [timed(f"{r['threads']} (bare {r['bare_threads']})") for r in results])
    line("status", [timed(r["status"]) for r in results])
    tuned = [r for r in results if r["tuning"]]
    for r in tuned:
        print(f"search ({r['rows']:,} rows): {r['tuning']}")


def print_startup_table(rows: list[dict]) -> None:
    print("Airflow task start-up: a fresh process per task, the DAG file parsed, the task's modules imported")
    print(f"{'task':<34}{'start-up':>10}  heavy libraries imported")
    print("-" * 82)
    for row in rows:
        print(f"{row['dag'] + '.' + row['task']:<34}{row['seconds']:>9.2f}s  {', '.join(row['heavy']) or '-'}")


def _threads(value: str) -> str | int:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"--threads takes auto or a number >= 1, got {value!r}")
    return int(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000], help="rows per window")
    parser.add_argument("--final-model", nargs="+", choices=["refit", "fold_ensemble"], default=["refit", "fold_ensemble"],
                        help="training.final_model of the cycle; one cycle for each given (default: both)")
    parser.add_argument("--threads", type=_threads, default="auto",
                        help="training.threads of every fit, the bare training's too (default: auto)")
    parser.add_argument("--trees", type=int, default=TREES,
                        help=f"XGBoost trees per fit on both sides (default: {TREES}; fewer keep 10M rows short)")
    parser.add_argument("--readers", nargs="+", choices=READERS, default=list(READERS),
                        help="the snapshot readers measured (default: all; sqlalchemy holds per-row strings)")
    parser.add_argument("--load-only", action="store_true", help="measure the readers only (no training, no cycle)")
    parser.add_argument("--startup-repeats", type=int, default=3,
                        help="fresh interpreters per Airflow task for its start-up (median shown; 0: not measured)")
    parser.add_argument("--dagrun", nargs="+", choices=["preload", "fork", "none"], default=["preload", "fork"],
                        help="retrain_model's DAG runs on a real scheduler, tasks started each way given "
                             "(default: both; none: not measured)")
    parser.add_argument("--search", type=int, default=0, metavar="N",
                        help="also an N-trial training.search: a tuned cycle per size, and the demos' train stage "
                             "tuned vs untuned (pipeline.bench_search); default 0: not measured")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    results = []
    for rows in args.rows:
        print(f"benchmarking {rows:,} rows x {NUMERIC + CATEGORICAL} features ...", file=sys.stderr, flush=True)
        results += run(rows, args.final_model, args.threads, args.load_only, tuple(args.readers), args.trees,
                       args.search)
    startup = task_startup(args.startup_repeats) if args.startup_repeats and not args.load_only else []
    # One load row per size: the cycles of one size share its warehouse and its reads.
    print_load_table(list({r["rows"]: r for r in results}.values()))
    if not args.load_only:
        print()
        print_table(results)
    searches = []
    if args.search and not args.load_only:
        from pipeline import bench_search

        searches = [_in_child(bench_search.measure, task, args.search) for task in bench_search.DEMOS]
        print()
        bench_search.print_table(searches)
    if startup:
        print()
        print_startup_table(startup)
    starts = [start for start in args.dagrun if start != "none"]
    dagruns = []
    if starts and not args.load_only:
        print(flush=True)
        dagruns = dagrun_cost(starts)
    if args.json:
        Path(args.json).write_text(json.dumps({"cycles": results, "task_startup": startup, "dagruns": dagruns,
                                               "searches": searches}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
