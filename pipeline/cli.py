"""Command line: ``pipeline <command>`` (or ``python -m pipeline``).

Exit codes: 0 success; 3 validation stopped the cycle; 4 the gate rejected the
candidate; 5 a promotion/rejection/rollback was refused; 6 another process is
running the same cycle; 2 bad configuration; 1 any other error.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import default_config_path
from pipeline.errors import ConfigError, PipelineError

if TYPE_CHECKING:
    from pipeline.data import WindowSpec

# A cycle that ended on a verdict exits with its own code, so a scheduler can tell it from a fault.
VERDICT_EXIT_CODES = {"validation_stopped": 3, "gate_rejected": 4}


def _progress(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def _config(args):
    from pipeline.config import load_config

    return load_config(args.config)


def _as_of(config, value: str) -> date:
    """A date, or ``latest``: the day of the newest row not dated in the future, resolved once and recorded in the cycle id."""
    if value != "latest":
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise PipelineError(f"--as-of must be YYYY-MM-DD or 'latest', got {value!r}") from None
    from pipeline.data import latest_present_day

    day, note = latest_present_day(config, date.today())
    if note:
        print(f"note: --as-of latest {note}", file=sys.stderr)
    return day


def cmd_cycle(args) -> int:
    from pipeline.cycle import run_cycle
    from pipeline.record import Trigger
    from pipeline.summary import format_outcome

    config = _config(args)
    trigger = Trigger(kind="cli", user=args.actor) if args.actor else Trigger.cli()
    outcome = run_cycle(config, _as_of(config, args.as_of), cycle_id=args.cycle_id, until=args.until,
                        trigger=trigger, progress=_progress)
    print(format_outcome(outcome))
    return VERDICT_EXIT_CODES.get(outcome.status.value, 0)


def _decide(args, approved: bool) -> int:
    from pipeline import approval
    from pipeline.record import default_actor

    decision = approval.decide_version(
        _config(args), args.version,
        approval.reviewer_decision(approved, args.actor or default_actor(), "cli", args.reason),
        override=getattr(args, "override", False),
    )
    print(f"{'promoted' if approved else 'rejected'}: {decision.entry.describe()}")
    return 0


def cmd_tune(args) -> int:
    from pipeline.cycle import join_search

    ran = join_search(_config(args), args.cycle_id, args.worker, progress=_progress)
    print(f"ran {ran} trials of cycle {args.cycle_id}'s search")
    return 0


def cmd_promote(args) -> int:
    return _decide(args, approved=True)


def cmd_reject(args) -> int:
    return _decide(args, approved=False)


def cmd_rollback(args) -> int:
    from pipeline import promote

    entry = promote.rollback(_config(args), actor=args.actor, reason=args.reason, to_version=args.to)
    print(f"rolled back: {entry.describe()}")
    return 0


def cmd_status(args) -> int:
    from pipeline.summary import format_status

    print(format_status(_config(args), cycles=args.cycles))
    return 0


def cmd_show(args) -> int:
    from pipeline.record import CycleOutcome, CycleRecord
    from pipeline.summary import format_outcome

    outcome = CycleOutcome.read(CycleRecord.find(_config(args), args.cycle_id))
    print(format_outcome(outcome))
    return VERDICT_EXIT_CODES.get(outcome.status.value, 0)


def cmd_propose_suite(args) -> int:
    from pipeline import data
    from pipeline.results import WARNING
    from pipeline.validate import propose_suite, range_severity, write_suite

    if not (math.isfinite(args.margin) and args.margin >= 0):
        raise ConfigError(f"--margin is a share of the observed range, 0 or more (e.g. 0.1), got {args.margin}")
    config = _config(args)
    window = _profile_window(config, args)
    frame = data.read_window(config.source, window)
    if frame.empty:
        raise PipelineError(
            f"no rows to profile in {window.label()}: the source's rows run from "
            f"{data.earliest_day(config.source)} to {data.latest_day(config.source)}"
        )
    output = Path(args.output) if args.output else config.validation.suite
    # The flag can only ask for critical ranges; without it the profiled span decides.
    critical_ranges = True if args.critical_ranges else None
    write_suite(propose_suite(config, frame, range_margin=args.margin, critical_ranges=critical_ranges), output)
    print(f"wrote a suite profiled on {len(frame):,} rows of {window.label()} to {output}; review it, then commit it")
    if config.source.features.numeric:
        severity, reason = range_severity(config, frame, critical_ranges)
        if severity == WARNING:
            print(f"ranges proposed as warnings: {reason}; pass --critical-ranges or profile a year (--days 365)")
        else:
            print(f"ranges proposed as critical: {reason}")
    return 0


def _profile_window(config, args) -> WindowSpec:
    """The days propose-suite profiles: --from..--to, or the --days (default: the current window's) ending on --as-of."""
    from pipeline.data import WindowSpec, trailing_window

    if args.start is None and args.end is None:
        days = config.windows.current_days if args.days is None else args.days
        if days < 1:
            raise ConfigError(f"--days must be at least 1, got {days}")
        return trailing_window("profile", _as_of(config, args.as_of or "latest"), days)
    if args.days is not None:
        raise ConfigError("--days and --from/--to both choose the days to profile: give one of them")
    if args.as_of is not None:
        raise ConfigError("--as-of does not apply to --from/--to: the profiled days end on --to")
    if args.start is None or args.end is None:
        raise ConfigError("--from and --to go together: give both, or --days")
    start, end = _day("--from", args.start), _day("--to", args.end)
    if start > end:
        raise ConfigError(f"--from {start} is after --to {end}")
    return WindowSpec("profile", start, end)


def _day(option: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} must be YYYY-MM-DD, got {value!r}") from None


def cmd_backtest(args) -> int:
    from pipeline.backtest import policies_for, run_backtest

    config = _config(args)
    end = _as_of(config, args.end)
    start = date.fromisoformat(args.start) if args.start else None
    if start is None:
        from pipeline.data import earliest_day

        # The first step whose window is full.
        start = earliest_day(config.source) + timedelta(days=config.windows.current_days - 1)
    policies = policies_for(config, [p.strip() for p in args.policies.split(",") if p.strip()], args.gate)
    out = Path(args.out) if args.out else Path("backtests") / f"{config.model_name}-{start}-{end}-{args.step_days}d"
    result = run_backtest(config, start, end - timedelta(days=args.step_days), args.step_days, policies, out,
                          progress=(lambda _line: None) if args.quiet else None)
    print(result.table())
    print("plots: " + ", ".join(str(p) for p in result.plots))
    return 0


def cmd_demo_seed(args) -> int:
    from pipeline import demo

    config = _config(args)
    url = args.url or config.source.url
    if not args.force and demo.demo_is_seeded(url):
        print(f"demo data already present in {url} (use --force to regenerate)")
        return 0
    started = time.perf_counter()
    written = demo.seed_demo(url, seed=args.seed)
    rows = ", ".join(f"{table}: {count:,} rows" for table, count in written.items())
    print(f"seeded {url} in {time.perf_counter() - started:.1f}s ({rows}); "
          f"dates: covariate shift {demo.COVARIATE_SHIFT_DATE}, new category {demo.NEW_CATEGORY_DATE}, "
          f"concept drift {demo.CONCEPT_DRIFT_DATE}, last day {demo.DEMO_END}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", default=str(default_config_path()),
        help="YAML config file (default: $PIPELINE_CONFIG or the demo config)",
    )
    actor = argparse.ArgumentParser(add_help=False)
    actor.add_argument("--actor", help="who acts, for the promotion log (default: the OS user)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cycle_commands = {
        "run": ("promote", "run a whole cycle: load, validate, drift, quality, train, gate, register, promote"),
        "validate": ("validate", "load the windows and validate the current one"),
        "drift": ("drift", "load, validate and measure drift against the reference window"),
        "train": ("gate", "load, validate, drift, the champion's quality, k-fold train and gate (registers nothing)"),
    }
    for name, (until, help_text) in cycle_commands.items():
        cmd = sub.add_parser(name, parents=[common, actor], help=help_text, description=help_text)
        cmd.add_argument("--as-of", default="latest", help="YYYY-MM-DD, or 'latest' (the newest day in the source)")
        cmd.add_argument("--cycle-id", help="cycle id (default: <model>-<as-of>); re-running an id reuses its run")
        cmd.set_defaults(func=cmd_cycle, until=until)

    help_text = "run trials of a cycle's hyperparameter search (training.search) beside its train task, until its budget is met"
    cmd = sub.add_parser("tune", parents=[common], help=help_text, description=help_text)
    cmd.add_argument("--cycle-id", required=True, help="the cycle whose study to join (its train task opens it)")
    cmd.add_argument("--worker", type=int, default=1, help="this worker's number: seeds its sampler apart from the others'")
    cmd.set_defaults(func=cmd_tune)

    cmd = sub.add_parser("promote", parents=[common, actor], help="make a gated version the champion")
    cmd.add_argument("--version", required=True)
    cmd.add_argument("--override", action="store_true", help="promote without a passing gate verdict (needs --reason)")
    cmd.add_argument("--reason")
    cmd.set_defaults(func=cmd_promote)

    cmd = sub.add_parser("reject", parents=[common, actor], help="reject a candidate version (champion unchanged)")
    cmd.add_argument("--version", required=True)
    cmd.add_argument("--reason")
    cmd.set_defaults(func=cmd_reject)

    cmd = sub.add_parser("rollback", parents=[common, actor], help="move champion back to previous-champion")
    cmd.add_argument("--to", help="roll back to this version instead of previous-champion")
    cmd.add_argument("--reason")
    cmd.set_defaults(func=cmd_rollback)

    cmd = sub.add_parser("status", parents=[common], help="champion, challenger, pending approval, last cycles, alias history")
    cmd.add_argument("--cycles", type=int, default=5, help="how many recent cycles to list")
    cmd.set_defaults(func=cmd_status)

    cmd = sub.add_parser("show", parents=[common], help="the summary of a recorded cycle (e.g. one run by Airflow)")
    cmd.add_argument("--cycle-id", help="default: the newest retraining cycle")
    cmd.set_defaults(func=cmd_show)

    cmd = sub.add_parser("propose-suite", parents=[common], help="profile a window and write an expectation suite to review")
    cmd.add_argument("--as-of", help="profile the days ending on this day: YYYY-MM-DD or 'latest' (default)")
    cmd.add_argument("--days", type=int,
                     help="profile this many days ending on --as-of (default: the config's windows.current_days)")
    cmd.add_argument("--from", dest="start", metavar="YYYY-MM-DD",
                     help="profile from this day to --to, both included (instead of --as-of and --days)")
    cmd.add_argument("--to", dest="end", metavar="YYYY-MM-DD", help="the last day profiled with --from")
    cmd.add_argument("--margin", type=float, default=0.1,
                     help="widen each observed range by this share of its width on both sides (default: 0.1)")
    cmd.add_argument("--critical-ranges", action="store_true",
                     help="propose ranges as critical even when the profiled rows span less than a year")
    cmd.add_argument("--output", help="where to write the suite (default: the config's validation.suite)")
    cmd.set_defaults(func=cmd_propose_suite)

    help_text = "replay history: what each retraining policy would have cost, one step ahead"
    cmd = sub.add_parser("backtest", parents=[common], help=help_text, description=help_text)
    cmd.add_argument("--start", help="first as-of date (default: the first day with a full current window)")
    cmd.add_argument("--end", default="latest", help="last day of data to use (default: the newest day in the source)")
    cmd.add_argument("--step-days", type=int, default=7, help="days between steps, and the days each model is scored on")
    cmd.add_argument("--policies", default="never,always,gate,drift,degradation,drift_or_degradation",
                     help="comma-separated: never, always, gate, drift, degradation, drift_or_degradation")
    cmd.add_argument("--gate", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                     help="add the gate with these settings changed as a policy, e.g. alpha=0.2 (repeatable)")
    cmd.add_argument("--out", help="output directory (default: backtests/<model>-<start>-<end>-<step>d); reruns resume")
    cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    cmd.set_defaults(func=cmd_backtest)

    demo = sub.add_parser("demo", help="demo data").add_subparsers(dest="demo_command", required=True, metavar="COMMAND")
    cmd = demo.add_parser("seed", parents=[common], help="write the demo warehouse (both demo tables) into the source database")
    cmd.add_argument("--url", help="SQLAlchemy URL (default: the config's source.url)")
    cmd.add_argument("--seed", type=int, default=7)
    cmd.add_argument("--force", action="store_true", help="regenerate even if the tables exist")
    cmd.set_defaults(func=cmd_demo_seed)
    return parser


def _show_warnings() -> None:
    """The pipeline's own warnings (e.g. a gate that cannot pass) on stderr; the libraries' stay quiet."""
    logger = logging.getLogger("pipeline")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _show_warnings()
    try:
        return args.func(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
