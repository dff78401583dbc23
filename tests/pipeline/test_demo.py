"""The demo warehouse: a deterministic generator with scheduled drift, written to a real SQLite file."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import xgboost as xgb
from sklearn.metrics import mean_squared_error, roc_auc_score

import pipeline
from pipeline import demo
from pipeline.config import Config, load_config
from pipeline.data import WindowSpec, content_sha256, read_window
from pipeline.drift import judge_feature
from pipeline.errors import DataSourceError

CONFIGS = Path(pipeline.__file__).parent / "configs"
SMALL = {"days": 14, "rows_per_day": (40, 80)}
WINDOW_DAYS = 28


def demo_config(name: str, url: str) -> Config:
    return load_config(CONFIGS / name, environ={"PIPELINE_SOURCE_URL": url})


DEMO = demo_config("demo.yaml", "sqlite://")
FEATURES = DEMO.source.features


@pytest.fixture(scope="module")
def full_demo() -> pd.DataFrame:
    return demo.generate()


def window(frame: pd.DataFrame, start: date, days: int = WINDOW_DAYS) -> pd.DataFrame:
    begin = pd.Timestamp(start)
    ts = frame[demo.TIMESTAMP_COLUMN]
    return frame[(ts >= begin) & (ts < begin + pd.Timedelta(days=days))]


def drifted_features(reference: pd.DataFrame, current: pd.DataFrame) -> set[str]:
    """Features the pipeline's drift verdict flags with the demo config's settings."""
    drift = DEMO.drift
    alpha = drift.alpha / len(FEATURES.all)
    flagged = set()
    for kind, names, floor in (("numeric", FEATURES.numeric, drift.numeric_floor),
                               ("categorical", FEATURES.categorical, drift.categorical_floor)):
        for name in names:
            if judge_feature(name, kind, reference[name], current[name], floor, alpha, seed=0).drifted:
                flagged.add(name)
    return flagged


def test_same_seed_gives_identical_content_and_another_seed_does_not():
    first = content_sha256(demo.generate(seed=3, **SMALL))
    assert content_sha256(demo.generate(seed=3, **SMALL)) == first
    assert content_sha256(demo.generate(seed=4, **SMALL)) != first


def test_rows_per_day_stay_within_bounds_and_follow_the_week():
    frame = demo.generate(days=28, rows_per_day=(100, 300))
    per_day = frame.groupby(frame[demo.TIMESTAMP_COLUMN].dt.normalize()).size()
    assert len(per_day) == 28
    assert per_day.between(100, 300).all()
    weekend = per_day.index.dayofweek >= 5
    assert per_day[weekend].mean() < per_day[~weekend].mean()


def test_rows_per_day_must_be_an_ordered_positive_range():
    with pytest.raises(ValueError, match="rows_per_day"):
        demo.generate(rows_per_day=(300, 100))


def test_full_demo_spans_the_documented_days_with_unique_customers(full_demo):
    days = full_demo[demo.TIMESTAMP_COLUMN].dt.date
    assert (days.min(), days.max()) == (demo.DEMO_START, demo.DEMO_END) == (date(2026, 1, 1), date(2026, 6, 29))
    assert days.nunique() == demo.DEMO_DAYS
    assert full_demo["customer_id"].is_unique
    assert full_demo[demo.TIMESTAMP_COLUMN].is_monotonic_increasing


def test_columns_dtypes_and_value_ranges(full_demo):
    expected = {
        "customer_id": "int64", "event_ts": "datetime64[ns]", "tenure_months": "int64", "monthly_charges": "float64",
        "support_calls": "int64", "data_usage_gb": "float64", "age": "float64", "contract": "object",
        "payment_method": "object", "region": "object", "plan": "object", "churned": "int64",
        "next_month_spend": "float64",
    }
    assert {name: str(dtype) for name, dtype in full_demo.dtypes.items()} == expected
    assert set(FEATURES.all) <= set(expected)
    assert full_demo["tenure_months"].between(0, 72).all()
    assert full_demo["age"].dropna().between(18, 90).all()
    assert (full_demo["support_calls"] >= 0).all()
    assert (full_demo["data_usage_gb"] > 0).all()
    assert set(full_demo["contract"]) == set(demo.CONTRACTS)
    assert set(full_demo["plan"]) == set(demo.PLANS)
    assert set(full_demo["region"].dropna()) == set(demo.REGIONS)
    assert set(full_demo["churned"]) == {0, 1}


def test_null_shares_are_as_designed(full_demo):
    null_shares = full_demo.isna().mean()
    assert null_shares[null_shares > 0].to_dict() == pytest.approx(demo.NULL_SHARES, abs=0.005)


@pytest.mark.parametrize(
    ("regime_start", "regime_end"),
    [
        pytest.param(demo.DEMO_START, demo.CONCEPT_DRIFT_DATE, id="before-concept-drift"),
        pytest.param(demo.CONCEPT_DRIFT_DATE, demo.DEMO_END + timedelta(days=1), id="after-concept-drift"),
    ],
)
def test_churn_base_rate_is_realistic(full_demo, regime_start, regime_end):
    rows = window(full_demo, regime_start, (regime_end - regime_start).days)
    assert 0.2 <= rows["churned"].mean() <= 0.3


def test_new_category_appears_on_its_date_with_a_fifth_of_rows(full_demo):
    column, category = demo.NEW_CATEGORY
    is_new = full_demo[column] == category
    from_date = full_demo[demo.TIMESTAMP_COLUMN] >= pd.Timestamp(demo.NEW_CATEGORY_DATE)
    assert not is_new[~from_date].any()
    assert is_new[from_date].mean() == pytest.approx(demo.CRYPTO_SHARE, abs=0.01)


@pytest.mark.parametrize(
    ("reference_start", "current_start", "expected"),
    [
        pytest.param(date(2026, 1, 1), date(2026, 1, 29), set(), id="within-baseline"),
        pytest.param(
            date(2026, 2, 1), demo.COVARIATE_SHIFT_DATE, set(demo.SHIFTED_FEATURES), id="across-covariate-shift"
        ),
        pytest.param(date(2026, 3, 4), demo.NEW_CATEGORY_DATE, {demo.NEW_CATEGORY[0]}, id="across-new-category"),
        pytest.param(date(2026, 4, 3), demo.CONCEPT_DRIFT_DATE, set(), id="across-concept-drift"),
        pytest.param(demo.CONCEPT_DRIFT_DATE, date(2026, 6, 1), set(), id="within-post-drift"),
    ],
)
def test_drift_flags_exactly_the_scheduled_features(full_demo, reference_start, current_start, expected):
    assert drifted_features(window(full_demo, reference_start), window(full_demo, current_start)) == expected


def test_concept_drift_changes_the_feature_label_relation(full_demo):
    drifted = full_demo[demo.TIMESTAMP_COLUMN] >= pd.Timestamp(demo.CONCEPT_DRIFT_DATE)
    before, after = full_demo[~drifted], full_demo[drifted]

    def churn_gap_of_many_calls(regime: pd.DataFrame) -> float:
        calls = regime["support_calls"]
        return regime.loc[calls >= 3, "churned"].mean() - regime.loc[calls <= 1, "churned"].mean()

    def tenure_spend_correlation(regime: pd.DataFrame) -> float:
        return np.corrcoef(regime["tenure_months"], regime["next_month_spend"])[0, 1]

    assert churn_gap_of_many_calls(before) > 0.05
    assert churn_gap_of_many_calls(after) < 0
    assert abs(tenure_spend_correlation(before)) < 0.05
    assert tenure_spend_correlation(after) < -0.2


DEMO_CATEGORIES = {
    "contract": pd.CategoricalDtype(demo.CONTRACTS),
    "payment_method": pd.CategoricalDtype([*demo.PAYMENT_METHODS, demo.NEW_CATEGORY[1]]),
    "region": pd.CategoricalDtype(demo.REGIONS),
    "plan": pd.CategoricalDtype(demo.PLANS),
}
MODEL_PARAMS = {"n_estimators": 100, "max_depth": 4, "enable_categorical": True, "n_jobs": 2}


def _fit_and_score(train: pd.DataFrame, test: pd.DataFrame, target: str) -> float:
    """AUC for churn, RMSE for spend, of a small XGBoost model like the demo configs' one."""

    def features(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[FEATURES.all].astype(DEMO_CATEGORIES)

    if target == demo.CHURN_TARGET:
        classifier = xgb.XGBClassifier(**MODEL_PARAMS).fit(features(train), train[target])
        return roc_auc_score(test[target], classifier.predict_proba(features(test))[:, 1])
    regressor = xgb.XGBRegressor(**MODEL_PARAMS).fit(features(train), train[target])
    return mean_squared_error(test[target], regressor.predict(features(test))) ** 0.5


def test_retraining_after_the_concept_drift_pays_off(full_demo):
    stale = window(full_demo, date(2026, 1, 30))
    fresh = window(full_demo, demo.CONCEPT_DRIFT_DATE)
    test = window(full_demo, date(2026, 6, 1))
    stale_auc, fresh_auc = (_fit_and_score(train, test, demo.CHURN_TARGET) for train in (stale, fresh))
    assert 0.75 <= fresh_auc <= 0.85
    assert fresh_auc - stale_auc >= 0.05
    stale_rmse, fresh_rmse = (_fit_and_score(train, test, demo.SPEND_TARGET) for train in (stale, fresh))
    assert stale_rmse > 1.5 * fresh_rmse


# --- writing to SQL -----------------------------------------------------------------------------------------------

SEEDED_DAYS = 4


@pytest.fixture(scope="module")
def seeded_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'nested' / 'warehouse.db'}"
    demo.seed_demo(url, days=SEEDED_DAYS)
    return url


def test_seed_demo_writes_both_tables_into_a_new_folder(tmp_path):
    path = tmp_path / "nested" / "warehouse.db"
    url = f"sqlite:///{path}"
    assert not demo.demo_is_seeded(url)
    assert not path.exists()

    counts = demo.seed_demo(url, days=2)

    rows = len(demo.generate(days=2))
    assert counts == {demo.CHURN_TABLE: rows, demo.SPEND_TABLE: rows}
    assert demo.demo_is_seeded(url)
    inspector = sa.inspect(sa.create_engine(url))
    features = ["customer_id", demo.TIMESTAMP_COLUMN, *FEATURES.all]
    for table, target, absent in (
        (demo.CHURN_TABLE, demo.CHURN_TARGET, demo.SPEND_TARGET),
        (demo.SPEND_TABLE, demo.SPEND_TARGET, demo.CHURN_TARGET),
    ):
        columns = [column["name"] for column in inspector.get_columns(table)]
        assert set(columns) == {*features, target} and absent not in columns
        assert [index["column_names"] for index in inspector.get_indexes(table)] == [[demo.TIMESTAMP_COLUMN]]


def test_timestamps_are_stored_as_text_that_compares_with_date_bounds(seeded_url):
    with sa.create_engine(seeded_url).connect() as conn:
        stored = conn.exec_driver_sql(f"SELECT event_ts FROM {demo.CHURN_TABLE} LIMIT 1").scalar_one()
        first_day = conn.exec_driver_sql(
            f"SELECT COUNT(*) FROM {demo.CHURN_TABLE} WHERE event_ts >= '2026-01-01' AND event_ts < '2026-01-02'"
        ).scalar_one()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}", stored)
    generated = demo.generate(days=SEEDED_DAYS)
    assert first_day == (generated[demo.TIMESTAMP_COLUMN] < pd.Timestamp("2026-01-02")).sum()


def test_seeding_again_replaces_the_tables(tmp_path):
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    demo.seed_demo(url, seed=1, days=2)
    counts = demo.seed_demo(url, seed=2, days=1)
    with sa.create_engine(url).connect() as conn:
        stored = conn.exec_driver_sql(f"SELECT COUNT(*) FROM {demo.SPEND_TABLE}").scalar_one()
    assert stored == counts[demo.SPEND_TABLE] == len(demo.generate(seed=2, days=1))


def test_an_unusable_database_is_reported_as_a_source_error(tmp_path):
    with pytest.raises(DataSourceError, match="cannot write tables to"):
        demo.seed_demo(f"sqlite:///{tmp_path}", days=1)  # a folder, not a database file


CHURN_TABLE_WITH_A_ROW = ["CREATE TABLE demo_churn (x INTEGER)", "INSERT INTO demo_churn VALUES (1)"]


@pytest.mark.parametrize(
    "statements",
    [
        pytest.param(CHURN_TABLE_WITH_A_ROW, id="spend-table-missing"),
        pytest.param([*CHURN_TABLE_WITH_A_ROW, "CREATE TABLE demo_spend (x INTEGER)"], id="spend-table-empty"),
    ],
)
def test_demo_is_not_seeded_unless_both_tables_hold_rows(tmp_path, statements):
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    with sa.create_engine(url).begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    assert not demo.demo_is_seeded(url)


@pytest.mark.parametrize(
    ("config_name", "target", "other_target"),
    [
        pytest.param("demo.yaml", demo.CHURN_TARGET, demo.SPEND_TARGET, id="churn"),
        pytest.param("demo_regression.yaml", demo.SPEND_TARGET, demo.CHURN_TARGET, id="spend"),
    ],
)
def test_read_window_returns_exactly_the_window_as_generated(seeded_url, config_name, target, other_target):
    source = demo_config(config_name, seeded_url).source
    spec = WindowSpec("current", date(2026, 1, 2), date(2026, 1, 3))

    frame = read_window(source, spec)

    assert source.target_column == target
    assert set(frame[source.timestamp_column].dt.date) == {date(2026, 1, 2), date(2026, 1, 3)}
    generated = window(demo.generate(days=SEEDED_DAYS), spec.start, (spec.end - spec.start).days + 1).drop(columns=other_target)
    assert content_sha256(frame) == content_sha256(generated)
