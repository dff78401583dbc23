"""The families table: every parameter it lets a search tune is one its estimator takes, and every default space is
a valid space of tunable parameters."""

from __future__ import annotations

import pytest

from pipeline.config import ParamRange, load_config
from pipeline.families import FAMILIES
from tests.conftest import write_config

FAMILY_TASKS = [pytest.param(name, task, id=f"{name}-{task}") for name, entry in FAMILIES.items() for task in entry.tasks]


@pytest.mark.parametrize(("family", "task"), FAMILY_TASKS)
def test_every_tunable_parameter_is_one_the_estimator_takes(tmp_path, family, task):
    sections = {"task": task, "training": {"family": family, "params": {}}}
    if task == "regression":
        sections["evaluation"] = {"k": 3, "split": "kfold"}
    config = load_config(write_config(tmp_path, **sections), environ={})
    estimator = FAMILIES[family].build(config, "cpu", 1)
    assert set(FAMILIES[family].tunable) <= set(estimator.get_params())


@pytest.mark.parametrize("family", [pytest.param(name, id=name) for name in FAMILIES])
def test_every_default_space_is_valid_and_tunable(family):
    entry = FAMILIES[family]
    spaces = {name: ParamRange.model_validate(spec) for name, spec in entry.default_space.items()}
    assert spaces and set(spaces) <= set(entry.tunable)
