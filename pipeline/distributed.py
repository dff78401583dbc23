"""The dask engine (``compute.engine: dask``): the heavy stages on a Dask cluster, one partition per day.

What runs on the cluster:

- load: each worker reads days of the window from the source through Arrow (ADBC: SQLite, PostgreSQL),
  one day per task, streams the day into a Parquet file of its own under the cycle's storage and hashes
  its rows; the days' row hashes (8 bytes a row, sorted and digested here) give the window's sha256, the
  local path's exactly (``data.parts_digest``). This process then copies the days one at a time into the
  snapshot (a row group per day), so no process holds the window. Where a day cannot stand for its share
  (no Arrow driver or ``source.reader: sqlalchemy``, types or a timestamp format that differ between days,
  a column null throughout the window), the window is read as the local path reads it.
- drift: per partition, each feature's finite count, extremes, moments and category counts; then the
  values at the edge sample's positions (``drift_stats.edge_sample``) and the histograms on the shared
  bins, summed. The counts are the local path's exactly, so are the scores and the verdict; Evidently
  renders the report from the very rows the local path samples.
- k-fold training with ``xgboost.dask`` on the folds the local path draws (``evaluate.fold_indices`` on the
  window's timestamps and target, the only columns brought to this process), the same inner split for
  early stopping, and each fit's encoder fitted on the categories of its own training rows;
- scoring each fold's held-out rows and the champion's unseen rows, partition by partition.

The later stages read the snapshot day by day (Parquet filters on the timestamp). Each fit's booster
becomes a plain ``xgboost`` estimator behind the project's encoder: the model that is registered is the
same scikit-learn pipeline as the local engine's and loads without Dask.

Not yet distributed: validation and the quality check read the whole current snapshot in one process;
the load stage's merge of row hashes holds 8 bytes per row of the window here.
Dask, distributed and xgboost.dask are imported only here, inside the functions that use them.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline import drift_stats
from pipeline.config import Config, Source
from pipeline.data import SnapshotPart, WindowSpec
from pipeline.errors import PipelineError
from pipeline.results import DriftResult, EvaluationResult, FoldResult, WindowSnapshot

if TYPE_CHECKING:
    from distributed import Client
    from sklearn.pipeline import Pipeline

    from pipeline.evaluate import Champion, ComparedRows, ReviewScores
    from pipeline.train import FitInfo

ROW = "__row"  # a row's position in its window's snapshot
FOLD = "__fold"  # the fold that holds the row out (1-based; 0: none, the time split's first block)
TARGET = "__target"  # the encoded target
NOT_IN_FIT, FIT, VALIDATION = 0, 1, 2  # a row's role in one fit (ROLE.format(j)): early stopping watches VALIDATION
ROLE = "__role_{}"  # j = 1..k: fold j's fit; j = 0: the final fit on the whole window
LABELS = (ROW, FOLD, TARGET)

_client: Client | None = None  # the session's client, shared by the stages of one cycle


@contextmanager
def session(config: Config) -> Iterator[Client]:
    """A client of the configured scheduler, or of a LocalCluster started now and closed on leaving.

    Inside a session (``run_cycle`` opens one for the whole cycle) a stage uses its client, so a cycle
    starts one LocalCluster, not one per stage; a stage run as a task of its own starts its own.
    """
    global _client
    if _client is not None:
        yield _client
        return
    import dask
    from distributed import Client, LocalCluster

    settings = config.compute.dask
    cluster = None
    if settings.scheduler_address:
        client = Client(settings.scheduler_address)
    else:
        sizes = {"n_workers": settings.n_workers, "threads_per_worker": settings.threads_per_worker,
                 "memory_limit": settings.memory_limit}
        cluster = LocalCluster(processes=settings.processes, dashboard_address=None,
                               **{name: value for name, value in sizes.items() if value is not None})
        client = Client(cluster)
    _client = client
    try:
        # Partitions keep the snapshot's dtypes (object text, as the local path reads it), not Arrow strings.
        with dask.config.set({"dataframe.convert-string": False}):
            yield client
    finally:
        _client = None
        client.close()
        if cluster is not None:
            cluster.close()


def engine_session(config: Config) -> AbstractContextManager[Any]:
    """A session for the dask engine, nothing for the local one."""
    return session(config) if config.compute.engine == "dask" else nullcontext()


# ---------------------------------------------------------------------------- windows as partitions


def _timestamp_zone(path: str, timestamp_column: str) -> str | None:
    """The time zone of the snapshot's timestamp column; the day partitions need it to be timestamps."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from fsspec.core import url_to_fs

    filesystem, location = url_to_fs(path)
    field = pq.read_schema(location, filesystem=filesystem).field(timestamp_column)
    if not pa.types.is_timestamp(field.type):
        raise PipelineError(f"compute.engine 'dask' partitions windows by day: {timestamp_column!r} must hold "
                            f"timestamps in the snapshot, it holds {field.type}")
    return field.type.tz


def read_day(path: str, timestamp_column: str, zone: str | None, day: date, columns: list[str] | None = None,
             labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """One day of a snapshot (its rows in snapshot order), with its rows' labels beside them when given."""
    start = pd.Timestamp(day, tz=zone)
    bounds = [(timestamp_column, ">=", start), (timestamp_column, "<", start + pd.Timedelta(days=1))]
    frame = pd.read_parquet(path, columns=columns, filters=bounds)
    if labels is None:
        return frame
    if len(labels) != len(frame):
        raise PipelineError(f"the snapshot {path} changed while the cycle read it: {day} has {len(frame):,} rows, "
                            f"{len(labels):,} before")
    return pd.concat([frame.reset_index(drop=True), labels.reset_index(drop=True)], axis=1)


def window_days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=offset) for offset in range((end - start).days + 1)]


@dataclass
class Partitions:
    """A window's snapshot as one Dask partition per day."""

    path: str
    timestamp_column: str
    zone: str | None
    days: list[date]

    @classmethod
    def of(cls, path: str, timestamp_column: str, start: date, end: date) -> Partitions:
        return cls(path, timestamp_column, _timestamp_zone(path, timestamp_column), window_days(start, end))

    def frame(self, columns: list[str] | None = None, labels: list[Any] | None = None,
              label_meta: pd.DataFrame | None = None):
        """The days as a dask DataFrame; ``labels`` (a frame, or a future of one, per day, like ``label_meta``)
        are joined to their rows."""
        import dask
        import dask.dataframe as dd

        meta = read_day(self.path, self.timestamp_column, self.zone, self.days[0], columns).iloc[:0]
        if label_meta is not None:
            meta = pd.concat([meta, label_meta], axis=1)
        reader = dask.delayed(read_day, pure=True)
        parts = [reader(self.path, self.timestamp_column, self.zone, day, columns, None if labels is None else labels[i])
                 for i, day in enumerate(self.days)]
        return dd.from_delayed(parts, meta=meta, verify_meta=False)


def _gather(client: Client, tasks: list[Any]) -> list[Any]:
    return client.gather(client.compute(tasks))


def _shared(client: Client, value: Any):
    """``value`` sent to every worker once, for tasks to take as an argument: passed as itself, each task
    would carry (and first hash) its own copy, which for a model of many trees costs more than the task."""
    return client.scatter(value, broadcast=True, hash=False)


def _per_partition(frame, function: Callable[..., Any], *args: Any) -> list[Any]:
    """``function(partition, i, *args)`` on every partition, as delayed tasks in partition order."""
    import dask

    call = dask.delayed(function, pure=True)
    return [call(part, i, *args) for i, part in enumerate(frame.to_delayed())]


# ---------------------------------------------------------------------------- load


def _snapshot_day(source: Source, day: WindowSpec, parts: str) -> SnapshotPart | None:
    """One day of the window read from the source on a worker into ``<parts>/<day>.parquet``; None where
    the day cannot be read on its own as the whole window would be (the window is then read whole)."""
    from fsspec.core import url_to_fs

    from pipeline import data

    engine = data.create_engine(source.url)
    try:
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / "day.parquet"
            try:
                part = data.stream_part(source, engine, day, local)
            except (data.NotStreamable, data.ArrowFallback):
                return None
            if part.rows:
                filesystem, location = url_to_fs(parts)
                filesystem.makedirs(location, exist_ok=True)
                filesystem.put_file(str(local), f"{location}/{day.start.isoformat()}.parquet")
    finally:
        engine.dispose()
    # The driver sorts and digests the hashes: 8 bytes a row travel, not the row.
    part.row_hashes = [np.sort(np.concatenate(part.row_hashes))] if part.row_hashes else []
    return part


def _day_hashes(parts: str, day: date, dtypes: pd.Series, batch_rows: int) -> np.ndarray:
    from fsspec.core import url_to_fs

    from pipeline.data import hash_rows

    filesystem, location = url_to_fs(parts)
    with filesystem.open(f"{location}/{day.isoformat()}.parquet", "rb") as file:
        return hash_rows(file, dtypes, batch_rows)


def snapshot_on_cluster(config: Config, window: WindowSpec, path: Path, parts: str) -> WindowSnapshot:
    """``data.snapshot_window`` with the workers reading the window from the source one day at a time.

    Each day is streamed (Arrow) into its own Parquet file under ``parts``; the days' row hashes give the
    window's sha256, equal to the local path's; then the days are copied, one at a time, into the snapshot
    at ``path`` (a row group per day, which the later stages read back day by day), and ``parts`` removed.
    Where a day cannot stand for its share of the window (a driver without Arrow, types or a timestamp
    format that differ between days, a column null throughout), the window is read whole as the local path reads it.
    """
    import pyarrow.parquet as pq
    from fsspec.core import url_to_fs

    from pipeline import data

    source = config.source
    if data.arrow_dialect(source.url) is None or source.reader == "sqlalchemy":
        return data.snapshot_window(source, window, path)
    filesystem, location = url_to_fs(parts)
    days = window_days(window.start, window.end)
    try:
        with session(config) as client:
            read = _gather(client, [client.submit(_snapshot_day, source, WindowSpec(window.name, day, day), parts,
                                                  pure=False) for day in days])
            present = [(day, part) for day, part in zip(days, read, strict=True) if part is None or part.rows]
            complete = [part for _, part in present if part is not None]
            formats = {part.ts_format for part in complete}
            schemas = [part.schema for part in complete]
            if len(complete) < len(present) or len(formats) > 1 or any(not s.equals(schemas[0]) for s in schemas):
                raise data.NotStreamable
            kept = [day for day, _ in present]

            def rehash(i: int, dtypes: pd.Series) -> np.ndarray:
                return client.submit(_day_hashes, parts, kept[i], dtypes, source.read_chunk_rows).result()

            sha256 = data.parts_digest(complete, rehash)
        with pq.ParquetWriter(path, schemas[0]) as writer:
            for day in kept:
                with filesystem.open(f"{location}/{day.isoformat()}.parquet", "rb") as file:
                    writer.write_table(pq.read_table(file))
    except data.NotStreamable:
        return data.snapshot_window(source, window, path)
    finally:
        if filesystem.exists(location):
            filesystem.rm(location, recursive=True)
    firsts = [part.first for part in complete if part.first is not None and not pd.isna(part.first)]
    return WindowSnapshot(name=window.name, start=window.start, end=window.end, rows=sum(p.rows for p in complete),
                          sha256=sha256, first_day=min(firsts).date() if firsts else None)


# ---------------------------------------------------------------------------- drift


@dataclass(frozen=True)
class Moments:
    """A partition's finite values of one numeric feature, summarised so that partitions merge exactly or nearly."""

    count: int
    low: float
    high: float
    mean: float
    m2: float  # sum of squared deviations from the mean

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        if not len(values):
            return cls(0, np.inf, -np.inf, 0.0, 0.0)
        mean = float(values.mean())
        return cls(len(values), float(values.min()), float(values.max()), mean, float(((values - mean) ** 2).sum()))

    def merge(self, other: Moments) -> Moments:
        """Chan et al.'s pairwise update: no cancellation of large sums of squares."""
        count = self.count + other.count
        if not count:
            return self
        delta = other.mean - self.mean
        return Moments(count, min(self.low, other.low), max(self.high, other.high),
                       self.mean + delta * other.count / count,
                       self.m2 + other.m2 + delta ** 2 * self.count * other.count / count)

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.count)) if self.count else 0.0


def _summary(part: pd.DataFrame, index: int, numeric: list[str], categorical: list[str]) -> dict[str, Any]:
    from pipeline.drift import finite_numbers

    return {"rows": len(part),
            "numeric": {name: Moments.of(finite_numbers(part[name])) for name in numeric},
            "categorical": {name: drift_stats.category_counts(part[name]) for name in categorical}}


def _values_at(part: pd.DataFrame, index: int, positions: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    from pipeline.drift import finite_numbers

    return {name: finite_numbers(part[name])[at] for name, at in positions[index].items()}


def _histograms(part: pd.DataFrame, index: int, positions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from pipeline.drift import finite_numbers

    return {name: drift_stats.histogram(finite_numbers(part[name]), at) for name, at in positions.items()}


def _rows_at(part: pd.DataFrame, index: int, columns: list[str], picks: list[tuple[np.ndarray, np.ndarray]]):
    local, order = picks[index]
    return part[columns].iloc[local].assign(__order=order)


def _split_positions(positions: np.ndarray, counts: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Positions in a concatenation of parts of these sizes, as each part's own positions (in the given order),
    and where each of them stands in ``positions``."""
    offsets = np.cumsum([0, *counts])
    part = np.searchsorted(offsets, positions, side="right") - 1
    return [(positions[part == i] - offsets[i], np.flatnonzero(part == i)) for i in range(len(counts))]


@dataclass
class _WindowSummary:
    frame: Any
    rows: list[int]
    numeric: dict[str, list[Moments]]
    categories: dict[str, pd.Series]

    def moments(self, name: str) -> Moments:
        merged = Moments.of(np.array([]))
        for moments in self.numeric[name]:
            merged = merged.merge(moments)
        return merged


def _summarise(client: Client, frame, numeric: list[str], categorical: list[str]) -> _WindowSummary:
    parts = _gather(client, _per_partition(frame, _summary, numeric, categorical))
    return _WindowSummary(
        frame, [p["rows"] for p in parts],
        {name: [p["numeric"][name] for p in parts] for name in numeric},
        # Partitions in row order: categories keep the order of first appearance, as on the whole column.
        {name: pd.concat([p["categorical"][name] for p in parts]).groupby(level=0, sort=False).sum()
         for name in categorical},
    )


def _bin_on_cluster(client: Client, windows: dict[str, _WindowSummary], names: list[str],
                    seed: int) -> dict[str, drift_stats.Binned]:
    """Each numeric feature binned as ``drift_stats.bin_numeric`` bins the whole windows: same sample, same bins."""
    reference, current = windows["reference"], windows["current"]
    picks: dict[str, dict[str, list[np.ndarray]]] = {"reference": {}, "current": {}}
    for name in names:
        sizes = {window: [m.count for m in summary.numeric[name]] for window, summary in windows.items()}
        from_reference, from_current = drift_stats.edge_sample(sum(sizes["reference"]), sum(sizes["current"]), seed)
        picks["reference"][name] = [local for local, _ in _split_positions(from_reference, sizes["reference"])]
        picks["current"][name] = [local for local, _ in _split_positions(from_current, sizes["current"])]
    samples: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for window, summary in windows.items():
        per_part = [{name: picks[window][name][i] for name in names} for i in range(len(summary.rows))]
        for values in _gather(client, _per_partition(summary.frame, _values_at, per_part)):
            for name in names:
                samples[name].append(values[name])
    positions = {}
    for name in names:
        both = reference.moments(name).merge(current.moments(name))
        positions[name] = drift_stats.bin_positions(np.concatenate(samples[name]), both.low, both.high)
    counts = {window: _gather(client, _per_partition(summary.frame, _histograms, positions))
              for window, summary in windows.items()}
    binned = {}
    for name in names:
        scale = reference.moments(name).std
        if scale == 0.0:
            scale = reference.moments(name).merge(current.moments(name)).std
        binned[name] = drift_stats.Binned(np.sum([part[name] for part in counts["reference"]], axis=0),
                                          np.sum([part[name] for part in counts["current"]], axis=0),
                                          positions[name], scale)
    return binned


def _report_sample(client: Client, summary: _WindowSummary, columns: list[str], limit: int | None,
                   seed: int) -> pd.DataFrame:
    """The rows ``drift.report_rows`` draws from the whole window, in its order."""
    from pipeline.drift import report_rows

    total = sum(summary.rows)
    chosen = report_rows(total, limit, seed)
    if chosen is None:
        chosen = np.arange(total)
    picks = _split_positions(chosen, summary.rows)
    rows = pd.concat(_gather(client, _per_partition(summary.frame, _rows_at, columns, picks)))
    return rows.sort_values("__order").drop(columns="__order").reset_index(drop=True)


def detect_drift_on_cluster(config: Config, paths: dict[str, tuple[str, date, date]], report: Path) -> DriftResult:
    """``drift.detect_drift`` on the windows' snapshots (name -> (path, first day, last day)), read per day."""
    from pipeline.drift import judge_categories, judge_numbers, judge_windows, write_report

    source, seed = config.source, config.training.seed
    numeric, categorical = source.features.numeric, source.features.categorical
    with session(config) as client:
        windows = {}
        for name, (path, start, end) in paths.items():
            frame = Partitions.of(path, source.timestamp_column, start, end).frame([source.timestamp_column,
                                                                                      *source.features.all])
            windows[name] = _summarise(client, client.persist(frame[source.features.all]), numeric, categorical)
        reference, current = windows["reference"], windows["current"]
        binnable = [name for name in numeric if reference.moments(name).count and current.moments(name).count]
        binned = _bin_on_cluster(client, windows, binnable, seed) \
            if binnable and sum(reference.rows) >= config.windows.min_rows else {}

        def judge(name: str, kind: str, floor: float, alpha: float):
            if kind == "categorical":
                return judge_categories(name, reference.categories[name], current.categories[name], floor, alpha)
            return judge_numbers(name, reference.moments(name).count, current.moments(name).count,
                                 lambda: binned[name], floor, alpha)

        result = judge_windows(config, sum(reference.rows), sum(current.rows), judge)
        samples = {name: _report_sample(client, summary, source.features.all, config.drift.sample_rows, seed)
                   for name, summary in windows.items()}
    write_report(config, samples["reference"], samples["current"], result, report)
    return result


# ---------------------------------------------------------------------------- training


def resolve_worker_device(config: Config, client: Client) -> str:
    """``train.resolve_device`` for the cluster: the GPU must be visible to every worker, not to this process."""
    from pipeline.train import gpu_visible

    requested = config.training.device
    if requested == "cpu":
        return "cpu"
    visible = client.run(gpu_visible)
    if requested == "cuda" and not all(visible.values()):
        without = sorted(worker for worker, seen in visible.items() if not seen)
        raise PipelineError(f"training.device is 'cuda' but no NVIDIA GPU is visible to the Dask workers {without}")
    return "cuda" if visible and all(visible.values()) else "cpu"


def fit_roles(config: Config, thin: pd.DataFrame, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every row's fold, and its role in each fit (column 0 the final fit, j fold j's): the local path's rows.

    ``fit_model`` carves the early-stopping split from a fit's rows with ``train_test_split``; drawn here on
    the rows' positions with the same seed and stratification, it picks the same rows.
    """
    from sklearn.model_selection import train_test_split

    from pipeline.evaluate import fold_indices
    from pipeline.families import FAMILIES

    training, k = config.training, config.evaluation.k
    folds = np.zeros(len(thin), dtype="int64")
    roles = np.full((len(thin), k + 1), NOT_IN_FIT, dtype="int8")
    early = FAMILIES[training.family].eval_set_early_stopping and training.early_stopping_rounds

    def assign(column: int, rows: np.ndarray) -> None:
        if not early:
            roles[rows, column] = FIT
            return
        stratify = y[rows] if config.task == "classification" else None
        fit, validation = train_test_split(rows, test_size=training.validation_fraction, random_state=training.seed,
                                           stratify=stratify)
        roles[fit, column], roles[validation, column] = FIT, VALIDATION

    for number, (train, test) in enumerate(fold_indices(config, thin, y), start=1):
        folds[test] = number
        assign(number, train)
    assign(0, np.arange(len(thin)))
    return folds, roles


def _vocabulary(part: pd.DataFrame, index: int, numeric: list[str], categorical: list[str],
                fits: int) -> list[dict[str, set]]:
    """Per fit, each categorical feature's values (as the model's coercer makes them) among its FIT rows."""
    from pipeline.train import FeatureCoercer

    coerced = FeatureCoercer(numeric, categorical).transform(part)
    found = []
    for j in range(fits):
        rows = coerced[part[ROLE.format(j)].to_numpy() == FIT]
        found.append({name: set(rows[name].dropna().unique()) | ({None} if rows[name].isna().any() else set())
                      for name in categorical})
    return found


def _fitted_head(config: Config, device: str, vocabulary: dict[str, set]) -> Pipeline:
    """The model's pipeline with its coercer and encoder fitted as on the fit's rows (they only learn categories)."""
    from pipeline.train import build_model

    model = build_model(config, device)
    features = config.source.features
    values = {name: sorted(v for v in vocabulary[name] if v is not None) + ([np.nan] if None in vocabulary[name] else [])
              for name in features.categorical}
    length = max([1, *map(len, values.values())])
    frame = pd.DataFrame({name: np.zeros(length) for name in features.numeric})
    for name, column in values.items():
        column = column or [np.nan]
        frame[name] = pd.Series(column + [column[0]] * (length - len(column)), dtype=object)
    model[:-1].fit(frame[features.all])
    return model


def _encoded(part: pd.DataFrame, head, role: str, wanted: int, columns: list[str]) -> pd.DataFrame:
    """The partition's rows of one role in a fit, encoded, with their target."""
    rows = part[part[role].to_numpy() == wanted]
    encoded = pd.DataFrame(head.transform(rows), columns=columns, index=rows.index).astype("float64")
    return encoded.assign(**{TARGET: rows[TARGET].to_numpy()})


def _scores(part: pd.DataFrame, index: int, model, task: str, wanted: np.ndarray):
    """The model's scores on the partition's rows marked in ``wanted`` (a mask over the window's rows)."""
    from pipeline.train import predict_scores

    rows = _marked(part, index, wanted)
    scores = predict_scores(model, rows, task) if len(rows) else np.array([], dtype="float64")
    return pd.DataFrame({ROW: rows[ROW].to_numpy(), "score": scores})


def _marked(part: pd.DataFrame, index: int, wanted: np.ndarray) -> pd.DataFrame:
    return part[wanted[part[ROW].to_numpy()]]


def _fit_on_cluster(config: Config, client: Client, frame, device: str, fit: int,
                    vocabulary: dict[str, set]) -> tuple[Pipeline, FitInfo]:
    """One fit with xgboost.dask on its FIT rows (early stopping on its VALIDATION rows), as a plain pipeline."""
    from xgboost import dask as dxgb

    from pipeline.families import FAMILIES
    from pipeline.train import FitInfo

    started = time.perf_counter()
    model = _fitted_head(config, device, vocabulary)
    columns = [f"f{i}" for i in range(len(config.source.features.all))]
    role = ROLE.format(fit)
    meta = pd.DataFrame({name: pd.Series(dtype="float64") for name in columns}).assign(
        **{TARGET: pd.Series(dtype=frame[TARGET].dtype)})

    def encoded(wanted: int):
        # Persisted: xgboost.dask persists the features and the target apart, which would encode every row twice.
        return client.persist(frame.map_partitions(_encoded, model[:-1], role, wanted, columns, meta=meta))

    estimator = model[-1]
    distributed_cls = dxgb.DaskXGBClassifier if config.task == "classification" else dxgb.DaskXGBRegressor
    # n_jobs None: each worker fits with its own threads; this process's count would oversubscribe every worker.
    trainer = distributed_cls(**{**estimator.get_params(), "n_jobs": None})
    trainer.client = client
    fitting = encoded(FIT)
    watched = encoded(VALIDATION) if config.training.early_stopping_rounds else None
    eval_set = None if watched is None else [(watched[columns], watched[TARGET])]
    trainer.fit(fitting[columns], fitting[TARGET], eval_set=eval_set, verbose=False)
    with tempfile.TemporaryDirectory() as folder:
        saved = Path(folder) / "booster.json"
        trainer.save_model(saved)
        estimator.load_model(saved)
    # The local path trains on arrays without column names; so is the registered model scored.
    estimator.get_booster().feature_names = None
    best = FAMILIES["xgboost"].best_iteration(estimator) if eval_set is not None else None
    return model, FitInfo(best_iteration=best, seconds=time.perf_counter() - started)


@dataclass
class ClusterTraining:
    """What the train stage keeps of a training on the cluster."""

    evaluation: EvaluationResult
    compared: ComparedRows | None
    model: Pipeline
    final_fit: FitInfo
    review: ReviewScores


def train_on_cluster(config: Config, path: str, start: date, end: date, champion: Champion | None, cycle_id: str,
                     progress: Callable[[str], None] | None = None) -> ClusterTraining:
    """``evaluate.evaluate_kfold`` and the final ``fit_model`` of the local path, on the window's day partitions."""
    from pipeline import importance
    from pipeline.evaluate import CandidateFolds, compare_with_champion, local_scorer, metric_value, review_scores, task_metrics
    from pipeline.train import encode_target

    say = progress or (lambda message: None)
    source, k = config.source, config.evaluation.k
    started = time.perf_counter()
    partitions = Partitions.of(path, source.timestamp_column, start, end)
    with session(config) as client:
        device = resolve_worker_device(config, client)
        thin_parts = _gather(client, list(partitions.frame([source.timestamp_column, source.target_column]).to_delayed()))
        sizes = [len(part) for part in thin_parts]
        thin = pd.concat(thin_parts, ignore_index=True)
        y = encode_target(config, thin[source.target_column])
        folds, roles = fit_roles(config, thin, y)
        offsets = np.cumsum([0, *sizes])
        labels = [pd.DataFrame({ROW: np.arange(offsets[i], offsets[i + 1]), FOLD: folds[offsets[i]:offsets[i + 1]],
                                TARGET: y[offsets[i]:offsets[i + 1]],
                                **{ROLE.format(j): roles[offsets[i]:offsets[i + 1], j] for j in range(k + 1)}})
                  for i in range(len(sizes))]
        frame = client.persist(partitions.frame(None, client.scatter(labels), labels[0].iloc[:0]))
        vocabularies = _gather(client, _per_partition(frame, _vocabulary, source.features.numeric,
                                                      source.features.categorical, k + 1))
        merged = [{name: set().union(*(part[j][name] for part in vocabularies)) for name in source.features.categorical}
                  for j in range(k + 1)]

        def score_rows(model: Pipeline, rows: np.ndarray) -> np.ndarray:
            scored = pd.concat(_gather(client, _per_partition(frame, _scores, _shared(client, model), config.task,
                                                              _shared(client, rows))))
            return scored.sort_values(ROW)["score"].to_numpy()

        probe_rows = importance.probe_rows(config, folds)
        in_probe = np.zeros(len(thin), dtype=bool)
        in_probe[probe_rows] = True
        probe_frame = pd.concat(_gather(client, _per_partition(frame, _marked, _shared(client, in_probe))))
        probe_frame = probe_frame.sort_values(ROW)
        probe = importance.new_probe(config, probe_rows, probe_frame, y[probe_rows], folds[probe_rows])
        scores, fold_results, best_iterations = np.full(len(thin), np.nan), [], []
        for number in range(1, k + 1):
            say(f"fold {number}/{k}: fitting on {int((roles[:, number] != NOT_IN_FIT).sum()):,} rows on the cluster")
            model, info = _fit_on_cluster(config, client, frame, device, number, merged[number])
            best_iterations.append(info.best_iteration)
            test = folds == number
            scores[test] = score_rows(model, test)
            importance.probe_fold(config, probe, number, model, local_scorer(config))
            fold_results.append(FoldResult(
                fold=number, train_rows=int((roles[:, number] != NOT_IN_FIT).sum()), test_rows=int(test.sum()),
                metrics={name: metric_value(name, y[test], scores[test]) for name in task_metrics(config.task)},
            ))
            candidate = CandidateFolds(y, scores, folds, fold_results, best_iterations, device, time.perf_counter() - started,
                                   probe=probe)
        evaluation, compared = compare_with_champion(config, thin, candidate, champion, score_rows)
        review = review_scores(config, thin, candidate, champion, cycle_id, score_rows)
        say(f"final fit on all {len(thin):,} rows on the cluster")
        model, info = _fit_on_cluster(config, client, frame, device, 0, merged[0])
    return ClusterTraining(evaluation, compared, model, info, review)
