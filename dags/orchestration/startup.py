"""What each task's process imports for its work, and what that costs: ``PYTHONPATH=dags python -m orchestration.startup``.

A task runs in its own process: Airflow's task runner parses the DAG file, then calls the task's
code. The DAG files import nothing heavy; what a task imports is found from its code: the
import statements of every project function (``pipeline``, ``orchestration``) its callable can
reach by name — the callable, or the operator's ``execute``, plus its success callbacks (a
failure callback runs only on failure) — whichever branch runs. That is an upper bound: a
function that lazily imports MLflow counts even where the task would not call it.

Measured in a fresh interpreter per task, with the DAG file already imported, as the task runner
has it: median of ``--repeats`` seconds to import the task's modules, and the heavy libraries
they leave in ``sys.modules``. Used by ``make bench`` and tests/dags/test_task_imports.py.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import statistics
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

DAGS = Path(__file__).resolve().parents[1]
DAG_FILES = ("retrain_model", "monitor_drift")
# The pipeline package this process imports (a checkout's own, or an installed copy).
PROJECT_FOLDERS = (DAGS, Path(importlib.import_module("pipeline").__file__ or "").parent)
HEAVY = ("great_expectations", "evidently", "mlflow", "xgboost", "sklearn")


def dag_tasks(dag_file: str) -> dict[str, Any]:
    """The DAG file's tasks by id, from a DagBag parse (as the dag processor and the task runner parse it)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=DAGS / f"{dag_file}.py")
    if bag.import_errors:
        raise RuntimeError(f"{dag_file}.py does not parse: {bag.import_errors}")
    return {task.task_id: task for task in bag.dags[dag_file].tasks}


def entry_points(task) -> list[Callable]:
    """The code a task's process runs when the task succeeds: its callable or operator methods, and success callbacks."""
    callable_ = getattr(task, "python_callable", None)
    roots = [callable_] if callable_ else [getattr(type(task), name) for name in ("execute", "execute_complete")]
    callbacks = task.on_success_callback or []
    for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
        # A notifier is called through Airflow's BaseNotifier, which calls its ``notify``.
        roots.append(getattr(type(callback), "notify", callback))
    return [root for root in roots if _is_project(root)]


def task_modules(task) -> list[str]:
    """Every module the task's code can import: the modules of the project functions it reaches and their imports."""
    modules: set[str] = set()
    seen: set[Callable] = set()
    pending = list(entry_points(task))
    while pending:
        function = inspect.unwrap(pending.pop())
        if function in seen or not Path(function.__code__.co_filename).is_file():
            continue  # seen, or generated code (a dataclass's __init__), which imports nothing
        seen.add(function)
        if Path(function.__code__.co_filename).parent != DAGS:  # a DAG file is imported under a name of Airflow's
            modules.add(function.__module__)
        pending.extend(_reached(function, modules))
    return sorted(modules)


def _is_project(obj) -> bool:
    """Code of this project (the DAG files, ``orchestration``, ``pipeline``), not of a library."""
    try:
        source = inspect.getsourcefile(inspect.unwrap(obj))
    except TypeError:  # a builtin, or an instance without code of its own
        return False
    return source is not None and any(Path(source).resolve().is_relative_to(folder) for folder in PROJECT_FOLDERS)


def _reached(function: Callable, modules: set[str]) -> Iterator[Callable]:
    """The project functions ``function`` names, recording the modules its import statements import."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    names: dict[str, Any] = {**function.__globals__, **inspect.getclosurevars(function).nonlocals}
    owner = _owner_class(function)
    if owner is not None:
        names["self"] = names["cls"] = owner
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                modules.add(alias.name)
                names[alias.asname or alias.name.split(".")[0]] = importlib.import_module(
                    alias.name if alias.asname else alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
            source = importlib.import_module(node.module)
            for alias in node.names:
                target = getattr(source, alias.name, None)
                if target is None or inspect.ismodule(target):
                    target = importlib.import_module(f"{node.module}.{alias.name}")
                    modules.add(target.__name__)
                names[alias.asname or alias.name] = target
    for node in ast.walk(tree):
        if isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Load):
            yield from _project_functions(_resolve(node, names))


def _owner_class(function: Callable):
    """The class a method is defined on (for ``self.x`` and ``cls.x``), or None for a plain function."""
    path = function.__qualname__.split(".")
    if len(path) < 2 or "<locals>" in path:
        return None
    owner: Any = sys.modules[function.__module__]
    for part in path[:-1]:
        owner = getattr(owner, part, None)
    return owner if inspect.isclass(owner) else None


def _resolve(node: ast.expr, names: dict[str, Any]):
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, names)
        return None if base is None else inspect.getattr_static(base, node.attr, None)
    return None


def _project_functions(obj) -> Iterator[Callable]:
    """The project code an object stands for: a function, a method's function, or a class's own methods it runs."""
    if isinstance(obj, staticmethod | classmethod):
        obj = obj.__func__
    if isinstance(obj, property):
        obj = obj.fget
    if inspect.isclass(obj) and _is_project(obj):
        for name in ("__init__", "__post_init__", "__enter__", "__exit__"):
            method = obj.__dict__.get(name)
            if inspect.isfunction(method):
                yield method
    elif callable(obj) and not inspect.isclass(obj) and _is_project(obj):
        unwrapped = inspect.unwrap(obj)
        if inspect.isfunction(unwrapped):
            yield unwrapped


_MEASURE = """
import importlib, json, sys, time
sys.path.insert(0, sys.argv[1])
importlib.import_module(sys.argv[2])  # the DAG file, as the task runner has parsed it before the task's code runs
started = time.perf_counter()
for module in sys.argv[3:]:
    importlib.import_module(module)
print(json.dumps({"seconds": time.perf_counter() - started, "modules": sorted(sys.modules)}))
"""


def fresh_imports(dag_file: str, modules: list[str]) -> dict[str, Any]:
    """Import the DAG file, then ``modules``, in a fresh interpreter: the seconds the modules took and what is loaded."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(DAGS), dag_file, *modules],
                         capture_output=True, text=True, check=True, cwd=PROJECT_FOLDERS[1].parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def heavy_in(loaded: list[str]) -> list[str]:
    return [name for name in HEAVY if name in loaded]


def task_startup(repeats: int = 3, dag_files: tuple[str, ...] = DAG_FILES, workers: int = 1) -> list[dict[str, Any]]:
    """Per task: the median seconds over ``repeats`` fresh interpreters and the heavy libraries it imports."""
    jobs = [(dag_file, task_id, task_modules(task))
            for dag_file in dag_files for task_id, task in dag_tasks(dag_file).items()]

    def measure(job) -> dict[str, Any]:
        dag_file, task_id, modules = job
        runs = [fresh_imports(dag_file, modules) for _ in range(repeats)]
        return {"dag": dag_file, "task": task_id, "seconds": statistics.median(r["seconds"] for r in runs),
                "heavy": heavy_in(runs[0]["modules"]), "modules": modules}

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(measure, jobs))


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'task':<30}{'start-up':>10}  heavy modules imported")
    print("-" * 78)
    for row in rows:
        print(f"{row['dag'] + '.' + row['task']:<30}{row['seconds']:>9.2f}s  {', '.join(row['heavy']) or '-'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="fresh interpreters per task (the median is shown)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    rows = task_startup(args.repeats)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
