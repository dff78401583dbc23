"""The benchmark's options: what it measures is set the way a config sets it."""

from __future__ import annotations

import pytest

from pipeline import bench
from pipeline.config import Config


@pytest.mark.parametrize("value", [pytest.param("0", id="zero"), pytest.param("two", id="a-word"),
                                   pytest.param("-1", id="negative")])
def test_threads_take_auto_or_a_positive_number(value, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--threads", value])
    assert "--threads takes auto or a number >= 1" in capsys.readouterr().err


def test_the_options_reach_the_config_of_the_cycle(tmp_path):
    config = Config.model_validate(bench.bench_config(tmp_path / "data", tmp_path / "store", "fold_ensemble", 3))
    assert (config.training.final_model, config.training.threads) == ("fold_ensemble", 3)
    assert config.source.url == f"sqlite:///{tmp_path / 'data' / 'warehouse.db'}"
    assert config.storage.root == str(tmp_path / "store" / "runs")
