"""Calibration of the drift defaults: ``python -m pipeline.bench_drift`` (``make bench-drift``).

Prints, for the shipped ``drift:`` defaults (pipeline/config.py):

1. dataset-level false alarms on same-distribution windows of nine features of mixed shapes
   (normal, heavy-tailed, hour of day, a 10 % flag, uniform, counts, and three categoricals of
   eight levels), at 200 to 1M rows per window;
2. per-feature detection of the shifts the defaults promise to find (a 0.2 sd mean shift, +10
   points of one category, a new category of 1 %) and of one below the floor they must ignore
   (0.05 sd), at 1k to 1M rows;
3. the verdict's cost (``pipeline.drift.judge_drift``, every row) at 1M rows per window of the
   main benchmark's 30 features.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Drift
from pipeline.drift import judge_feature

DEFAULTS = Drift()
SHARES = {"a": 0.4, "b": 0.2, "c": 0.1, "d": 0.1, "e": 0.1, "f": 0.05, "g": 0.03, "h": 0.02}
NUMERIC_SHAPES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "normal": lambda rng, n: rng.normal(size=n),
    "heavy_tailed": lambda rng, n: rng.exponential(size=n) ** 3,
    "hour": lambda rng, n: rng.integers(0, 24, n).astype("float64"),
    "flag": lambda rng, n: (rng.random(n) < 0.1).astype("float64"),
    "uniform": lambda rng, n: rng.random(n),
    "counts": lambda rng, n: rng.poisson(2, n).astype("float64"),
}
CATEGORICALS = 3
FEATURES = len(NUMERIC_SHAPES) + CATEGORICALS


def categories(rng: np.random.Generator, rows: int, shares: dict[str, float]) -> pd.Series:
    return pd.Series(rng.choice(list(shares), rows, p=list(shares.values())))


def dataset_alarm(rng: np.random.Generator, rows: int, seed: int) -> bool:
    """Whether two same-distribution windows of ``rows`` rows raise a dataset alarm (rule ``any``)."""
    alpha = DEFAULTS.alpha / FEATURES
    for shape in NUMERIC_SHAPES.values():
        if judge_feature("x", "numeric", pd.Series(shape(rng, rows)), pd.Series(shape(rng, rows)),
                         DEFAULTS.numeric_floor, alpha, seed).drifted:
            return True
    return any(
        judge_feature("c", "categorical", categories(rng, rows, SHARES), categories(rng, rows, SHARES),
                      DEFAULTS.categorical_floor, alpha, seed).drifted
        for _ in range(CATEGORICALS)
    )


SHIFTS: dict[str, tuple[str, Callable[[np.random.Generator, int], tuple[pd.Series, pd.Series]]]] = {
    "mean +0.2 sd": ("numeric", lambda rng, n: (pd.Series(rng.normal(size=n)), pd.Series(rng.normal(0.2, 1, n)))),
    "mean +0.05 sd (below the floor)": (
        "numeric", lambda rng, n: (pd.Series(rng.normal(size=n)), pd.Series(rng.normal(0.05, 1, n)))),
    "category +10 points": ("categorical", lambda rng, n: (
        categories(rng, n, {"a": 0.5, "b": 0.4, "c": 0.1}), categories(rng, n, {"a": 0.6, "b": 0.3, "c": 0.1}))),
    "new category at 1 %": ("categorical", lambda rng, n: (
        categories(rng, n, {"a": 0.5, "b": 0.4, "c": 0.1}),
        categories(rng, n, {"a": 0.495, "b": 0.396, "c": 0.099, "new": 0.01}))),
}


def detection_rate(name: str, rows: int, trials: int, seed: int) -> float:
    kind, draw = SHIFTS[name]
    floor = DEFAULTS.numeric_floor if kind == "numeric" else DEFAULTS.categorical_floor
    rng = np.random.default_rng(seed)
    found = sum(judge_feature("x", kind, *draw(rng, rows), floor, DEFAULTS.alpha / FEATURES, seed).drifted
                for _ in range(trials))
    return found / trials


def verdict_seconds(rows: int, repeats: int = 2) -> float:
    """The median time of ``judge_drift`` on two windows of the main benchmark's 30 features."""
    from pipeline.bench import bench_config, synthetic_frame
    from pipeline.config import Config
    from pipeline.drift import judge_drift

    reference, current = synthetic_frame(rows, seed=1), synthetic_frame(rows, seed=2)
    current["num_01"] += 0.3
    config = Config.model_validate(bench_config(Path("bench-drift"), Path("bench-drift")))  # nothing is read or written there
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = judge_drift(config, reference, current)
        times.append(time.perf_counter() - started)
    assert result.drifted_features == ["num_01"], result.summary()
    return float(np.median(times))


def trials_for(rows: int, budget_rows: int) -> int:
    return int(min(1000, max(10, budget_rows // rows)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[200, 1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--budget", type=int, default=20_000_000,
                        help="rows drawn per size and table: trials = budget / rows, between 10 and 1,000")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    print(f"drift defaults: alpha {DEFAULTS.alpha:g} over {FEATURES} features, numeric floor "
          f"{DEFAULTS.numeric_floor:g} sd (Wasserstein), categorical floor {DEFAULTS.categorical_floor:g} "
          f"(Jensen-Shannon), dataset rule '{DEFAULTS.dataset_rule}'\n")
    print(f"{'rows per window':>16} {'trials':>7} {'dataset false alarms':>21}")
    for rows in args.rows:
        trials = trials_for(rows, args.budget // 4)
        rng = np.random.default_rng(args.seed)
        alarms = sum(dataset_alarm(rng, rows, args.seed + trial) for trial in range(trials))
        print(f"{rows:>16,} {trials:>7} {alarms / trials:>20.1%}", flush=True)

    sizes = [rows for rows in args.rows if rows >= 1_000]
    print(f"\n{'per-feature detection':<32}" + "".join(f"{rows:>12,}" for rows in sizes))
    for name in SHIFTS:
        rates = [detection_rate(name, rows, trials_for(rows, args.budget // 8), args.seed) for rows in sizes]
        print(f"{name:<32}" + "".join(f"{rate:>12.0%}" for rate in rates), flush=True)

    print(f"\nverdict on 1,000,000 rows per window x 30 features: {verdict_seconds(1_000_000):.2f} s (median of 2)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
