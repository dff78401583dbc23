"""The model families: one table that the config's choices, the trigger form, training and the registry read.

Adding a family is one entry here. The table lives beside ``pipeline.train`` rather than in it
because the config — which every DAG file loads when Airflow parses it — must not import
scikit-learn or XGBoost: each entry imports its estimator only when it builds one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config import Config

CLASSIFICATION, REGRESSION = "classification", "regression"


@dataclass(frozen=True)
class Family:
    name: str
    tasks: tuple[str, ...]
    build: Callable[[Config, str, int], Any]  # (config, device, threads) -> an unfitted estimator
    # Trees split on ordinal category codes and take raw numbers; linear models need one-hot and scaling.
    ordinal_encoding: bool
    cuda: bool = False
    # Early stopping on an inner validation split passed to fit() (XGBoost's eval_set); others stop on their own.
    eval_set_early_stopping: bool = False
    # Packages a served model needs besides scikit-learn, pinned at the installed version when it is logged.
    packages: tuple[str, ...] = ()
    best_iteration: Callable[[Any], int | None] = lambda estimator: None


def _classify(config: Config) -> bool:
    return config.task == CLASSIFICATION


def _xgboost(config: Config, device: str, threads: int):
    import xgboost

    training = config.training
    cls = xgboost.XGBClassifier if _classify(config) else xgboost.XGBRegressor
    return cls(tree_method="hist", device=device, n_jobs=threads, random_state=training.seed,
               early_stopping_rounds=training.early_stopping_rounds, **training.params)


def _hist_gradient_boosting(config: Config, device: str, threads: int):
    # Its OpenMP threads follow the threadpoolctl limit that pipeline.train.fit_model sets around the fit.
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    training, features = config.training, config.source.features
    cls = HistGradientBoostingClassifier if _classify(config) else HistGradientBoostingRegressor
    early = training.early_stopping_rounds
    return cls(
        categorical_features=[False] * len(features.numeric) + [True] * len(features.categorical),
        random_state=training.seed, early_stopping=early is not None, n_iter_no_change=early or 10,
        validation_fraction=training.validation_fraction, **training.params,
    )


def _random_forest(config: Config, device: str, threads: int):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    training = config.training
    cls = RandomForestClassifier if _classify(config) else RandomForestRegressor
    return cls(n_jobs=threads, random_state=training.seed, **training.params)


def _logistic_regression(config: Config, device: str, threads: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000, random_state=config.training.seed, **config.training.params)


def _ridge(config: Config, device: str, threads: int):
    from sklearn.linear_model import Ridge

    return Ridge(random_state=config.training.seed, **config.training.params)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("xgboost", (CLASSIFICATION, REGRESSION), _xgboost, ordinal_encoding=True, cuda=True,
               eval_set_early_stopping=True, packages=("xgboost",),
               best_iteration=lambda estimator: int(estimator.best_iteration)),
        Family("hist_gradient_boosting", (CLASSIFICATION, REGRESSION), _hist_gradient_boosting, ordinal_encoding=True,
               best_iteration=lambda estimator: int(estimator.n_iter_)),
        Family("random_forest", (CLASSIFICATION, REGRESSION), _random_forest, ordinal_encoding=True),
        Family("logistic_regression", (CLASSIFICATION,), _logistic_regression, ordinal_encoding=False),
        Family("ridge", (REGRESSION,), _ridge, ordinal_encoding=False),
    )
}


def names_for(task: str) -> list[str]:
    """The families that fit a task, in the table's order (the trigger form's choices)."""
    return [name for name, family in FAMILIES.items() if task in family.tasks]
