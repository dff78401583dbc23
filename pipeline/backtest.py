"""Replay a config's history to see what each retraining policy would have cost.

As of every step between two dates the backtest runs the real stages on the source's rows —
validate, drift, train (k-fold), gate — and lets each policy decide whether the candidate
replaces the model it has in force. Each policy's model is then scored on the rows of the next
step, which no model has seen: that error, over the whole replay, is what the policy costs.

Policies:
  never   the first champion stays for good
  always  every step's candidate replaces the champion
  gate    the configured gate decides (``gate[...]`` variants: the same gate with other settings)
  drift   trains only when the drift check flags the data, then the configured gate decides
  degradation           trains only when its champion's quality check (``pipeline.monitor``, on the
                        step's window rows after the champion's window) says degraded, then the gate decides
  drift_or_degradation  trains when its champion's data drifted or its quality degraded, then the gate decides
Every policy's first champion is the first candidate that passes the floors.

Policies share one candidate per step: it is fitted once (its k folds and its final model) and
compared with each policy's own champion. Nothing is written outside the output directory, so
the real registry, promotion log and run directories are never touched. A finished step is a
file there; running the same backtest again skips it.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pipeline.config import Config, Gate
from pipeline.errors import ConfigError, PipelineError
from pipeline.record import recorded_config

if TYPE_CHECKING:
    from pipeline.evaluate import Champion
    from pipeline.results import ModelQuality

POLICY_KINDS = ("never", "always", "gate", "drift", "degradation", "drift_or_degradation")
QUALITY_KINDS = ("degradation", "drift_or_degradation")  # the policies that check their champion's quality
# What a policy did at a step.
FIRST, PROMOTED, KEPT, REJECTED, IDLE, STOPPED = "first", "promoted", "kept", "rejected", "idle", "stopped"
CHANGES = (FIRST, PROMOTED)


@dataclass(frozen=True)
class Policy:
    name: str
    kind: str
    gate: Gate


def policies_for(config: Config, kinds: list[str], variants: list[str] | None = None) -> list[Policy]:
    """The named policies, plus ``gate`` variants given as ``key=value,key=value`` overrides of the configured gate."""
    unknown = sorted(set(kinds) - set(POLICY_KINDS))
    if unknown:
        raise ConfigError(f"unknown policies {unknown}; choose from {', '.join(POLICY_KINDS)}")
    chosen = [Policy(kind, kind, config.gate) for kind in kinds]
    for variant in variants or []:
        overrides = dict(_pair(part, variant) for part in variant.split(",") if part.strip())
        try:
            gate = Gate.model_validate({**config.gate.model_dump(), **overrides})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"gate variant {variant!r}: {problems}") from None
        chosen.append(Policy(f"gate[{','.join(f'{k}={v}' for k, v in overrides.items())}]", "gate", gate))
    if len({p.name for p in chosen}) != len(chosen):
        raise ConfigError("each policy may be named once")
    return chosen


def _pair(part: str, variant: str) -> tuple[str, Any]:
    key, sep, value = part.partition("=")
    if not sep:
        raise ConfigError(f"gate variant {variant!r}: expected key=value, got {part!r}")
    return key.strip(), json.loads(value) if value.strip()[:1] in "{[" else value.strip()


@dataclass
class PolicyStep:
    """One policy at one step: what it decided, the model in force after it, and how that model did next."""

    decision: str
    model: str | None  # as-of date of the step whose candidate is in force
    reason: str = ""
    compare_rows: int | None = None
    improvement: float | None = None
    p_value: float | None = None
    next_error: float | None = None  # the primary metric of the model in force on the next step's rows
    replaced_next_error: float | None = None  # a promotion: the replaced model's, on the same rows
    harmful: bool = False  # a promotion whose model did worse on the next rows than the one it replaced
    missed: bool = False  # a rejection whose candidate would have done better on the next rows
    degraded: bool | None = None  # the quality policies: their champion's check said degraded
    drifted: bool | None = None  # drift_or_degradation: drift against its own champion's window


@dataclass
class Step:
    as_of: date
    rows: int
    next_rows: int
    validation_passed: bool
    drift: bool | None
    trained: bool
    seconds: float
    policies: dict[str, PolicyStep]
    candidate_next_error: float | None = None  # the step's candidate on the next rows, promoted or not
    candidate_kfold: float | None = None  # its k-fold primary metric: what it promises, as a champion, to the quality check

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["as_of"] = self.as_of.isoformat()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        policies = {name: PolicyStep(**fields) for name, fields in data["policies"].items()}
        return cls(**{**data, "as_of": date.fromisoformat(data["as_of"]), "policies": policies})


def _worse(error: float | None, other: float | None, metric: str) -> bool:
    from pipeline.gate import error_of

    if error is None or other is None or math.isnan(error) or math.isnan(other):
        return False
    return error_of(metric, error) > error_of(metric, other)


@dataclass
class PolicySummary:
    policy: str
    error: float  # the primary metric over every scored row of the replay
    trainings: int
    promotions: int  # champion changes, the first champion included
    harmful: int
    missed: int
    validation_stops: int


@dataclass
class BacktestResult:
    metric: str
    steps: list[Step]
    summaries: list[PolicySummary]
    directory: Path
    plots: list[Path] = field(default_factory=list)

    def table(self) -> str:
        width = max(len("policy"), *(len(s.policy) for s in self.summaries))
        header = (f"{'policy':<{width}} {self.metric:>10} {'trainings':>9} {'promotions':>10} {'harmful':>8} "
                  f"{'missed':>7} {'stops':>6}")
        lines = [header, "-" * len(header)]
        for s in self.summaries:
            lines.append(f"{s.policy:<{width}} {s.error:>10.4g} {s.trainings:>9} {s.promotions:>10} {s.harmful:>8} "
                         f"{s.missed:>7} {s.validation_stops:>6}")
        scored = sum(s.next_rows for s in self.steps)
        lines.append(f"{len(self.steps)} steps, {scored:,} rows scored one step ahead; results in {self.directory}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "summaries": [asdict(s) for s in self.summaries],
                "steps": [s.to_dict() for s in self.steps], "plots": [str(p) for p in self.plots]}


class _Models:
    """Every step's final candidate, on disk in the output directory and loaded once."""

    def __init__(self, directory: Path):
        self.directory = directory / "models"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.loaded: dict[str, Any] = {}

    def save(self, model_id: str, model: Any) -> None:
        import joblib

        temporary = self.directory / f".{model_id}.joblib.tmp"
        joblib.dump(model, temporary)
        temporary.replace(self.directory / f"{model_id}.joblib")
        self.loaded[model_id] = model

    def load(self, model_id: str) -> Any:
        import joblib

        if model_id not in self.loaded:
            self.loaded[model_id] = joblib.load(self.directory / f"{model_id}.joblib")
        return self.loaded[model_id]


def step_dates(start: date, end: date, step_days: int) -> list[date]:
    if step_days < 1:
        raise ConfigError(f"--step-days must be >= 1, got {step_days}")
    if end < start:
        raise ConfigError(f"--end {end} is before --start {start}")
    return [start + timedelta(days=step_days * i) for i in range((end - start).days // step_days + 1)]


def run_backtest(
    config: Config, start: date, end: date, step_days: int, policies: list[Policy], directory: Path,
    progress: Callable[[str], None] | None = None,
) -> BacktestResult:
    """Replay the steps from ``start`` to ``end``; each step's model is scored on the ``step_days`` after it."""
    directory = Path(directory)
    dates = step_dates(start, end, step_days)
    _claim(directory, config, step_days, policies)
    from pipeline.evaluate import Champion

    models, metric = _Models(directory), config.primary_metric
    champions: dict[str, Champion | None] = {p.name: None for p in policies}
    kfold_of: dict[str, float | None] = {}  # each candidate's k-fold estimate, by its model id
    steps: list[Step] = []
    bar = _Bar(len(dates), progress)
    for as_of in dates:
        path = directory / "steps" / f"{as_of.isoformat()}.json"
        if path.exists():
            step = Step.from_dict(json.loads(path.read_text()))
            bar.advance(as_of, "done before")
        else:
            step = _run_step(config, as_of, step_days, policies, champions, models, directory)
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(step.to_dict(), indent=2))
            temporary.replace(path)
            bar.advance(as_of, _describe(step))
        if step.trained:
            kfold_of[as_of.isoformat()] = step.candidate_kfold
        for policy in policies:
            in_force = step.policies[policy.name].model
            current = champions[policy.name]
            if in_force is not None and (current is None or current.version != in_force):
                end = date.fromisoformat(in_force)
                start = end - timedelta(days=config.windows.current_days - 1)
                champions[policy.name] = Champion(in_force, models.load(in_force), start, end, kfold_of.get(in_force))
        steps.append(step)
    bar.close()
    result = BacktestResult(metric, steps, _summaries(config, policies, steps), directory)
    result.plots = plot(result, directory / "backtest")
    (directory / "backtest.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


def _claim(directory: Path, config: Config, step_days: int, policies: list[Policy]) -> None:
    """The output directory belongs to one plan; finished steps of another plan must not be mixed in."""
    replayed = {key: value for key, value in recorded_config(config).items()
                if key not in ("storage", "registry", "promotion", "notifications")}  # not part of the replay
    plan = {"config": replayed, "step_days": step_days,
            "policies": [{"name": p.name, "kind": p.kind, "gate": p.gate.model_dump(mode="json")} for p in policies]}
    digest = hashlib.sha256(json.dumps(plan, sort_keys=True, default=str).encode()).hexdigest()
    marker = directory / "plan.json"
    if marker.exists() and json.loads(marker.read_text()).get("sha256") != digest:
        raise PipelineError(
            f"{directory} holds a backtest of another config or other policies; give another --out or delete it"
        )
    directory.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"sha256": digest, **plan}, indent=2, default=str))


def _run_step(
    config: Config, as_of: date, step_days: int, policies: list[Policy], champions: dict[str, Champion | None],
    models: _Models, directory: Path,
) -> Step:
    from pipeline import data
    from pipeline.train import resolve_device
    from pipeline.validate import validate_window

    started = time.perf_counter()
    current = data.current_window(config, as_of)
    frame = data.read_window(config.source, current)
    following = data.read_window(config.source, data.WindowSpec("next", as_of + timedelta(days=1),
                                                                as_of + timedelta(days=step_days)))
    validation = validate_window(config, frame)
    decisions: dict[str, PolicyStep] = {}
    drifted, trained = None, False
    if not validation.passed:
        failures = "; ".join(o.message for o in validation.critical_failures)[:500]
        for policy in policies:
            champion = champions[policy.name]
            decisions[policy.name] = PolicyStep(STOPPED, champion.version if champion else None, failures)
    else:
        if any(p.kind == "drift" and champions[p.name] is not None for p in policies):
            drifted = _drifted(config, frame, current, champions, policies, directory)
        checks = _quality_checks(config, frame, current, as_of, policies, champions, drifted, directory)
        wanting = [p for p in policies if _wants_training(p, champions[p.name], drifted, checks.get(p.name))]
        candidate = None
        if wanting:
            candidate = _train(config, frame, resolve_device(config), as_of, models)
            trained = True
        for policy in policies:
            decisions[policy.name] = _decide(config, policy, champions[policy.name], candidate, frame, as_of,
                                             policy in wanting, checks.get(policy.name))
    candidate_next_error = _score_next(config, following, decisions, champions, models,
                                       as_of.isoformat() if trained else None)
    return Step(as_of, len(frame), len(following), validation.passed, drifted, trained,
                time.perf_counter() - started, decisions, candidate_next_error,
                candidate.kfold_value if candidate else None)


@dataclass(frozen=True)
class _Checks:
    """What a quality policy's champion showed at a step: its quality and (drift_or_degradation) its data's drift."""

    quality: ModelQuality
    drifted: bool | None = None


def _quality_checks(
    config: Config, frame, current, as_of: date, policies: list[Policy], champions: dict[str, Champion | None],
    drifted: bool | None, directory: Path,
) -> dict[str, _Checks]:
    """Each quality policy's checks of its own champion, on the step's window; drift found once per champion."""
    from pipeline.monitor import check_quality

    drift_policy_champion = next((champions[p.name] for p in policies if p.kind == "drift"), None)
    drift_of = {drift_policy_champion.version: drifted} if drift_policy_champion and drifted is not None else {}
    checks = {}
    for policy in policies:
        champion = champions[policy.name]
        if policy.kind not in QUALITY_KINDS or champion is None:
            continue
        own_drift = None
        if policy.kind == "drift_or_degradation":
            if champion.version not in drift_of:
                # The drift policy's own check, given this policy as the one drift policy (its report under its name).
                as_drift = replace(policy, kind="drift")
                drift_of[champion.version] = _drifted(config, frame, current, {policy.name: champion}, [as_drift],
                                                      directory / policy.name)
            own_drift = drift_of[champion.version]
        checks[policy.name] = _Checks(check_quality(config, frame, champion, as_of), own_drift)
    return checks


def _wants_training(policy: Policy, champion: Champion | None, drifted: bool | None, checks: _Checks | None) -> bool:
    from pipeline.monitor import retrain_reasons

    if champion is None or policy.kind in ("always", "gate"):
        return True
    if policy.kind == "drift":
        return bool(drifted)
    return checks is not None and bool(retrain_reasons(policy.kind, bool(checks.drifted), checks.quality.degraded))


def _drifted(config, frame, current, champions, policies, directory: Path) -> bool:
    """The drift check of the ``drift`` policy, against the reference ``drift.reference`` names for its champion."""
    from pipeline import data
    from pipeline.drift import detect_drift

    [champion] = [champions[p.name] for p in policies if p.kind == "drift"]
    champion_window = (champion.window_start, champion.window_end)
    reference = data.read_window(config.source, data.reference_window(config, current, champion_window))
    if data.reference_falls_back(config, len(reference)):
        reference = data.read_window(config.source, data.champion_reference(config, current, champion_window))
    report = directory / "drift" / f"{current.end.isoformat()}.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    return detect_drift(config, reference, frame, report).dataset_drift


@dataclass
class _Candidate:
    model_id: str
    folds: Any  # evaluate.CandidateFolds
    kfold_value: float  # the k-fold mean of the primary metric, as a cycle records it on the version


def _train(config: Config, frame, device: str, as_of: date, models: _Models) -> _Candidate:
    import numpy as np

    from pipeline.evaluate import fit_folds
    from pipeline.train import final_candidate

    folds = fit_folds(config, frame, device)
    model, _ = final_candidate(config, frame, folds.y, folds.models, device, encoded=folds.encoded)
    models.save(as_of.isoformat(), model)
    return _Candidate(as_of.isoformat(), folds, float(np.nanmean([f.metrics[config.primary_metric] for f in folds.folds])))


def _idle_reason(policy: Policy, checks: _Checks | None) -> str:
    if policy.kind == "drift":
        return "no drift: nothing trained"
    if checks is None:
        return ""
    drift = "no drift, " if policy.kind == "drift_or_degradation" else ""
    return f"{drift}not degraded: nothing trained ({checks.quality.summary()})"[:500]


def _decide(
    config: Config, policy: Policy, champion: Champion | None, candidate: _Candidate | None, frame, as_of: date,
    trains: bool, checks: _Checks | None = None,
) -> PolicyStep:
    from pipeline.evaluate import compare_with_champion
    from pipeline.gate import decide

    kept = champion.version if champion else None
    degraded, drifted = (checks.quality.degraded, checks.drifted) if checks else (None, None)
    if not trains or candidate is None:
        return PolicyStep(IDLE, kept, _idle_reason(policy, checks), degraded=degraded, drifted=drifted)
    evaluation, compared = compare_with_champion(config, frame, candidate.folds, champion)
    verdict = decide(evaluation, policy.gate, f"{policy.name}@{as_of}", compared)
    if champion is None:
        decision = FIRST if verdict.passed else REJECTED
    elif policy.kind == "always":
        decision = PROMOTED
    else:
        decision = PROMOTED if verdict.passed else REJECTED
    model = candidate.model_id if decision in CHANGES else kept
    return PolicyStep(decision, model, "; ".join(verdict.failures)[:500], compare_rows=verdict.compare_rows or None,
                      improvement=verdict.improvement, p_value=verdict.p_value, degraded=degraded, drifted=drifted)


def _score_next(
    config: Config, following, decisions: dict[str, PolicyStep], champions, models: _Models, candidate: str | None,
) -> float | None:
    """Each policy's model in force, a promoted model's predecessor and the step's candidate, on the next step's rows."""
    from pipeline.metrics import metric_value
    from pipeline.train import encode_target, predict_scores

    if not len(following):
        return None
    y = encode_target(config, following[config.source.target_column])
    scores: dict[str, Any] = {}

    def error(model_id: str) -> float:
        if model_id not in scores:
            scores[model_id] = predict_scores(models.load(model_id), following, config.task)
        return metric_value(config.primary_metric, y, scores[model_id])

    for name, step in decisions.items():
        if step.model is not None:
            step.next_error = error(step.model)
        previous = champions[name]
        if step.decision == PROMOTED and previous is not None:
            step.replaced_next_error = error(previous.version)
            step.harmful = _worse(step.next_error, step.replaced_next_error, config.primary_metric)
    if candidate is None:
        return None
    candidate_error = error(candidate)
    for step in decisions.values():
        step.missed = step.decision == REJECTED and _worse(step.next_error, candidate_error, config.primary_metric)
    return candidate_error


def _summaries(config: Config, policies: list[Policy], steps: list[Step]) -> list[PolicySummary]:
    """Per policy, its error pooled over the rows every policy had a model for, weighted by rows."""
    from pipeline.gate import error_of

    metric = config.primary_metric
    scored = [s for s in steps if s.next_rows and all(s.policies[p.name].next_error is not None for p in policies)]
    summaries = []
    for policy in policies:
        mine = [s.policies[policy.name] for s in steps]
        weights = [s.next_rows for s in scored]
        errors = [error_of(metric, s.policies[policy.name].next_error or 0.0) for s in scored]  # all scored
        pooled = sum(e * w for e, w in zip(errors, weights, strict=True)) / sum(weights) if weights else math.nan
        # Back from error to the metric's own scale (1 - error for scores).
        value = error_of(metric, pooled) if not math.isnan(pooled) else math.nan
        summaries.append(PolicySummary(
            policy=policy.name, error=value,
            trainings=sum(1 for s, p in zip(steps, mine, strict=True) if s.trained and p.decision not in (IDLE, STOPPED)),
            promotions=sum(1 for p in mine if p.decision in CHANGES),
            harmful=sum(1 for p in mine if p.harmful), missed=sum(1 for p in mine if p.missed),
            validation_stops=sum(1 for p in mine if p.decision == STOPPED),
        ))
    return summaries


def plot(result: BacktestResult, stem: Path) -> list[Path]:
    """Error one step ahead per policy over time, promotions marked; written as PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 4.5))
    for summary in result.summaries:
        points = [(s.as_of, s.policies[summary.policy]) for s in result.steps]
        scored = [(d, p.next_error) for d, p in points if p.next_error is not None]
        if not scored:
            continue
        [line] = axes.plot([d for d, _ in scored], [e for _, e in scored],  # type: ignore[arg-type]
                           label=summary.policy, linewidth=1.4)
        changes = [(d, p.next_error) for d, p in points if p.decision in CHANGES and p.next_error is not None]
        axes.scatter([d for d, _ in changes], [e for _, e in changes],  # type: ignore[arg-type]
                     color=line.get_color(), marker="o", s=22,
                     zorder=3)
    axes.set_xlabel("as-of date of the step (the model in force is scored on the days after it)")
    axes.set_ylabel(f"{result.metric}, one step ahead")
    axes.set_title("Backtest: each policy's model on rows no model had seen (dots: a new champion)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.autofmt_xdate()
    figure.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        figure.savefig(path, dpi=110)
    plt.close(figure)
    return paths


def _describe(step: Step) -> str:
    if not step.validation_passed:
        return "validation stopped"
    decisions = ", ".join(f"{name} {p.decision}" for name, p in step.policies.items() if p.decision != IDLE)
    return f"{'trained' if step.trained else 'no training'}; {decisions} ({step.seconds:.1f} s)"


class _Bar:
    """A progress bar on a terminal, one line per step elsewhere (logs, CI)."""

    def __init__(self, total: int, sink: Callable[[str], None] | None):
        self.total, self.done, self.sink = total, 0, sink
        self.live = sink is None and sys.stderr.isatty()

    def advance(self, as_of: date, what: str) -> None:
        self.done += 1
        filled = round(20 * self.done / self.total)
        line = f"[{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.total} {as_of}: {what}"
        if self.sink is not None:
            self.sink(line)
        elif self.live:
            print(f"\r{line[:150]:<150}", end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.live:
            print(file=sys.stderr)
