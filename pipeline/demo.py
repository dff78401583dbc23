"""A deterministic demo warehouse: six months of customer events with scheduled drift.

``generate`` builds one frame of customer snapshots, one row per customer event,
between ``DEMO_START`` (2026-01-01) and ``DEMO_END`` (2026-06-29, 180 days), with two
targets: ``churned`` (binary) and ``next_month_spend`` (regression). ``seed_demo``
writes them as two tables, ``demo_churn`` (configs/demo.yaml) and ``demo_spend``
(configs/demo_regression.yaml), which share every feature column.

The data is stationary within each regime and changes on three fixed dates, so a
cycle's drift report and gate verdict are predictable from its as-of date:

========== ====================== ==========================================================
from       what changes           what a cycle should see
========== ====================== ==========================================================
2026-01-01 baseline               nothing drifts; retraining brings no gain
2026-03-01 covariate shift        ``monthly_charges`` (price rise) and ``data_usage_gb``
                                  (heavier usage) move; the feature→label relation is
                                  unchanged, so the drift report flags both features but a
                                  retrained model is no better than the champion
2026-04-01 new category           ``payment_method`` gains ``"crypto"`` (about 20 % of
                                  rows); its Jensen-Shannon distance jumps
2026-05-01 concept drift          feature distributions stay as since 2026-04-01, but the
                                  feature→label relation of both targets changes (support
                                  calls stop predicting churn and the contract matters less;
                                  usage, age and the premium plan take over): the champion's
                                  AUC drops and a model retrained on post-drift data wins
                                  the gate
========== ====================== ==========================================================

Rows per day follow a weekday pattern with noise; ``customer_id`` is unique across
the whole dataset. Values are observed with gaps (``monthly_charges`` ~5 %, ``age``
~3 %, ``region`` ~2 % null), but the targets depend on the true, unobserved values.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from pipeline.config import redact_url
from pipeline.data import create_engine
from pipeline.errors import DataSourceError

if TYPE_CHECKING:
    from pandas.io.sql import SQLTable

DEMO_START: date = date(2026, 1, 1)
DEMO_DAYS: int = 180
DEMO_END: date = DEMO_START + timedelta(days=DEMO_DAYS - 1)
COVARIATE_SHIFT_DATE: date = date(2026, 3, 1)
NEW_CATEGORY_DATE: date = date(2026, 4, 1)
CONCEPT_DRIFT_DATE: date = date(2026, 5, 1)
SHIFTED_FEATURES: tuple[str, ...] = ("monthly_charges", "data_usage_gb")
NEW_CATEGORY: tuple[str, str] = ("payment_method", "crypto")
CHURN_TABLE = "demo_churn"
SPEND_TABLE = "demo_spend"
CHURN_TARGET = "churned"
SPEND_TARGET = "next_month_spend"
TIMESTAMP_COLUMN = "event_ts"

CONTRACTS = ("month-to-month", "one-year", "two-year")
PAYMENT_METHODS = ("card", "bank_transfer", "paypal")
PAYMENT_SHARES = (0.45, 0.30, 0.25)
CRYPTO_SHARE = 0.2
REGIONS = ("north", "south", "east", "west")
REGION_SHARES = (0.30, 0.25, 0.25, 0.20)
PLANS = ("basic", "standard", "premium")
PLAN_SHARES = (0.45, 0.35, 0.20)
PLAN_BASE_CHARGE = np.array([30.0, 60.0, 95.0])
PLAN_BASE_LOG_USAGE = np.array([1.8, 2.4, 3.0])
NULL_SHARES = {"monthly_charges": 0.05, "age": 0.03, "region": 0.02}
# The covariate shift: a price rise (charges * factor + offset) and heavier usage (usage * factor).
PRICE_RISE = (1.12, 6.0)
USAGE_GROWTH = 1.5
# Share of the (lo, hi) rows-per-day range used on each weekday, Monday first.
WEEKDAY_LEVEL = np.array([0.62, 0.66, 0.66, 0.62, 0.55, 0.30, 0.25])
DAY_LEVEL_NOISE = 0.08
WRITE_CHUNK_ROWS = 50_000


def generate(
    seed: int = 7, start: date = DEMO_START, days: int = DEMO_DAYS, rows_per_day: tuple[int, int] = (1000, 3000)
) -> pd.DataFrame:
    """All demo rows, ordered by ``event_ts``, with both targets; the same seed gives the same frame."""
    low, high = rows_per_day
    if not 0 < low <= high:
        raise ValueError(f"rows_per_day must be (low, high) with 0 < low <= high, got {rows_per_day}")
    rng = np.random.default_rng(seed)
    day_dates = pd.date_range(start, periods=days, freq="D")
    rows_by_day = _rows_per_day(rng, day_dates, low, high)
    day = np.repeat(day_dates.to_numpy(), rows_by_day)
    n = len(day)
    event_ts = pd.DatetimeIndex(np.sort(day + rng.integers(0, 86_400, n) * np.timedelta64(1, "s")))
    shifted = event_ts >= pd.Timestamp(COVARIATE_SHIFT_DATE)
    with_crypto = event_ts >= pd.Timestamp(NEW_CATEGORY_DATE)
    drifted = event_ts >= pd.Timestamp(CONCEPT_DRIFT_DATE)

    tenure = np.clip(np.round(rng.gamma(1.3, 18.0, n)), 0, 72).astype(np.int64)
    plan = rng.choice(len(PLANS), n, p=PLAN_SHARES)
    # Long-standing customers are more often on long contracts.
    two_year_share = 0.08 + 0.35 * tenure / 72
    contract = _choose(rng, np.column_stack([0.72 - two_year_share, np.full(n, 0.28), two_year_share]))
    payment = _choose(rng, _payment_shares(with_crypto))
    region = rng.choice(len(REGIONS), n, p=REGION_SHARES)
    age = np.clip(np.round(rng.normal(44, 14, n)), 18, 90)
    support_calls = rng.poisson(np.where(plan == 0, 1.8, 1.3))
    charges = PLAN_BASE_CHARGE[plan] + rng.normal(0, 9, n)
    charges = np.where(shifted, charges * PRICE_RISE[0] + PRICE_RISE[1], charges)
    usage = np.exp(PLAN_BASE_LOG_USAGE[plan] + rng.normal(0, 0.7, n))
    usage = np.where(shifted, usage * USAGE_GROWTH, usage)
    charges = np.maximum(np.round(charges, 2), 5.0)
    usage = np.round(usage, 2)

    frame = pd.DataFrame(
        {
            "customer_id": np.arange(1, n + 1, dtype=np.int64),
            TIMESTAMP_COLUMN: event_ts,
            "tenure_months": tenure,
            "monthly_charges": charges,
            "support_calls": support_calls,
            "data_usage_gb": usage,
            "age": age,
            "contract": np.array(CONTRACTS, dtype=object)[contract],
            "payment_method": np.array((*PAYMENT_METHODS, NEW_CATEGORY[1]), dtype=object)[payment],
            "region": np.array(REGIONS, dtype=object)[region],
            "plan": np.array(PLANS, dtype=object)[plan],
        }
    )
    churn_logit = np.where(drifted, _churn_logit_after_drift(frame), _churn_logit(frame))
    frame[CHURN_TARGET] = (rng.random(n) < 1 / (1 + np.exp(-churn_logit))).astype(np.int64)
    spend = np.where(drifted, _spend_after_drift(frame), _spend(frame)) + rng.normal(0, 8, n)
    frame[SPEND_TARGET] = np.round(np.maximum(spend, 0.0), 2)
    # Gaps are punched last: the targets above depend on the true values.
    for column, share in NULL_SHARES.items():
        frame[column] = frame[column].where(rng.random(n) >= share, None)
    return frame


def _rows_per_day(rng: np.random.Generator, day_dates: pd.DatetimeIndex, low: int, high: int) -> np.ndarray:
    level = np.clip(WEEKDAY_LEVEL[day_dates.dayofweek] + rng.normal(0, DAY_LEVEL_NOISE, len(day_dates)), 0, 1)
    return np.round(low + level * (high - low)).astype(np.int64)


def _choose(rng: np.random.Generator, shares: np.ndarray) -> np.ndarray:
    """Draw one category index per row from that row's shares (rows of ``shares`` sum to 1)."""
    return (rng.random(len(shares))[:, None] > np.cumsum(shares, axis=1)[:, :-1]).sum(axis=1)


def _payment_shares(with_crypto: np.ndarray) -> np.ndarray:
    before = np.array([*PAYMENT_SHARES, 0.0])
    after = np.array([*(np.array(PAYMENT_SHARES) * (1 - CRYPTO_SHARE)), CRYPTO_SHARE])
    return np.where(with_crypto[:, None], after, before)


def _churn_logit(frame: pd.DataFrame) -> np.ndarray:
    """Before the concept drift: short contracts, support calls and high charges drive churn."""
    return (
        -1.4
        + 1.4 * (frame["contract"] == "month-to-month")
        - 0.9 * (frame["contract"] == "two-year")
        + 0.5 * (frame["support_calls"] - 1.5)
        + 0.025 * (frame["monthly_charges"] - 60)
        - 0.035 * frame["tenure_months"]
        - 0.3 * (frame["payment_method"] == "bank_transfer")
    ).to_numpy(dtype=float)


def _churn_logit_after_drift(frame: pd.DataFrame) -> np.ndarray:
    """After the concept drift: a competitor wins over light users and the young; support calls stop mattering."""
    return (
        -2.0
        + 0.8 * (frame["contract"] == "month-to-month")
        - 1.3 * (np.log(frame["data_usage_gb"]) - 3.0)
        - 0.06 * (frame["age"] - 44)
        - 0.2 * (frame["support_calls"] - 1.5)
        - 0.025 * frame["tenure_months"]
        + 0.9 * (frame["plan"] == "premium")
        + 0.5 * (frame["payment_method"] == "crypto")
    ).to_numpy(dtype=float)


def _spend(frame: pd.DataFrame) -> np.ndarray:
    """Before the concept drift: the plan's charges plus overage on heavy usage."""
    return (
        frame["monthly_charges"] + 0.6 * frame["data_usage_gb"] + 2.0 * frame["support_calls"]
    ).to_numpy(dtype=float)


def _spend_after_drift(frame: pd.DataFrame) -> np.ndarray:
    """After the concept drift: usage is flat-rate, loyal customers get discounts and add-ons are sold by age."""
    return (
        0.8 * frame["monthly_charges"] - 0.4 * frame["tenure_months"] + 0.6 * (frame["age"] - 44) + 25.0
    ).to_numpy(dtype=float)


def seed_demo(
    url: str, seed: int = 7, days: int = DEMO_DAYS, if_exists: Literal["fail", "replace", "append"] = "replace"
) -> dict[str, int]:
    """Write the churn and spend tables to ``url`` (replacing them by default); returns rows written per table."""
    frame = generate(seed=seed, days=days)
    tables = {CHURN_TABLE: frame.drop(columns=SPEND_TARGET), SPEND_TABLE: frame.drop(columns=CHURN_TARGET)}
    return write_tables(url, tables, TIMESTAMP_COLUMN, if_exists=if_exists)


def write_tables(
    url: str, tables: dict[str, pd.DataFrame], timestamp_column: str,
    if_exists: Literal["fail", "replace", "append"] = "replace",
) -> dict[str, int]:
    """Write frames as tables in one transaction, with an index on the timestamp column; returns rows per table."""
    engine = create_engine(url)
    sqlite_file = _sqlite_file(url)
    if sqlite_file is not None:
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    is_sqlite = engine.dialect.name == "sqlite"
    if is_sqlite:
        # SQLite stores timestamps as text: write them the way SQLAlchemy's DATETIME does
        # ('YYYY-MM-DD HH:MM:SS.ffffff', which compares correctly against 'YYYY-MM-DD' bounds),
        # so the rows can go straight to the driver.
        tables = {
            name: table.assign(**{timestamp_column: table[timestamp_column].dt.strftime("%Y-%m-%d %H:%M:%S.%f")})
            for name, table in tables.items()
        }
    try:
        with engine.begin() as conn:  # one transaction: a commit per chunk would be far slower
            for name, table in tables.items():
                table.to_sql(
                    name, conn, if_exists=if_exists, index=False, chunksize=WRITE_CHUNK_ROWS,
                    method=_driver_executemany if is_sqlite else None, dtype={timestamp_column: sa.DateTime()},
                )
                # Every cycle reads a date window: index the timestamp column.
                reflected = sa.Table(name, sa.MetaData(), autoload_with=conn)
                sa.Index(f"ix_{name}_{timestamp_column}", reflected.c[timestamp_column]).create(conn, checkfirst=True)
    except sa.exc.DBAPIError as exc:
        raise DataSourceError(f"cannot write tables to {redact_url(url)}: {exc.orig}") from None
    finally:
        engine.dispose()
    return {name: len(table) for name, table in tables.items()}


def _driver_executemany(pd_table: SQLTable, conn: sa.Connection, keys: list[str], data_iter: Iterable[tuple]) -> int:
    """pandas' insert method for SQLite: one driver ``executemany`` per chunk.

    pandas' default insert runs every row through SQLAlchemy's parameter processing,
    which made the full seed three times slower (20 s instead of 6 s); the values here
    are already plain numbers, strings and None.
    """
    insert = sa.insert(pd_table.table).compile(dialect=conn.dialect)
    return conn.exec_driver_sql(insert.string, list(data_iter)).rowcount


def demo_is_seeded(url: str) -> bool:
    """Whether both demo tables exist and hold rows (never creates a SQLite file)."""
    engine = create_engine(url)
    sqlite_file = _sqlite_file(url)
    if sqlite_file is not None and not sqlite_file.exists():
        return False  # connecting would create an empty database file
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            return all(
                inspector.has_table(name)
                and conn.execute(sa.select(sa.literal(1)).select_from(sa.table(name)).limit(1)).first() is not None
                for name in (CHURN_TABLE, SPEND_TABLE)
            )
    except sa.exc.DBAPIError as exc:
        raise DataSourceError(f"cannot inspect {redact_url(url)}: {exc.orig}") from None
    finally:
        engine.dispose()


def _sqlite_file(url: str) -> Path | None:
    """The database file of a file-backed SQLite URL, else None."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)
