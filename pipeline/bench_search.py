"""The search's cost on the demos (``make bench BENCH_ARGS="--search 20"``): one train stage with the fixed
``training.params`` and one with an N-trial ``training.search``, on the same window against the same champion.

For each demo config (classification and regression): seed the demo warehouse, promote a champion
as of CHAMPION_AS_OF, then run the cycle as of AS_OF (a week later: three of its four weeks lie in the
champion's window, where the trials are scored; the gate compares on the newest week) up to the gate,
untuned, tuned, and untuned again (the untuned figure is the mean of the two). All in one warm process.
"""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

import yaml

CONFIGS = Path(__file__).parent / "configs"
DEMOS = {"classification": CONFIGS / "demo.yaml", "regression": CONFIGS / "demo_regression.yaml"}
CHAMPION_AS_OF, AS_OF = date(2026, 2, 21), date(2026, 2, 28)


def _config(demo: Path, root: Path, trials: int = 0):
    from pipeline.config import load_config

    raw = yaml.safe_load(demo.read_text())
    raw["source"]["url"] = f"sqlite:///{root / 'warehouse.db'}"
    raw["validation"]["suite"] = str((demo.parent / raw["validation"]["suite"]).resolve())
    raw["registry"] = {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_root": str(root / "artifacts")}
    raw["promotion"] = {"approval": "auto", "database_url": f"sqlite:///{root / 'pipeline.db'}"}
    raw["storage"] = {"root": str(root / "runs")}
    raw["training"]["search"] = {"trials": trials}
    path = root / f"{demo.stem}-{trials}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path, environ={})


def measure(task: str, trials: int) -> dict:
    """One demo's untuned and tuned train stages, and what the search and the gate made of them."""
    from pipeline.cycle import run_cycle
    from pipeline.demo import seed_demo
    from pipeline.record import SEARCH, STATUS

    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        root = Path(tmp)
        config = _config(DEMOS[task], root)
        seed_demo(config.source.url)
        champion = run_cycle(config, CHAMPION_AS_OF)
        if champion.version is None:
            raise RuntimeError(f"the {task} demo's champion cycle ended {champion.status.value}")

        def train_stage(cycle_id: str, searched: int):
            outcome = run_cycle(_config(DEMOS[task], root, searched), AS_OF, cycle_id=cycle_id, until="gate")
            return outcome, outcome.cycle.require(STATUS).stages["train"].seconds

        untuned, first_s = train_stage("untuned", 0)
        tuned, tuned_s = train_stage("tuned", trials)
        _, second_s = train_stage("untuned-again", 0)
        summary = tuned.cycle.require(SEARCH)
        fixed = next(t for t in summary.trials if t.role == "training.params")
        best = summary.trial(summary.best_number)
        trees = [n for t in summary.trials for n in t.trees]
        untuned_s = (first_s + second_s) / 2
        return {
            "task": task, "metric": summary.metric, "trials": len(summary.trials), "pruned": summary.count("pruned"),
            "folds_fitted": sum(len(t.fold_values) for t in summary.trials), "k": tuned.evaluation.k,
            "max_trees": int(config.training.params.get("n_estimators", 100)),
            "mean_trees": sum(trees) / len(trees) if trees else None,
            "untuned_train_s": untuned_s, "untuned_train_s_each": [first_s, second_s], "tuned_train_s": tuned_s,
            "search_s": summary.seconds, "ratio": tuned_s / untuned_s,
            "selection_fixed": fixed.value, "selection_best": best.value if best else None,
            "best_params": summary.best_params, "selection_rows": summary.selection_rows,
            "kfold_untuned": untuned.evaluation.primary_mean, "kfold_tuned": tuned.evaluation.primary_mean,
            "compare_rows": tuned.verdict.compare_rows,
            "gate_untuned": _gate(untuned.verdict), "gate_tuned": _gate(tuned.verdict),
        }


def _gate(verdict) -> str:
    return (f"{'passed' if verdict.passed else 'rejected'}: {verdict.candidate_compare:.4f} vs champion "
            f"{verdict.champion_compare:.4f}")


def print_table(results: list[dict]) -> None:
    def line(label: str, cells: list[str]) -> None:
        print(f"{label:<34}" + "".join(f"{cell:>34}" for cell in cells).rstrip())

    print(f"Search on the demos: {results[0]['trials']} trials, one warm process (the untuned train stage: mean of 2)")
    line("", [f"{r['task']} ({r['metric']})" for r in results])
    print("-" * (34 + 34 * len(results)))
    line("train stage, training.params", [f"{r['untuned_train_s']:.1f}s" for r in results])
    line("train stage, tuned", [f"{r['tuned_train_s']:.1f}s" for r in results])
    line("tuned / untuned", [f"{r['ratio']:.2f}x" for r in results])
    line("search alone", [f"{r['search_s']:.1f}s" for r in results])
    line("trials (pruned)", [f"{r['trials']} ({r['pruned']} pruned)" for r in results])
    line("folds fitted / trials x k", [f"{r['folds_fitted']} / {r['trials'] * r['k']}" for r in results])
    line("trees per fold fit (early stop)", [f"{r['mean_trees']:.0f} of {r['max_trees']}" if r["mean_trees"] else "-"
                                            for r in results])
    line("selection rows (champion's days)", [f"{r['selection_rows']:,}" for r in results])
    line("  training.params on them", [f"{r['selection_fixed']:.4f}" for r in results])
    line("  best trial on them", [f"{r['selection_best']:.4f}" for r in results])
    line("k-fold, whole window: untuned", [f"{r['kfold_untuned']:.4f}" for r in results])
    line("k-fold, whole window: tuned", [f"{r['kfold_tuned']:.4f}" for r in results])
    line("gate's unseen rows (newest week)", [f"{r['compare_rows']:,}" for r in results])
    line("gate, untuned", [r["gate_untuned"] for r in results])
    line("gate, tuned", [r["gate_tuned"] for r in results])
