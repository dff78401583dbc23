"""The model families: one table that the config's choices, the trigger form, training and the registry read.

Adding a family is one entry here. The table lives beside ``pipeline.train`` rather than in it
because the config — which every DAG file loads when Airflow parses it — must not import
scikit-learn or XGBoost: each entry imports its estimator only when it builds one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
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
    # The estimator's parameters a search may tune (``training.search.spaces``), and the space searched when the
    # config names none: each parameter a range (``low``/``high``, ``log``) or ``choices``, as ``ParamRange`` reads it.
    tunable: tuple[str, ...] = ()
    default_space: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Its fits write checkpoints and resume from them (``pipeline.checkpoint``).
    checkpoints: bool = False


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


# Early stopping picks the number of trees, so the spaces leave n_estimators / max_iter to it; row and column sampling
# are left out of XGBoost's because a checkpointed fit resumes to the same model only without them (pipeline.checkpoint).
_XGBOOST_SPACE = {
    "learning_rate": {"type": "float", "low": 0.02, "high": 0.3, "log": True},
    "max_depth": {"type": "int", "low": 3, "high": 10},
    "min_child_weight": {"type": "float", "low": 1.0, "high": 50.0, "log": True},
    "gamma": {"type": "float", "low": 1e-3, "high": 5.0, "log": True},
    "reg_lambda": {"type": "float", "low": 1e-3, "high": 10.0, "log": True},
}
_HIST_GRADIENT_BOOSTING_SPACE = {
    "learning_rate": {"type": "float", "low": 0.02, "high": 0.3, "log": True},
    "max_leaf_nodes": {"type": "int", "low": 8, "high": 128, "log": True},
    "min_samples_leaf": {"type": "int", "low": 5, "high": 200, "log": True},
    "l2_regularization": {"type": "float", "low": 1e-4, "high": 10.0, "log": True},
}
_RANDOM_FOREST_SPACE = {
    "max_depth": {"type": "int", "low": 4, "high": 24},
    "min_samples_leaf": {"type": "int", "low": 1, "high": 50, "log": True},
    "max_features": {"type": "float", "low": 0.2, "high": 1.0},
}
_LINEAR_SPACE = {"C": {"type": "float", "low": 1e-3, "high": 100.0, "log": True}}

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("xgboost", (CLASSIFICATION, REGRESSION), _xgboost, ordinal_encoding=True, cuda=True,
               eval_set_early_stopping=True, packages=("xgboost",),
               best_iteration=lambda estimator: int(estimator.best_iteration),
               tunable=("n_estimators", "learning_rate", "max_depth", "max_leaves", "max_bin", "grow_policy",
                        "min_child_weight", "gamma", "max_delta_step", "subsample", "colsample_bytree",
                        "colsample_bylevel", "colsample_bynode", "reg_alpha", "reg_lambda", "scale_pos_weight",
                        "max_cat_to_onehot", "max_cat_threshold"),
               default_space=_XGBOOST_SPACE, checkpoints=True),
        Family("hist_gradient_boosting", (CLASSIFICATION, REGRESSION), _hist_gradient_boosting, ordinal_encoding=True,
               best_iteration=lambda estimator: int(estimator.n_iter_),
               tunable=("learning_rate", "max_iter", "max_leaf_nodes", "max_depth", "min_samples_leaf",
                        "l2_regularization", "max_features", "max_bins"),
               default_space=_HIST_GRADIENT_BOOSTING_SPACE),
        Family("random_forest", (CLASSIFICATION, REGRESSION), _random_forest, ordinal_encoding=True,
               tunable=("n_estimators", "criterion", "max_depth", "min_samples_split", "min_samples_leaf",
                        "min_weight_fraction_leaf", "max_features", "max_leaf_nodes", "min_impurity_decrease",
                        "bootstrap", "max_samples", "ccp_alpha"),
               default_space=_RANDOM_FOREST_SPACE),
        Family("logistic_regression", (CLASSIFICATION,), _logistic_regression, ordinal_encoding=False,
               tunable=("C", "l1_ratio", "class_weight", "tol"), default_space=_LINEAR_SPACE),
        Family("ridge", (REGRESSION,), _ridge, ordinal_encoding=False,
               tunable=("alpha", "fit_intercept", "tol"),
               default_space={"alpha": {"type": "float", "low": 1e-3, "high": 100.0, "log": True}}),
    )
}


def names_for(task: str) -> list[str]:
    """The families that fit a task, in the table's order (the trigger form's choices)."""
    return [name for name, family in FAMILIES.items() if task in family.tasks]
