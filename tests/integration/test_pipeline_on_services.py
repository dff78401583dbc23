"""The pipeline on the production stack: PostgreSQL as warehouse, MLflow store and promotion log, an MLflow server.

The cycles run as the demo's history: a first champion as of 2026-02-26 (approved by hand), then, as of
2026-05-28 after the concept drift, a challenger that passes the gate against it and that two processes
try to promote at the same moment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from orchestration.servers import free_port
from pipeline import promote, registry
from pipeline.cycle import run_cycle
from tests.integration.conftest import Stack
from tests.integration.services import MlflowLogin, postgres_unreachable, race_cli, run_cli

MODEL = "demo_churn"
FIRST_DAY, DRIFTED_DAY = "2026-02-26", "2026-05-28"
# What the CLI prints for each way a losing action is refused (PromotionRefused, exit code 5).
REFUSED = re.compile(
    r"another action on .* was recorded at the same moment|changed meanwhile|is already the champion"
    r"|has no previous champion"
)
BUSY = re.compile(r"is already running .*; nothing was changed")
# The requests that change the registry's state for a promotion: alias set (POST), alias removal (DELETE), version tags.
REGISTRY_WRITE = re.compile(
    r'"(?:POST|DELETE) /api/2\.0/mlflow/(?:registered-models/alias|model-versions/set-tag)[ ?]'
)


def log_rows(stack: Stack) -> list[dict]:
    """The promotion log straight from PostgreSQL, oldest first."""
    engine = sa.create_engine(stack.promotion_log_url)
    try:
        with engine.connect() as conn:
            return [dict(row) for row in conn.execute(
                sa.text("SELECT model_name, seq, actor, action, from_version, to_version, verdict_id "
                        "FROM promotion_log ORDER BY seq")
            ).mappings()]
    finally:
        engine.dispose()


def server_client(stack: Stack):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack.server.url)


def server_aliases(stack: Stack) -> dict[str, str]:
    return {alias: str(version) for alias, version in server_client(stack).get_registered_model(MODEL).aliases.items()}


def describe(results) -> str:
    return "\n".join(
        f"--- {' '.join(r.args)} → exit {r.returncode}\nstdout: {r.stdout.strip()}\nstderr: {r.stderr.strip()[-1500:]}"
        for r in results
    )


def test_an_unreachable_postgres_is_reported_with_its_cause():
    port = free_port()  # nothing listens there

    problem = postgres_unreachable(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres")

    assert problem and str(port) in problem, problem


@pytest.fixture(scope="module")
def first_champion(stack: Stack):
    """A cycle as of 2026-02-26 through the CLI (environment only), then a person's approval of v1."""
    args = ["run", "--config", str(stack.config_path), "--as-of", FIRST_DAY, "--actor", "ci"]
    result = run_cli(args, stack.cli_env())
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}"
    assert "AWAITING_APPROVAL" in result.stdout, result.stdout
    entry = promote.promote(stack.config(), "1", actor="reviewer", reason="approved after review")
    return result, entry


@pytest.fixture(scope="module")
def challenger(stack: Stack, first_champion):
    """A cycle as of 2026-05-28 in this process: it beats champion v1 and waits for approval as v2."""
    outcome = run_cycle(stack.config(), date.fromisoformat(DRIFTED_DAY))
    assert outcome.status == "awaiting_approval", outcome.error
    assert outcome.version.version == "2"
    return outcome


def test_cli_cycle_on_services_waits_for_approval_and_the_approval_makes_v1_champion(stack: Stack, first_champion):
    _, entry = first_champion

    assert server_aliases(stack) == {"champion": "1"}
    assert log_rows(stack)[:1] == [{
        "model_name": MODEL, "seq": 1, "actor": "reviewer", "action": "promote", "from_version": None,
        "to_version": "1", "verdict_id": f"{MODEL}-{FIRST_DAY}",
    }]
    assert entry.seq == 1
    version = server_client(stack).get_model_version(MODEL, "1")
    assert (version.tags["approval"], version.tags["approved_by"]) == ("approved", "reviewer")


def test_cycle_artifacts_go_through_the_server_to_the_object_store(stack: Stack, first_champion):
    client = server_client(stack)
    experiment = client.get_experiment_by_name(MODEL)
    run = client.search_runs([experiment.experiment_id], f"tags.cycle_id = '{MODEL}-{FIRST_DAY}'")[0]
    stored = stack.s3.keys("mlartifacts/")
    names = {key.rsplit("/", 1)[-1] for key in stored}

    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert {"config.yaml", "gate.json", "MLmodel", "validation.html", "drift.html"} <= names, stored
    assert any(f"/{run.info.run_id}/artifacts/" in key for key in stored), stored
    # The config file's own local stores stay empty: every location came from the environment.
    assert not (stack.config_path.parent / "artifacts").exists()
    assert not (stack.work / "no-warehouse.db").exists()


def test_cycle_run_directory_is_kept_in_the_object_store(stack: Stack, first_champion):
    stored = stack.s3.keys(f"runs/{MODEL}/{MODEL}-{FIRST_DAY}/")
    names = {key.rsplit("/", 1)[-1] for key in stored}

    expected = {"config.yaml", "windows.json", "evaluation.json", "gate.json", "registered.json", "status.json"}
    assert expected <= names, stored
    assert not (stack.config_path.parent / "runs").exists()


def test_champion_loads_through_the_server_and_scores_rows_from_postgres(stack: Stack, first_champion):
    import mlflow

    config = stack.config()
    engine = sa.create_engine(stack.warehouse_url)
    try:
        rows = pd.read_sql(sa.text(f"SELECT * FROM {MODEL} ORDER BY event_ts LIMIT 5"), engine)
    finally:
        engine.dispose()
    features = rows[config.source.features.all].astype({c: "float64" for c in config.source.features.numeric})
    mlflow.set_tracking_uri(stack.server.url)

    served = np.asarray(mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(features))
    loaded = registry.load_model(config, "1").predict_proba(features)

    assert served.shape == (5, 2)
    assert served.sum(axis=1) == pytest.approx(np.ones(5))
    assert served == pytest.approx(loaded, abs=1e-6)


def test_rerunning_a_cycle_on_services_adds_no_model_version_and_no_log_row(stack: Stack, first_champion):
    client = server_client(stack)
    versions_before = len(client.search_model_versions(f"name='{MODEL}'"))
    log_before = log_rows(stack)

    outcome = run_cycle(stack.config(), date.fromisoformat(FIRST_DAY))

    assert outcome.version.version == "1"
    assert len(client.search_model_versions(f"name='{MODEL}'")) == versions_before
    assert log_rows(stack) == log_before
    experiment = client.get_experiment_by_name(MODEL).experiment_id
    assert len(client.search_runs([experiment], f"tags.cycle_id = '{MODEL}-{FIRST_DAY}'")) == 1


@dataclass(frozen=True)
class Round:
    command: list[str]
    champion_after: str
    action: str
    registry_writes: int  # alias moves and version tags of ONE action; the loser must add none


# Promote v2, roll back to v1, promote v2 again, roll back again: every round a race with one winner.
ROUNDS = [
    # champion, previous-champion, challenger removed; approval and approved_by tags
    Round(["promote", "--version", "2"], "2", "promote", 5),
    # champion back to v1, previous-champion removed (v1 had no predecessor)
    Round(["rollback", "--reason", "race"], "1", "rollback", 2),
    # as the first round, without a challenger alias left to remove
    Round(["promote", "--version", "2"], "2", "promote", 4),
    # as the second round, naming the version
    Round(["rollback", "--to", "1", "--reason", "race"], "1", "rollback", 2),
]


def test_two_processes_acting_at_once_on_services_have_exactly_one_winner(stack: Stack, challenger, tmp_path):
    env = stack.cli_env()
    config = ["--config", str(stack.config_path)]
    assert server_aliases(stack) == {"champion": "1", "challenger": "2"}

    refusals = []
    for number, round_ in enumerate(ROUNDS, 1):
        rows_before = log_rows(stack)
        log_offset = stack.server.log_size()

        results = race_cli(
            [[*round_.command, *config, "--actor", actor] for actor in ("alice", "bob")], env,
            tmp_path / f"round{number}",
        )

        outputs = f"round {number}:\n{describe(results)}"
        winners = [r for r in results if r.returncode == 0]
        losers = [r for r in results if r.returncode != 0]
        assert len(winners) == 1 and len(losers) == 1, outputs
        # Refused by the log (5), or refused because the winner still held the cycle's lock when the loser's
        # wait for it ran out (6: seen on a loaded machine); either way it changed nothing.
        loser = losers[0]
        assert (loser.returncode == 5 and REFUSED.search(loser.stderr)) or (
            loser.returncode == 6 and BUSY.search(loser.stderr)), outputs
        refusals.append(losers[0].stderr.strip())
        rows = log_rows(stack)
        assert len(rows) == len(rows_before) + 1, outputs
        winner_actor = winners[0].args[-1]
        logged = (rows[-1]["action"], rows[-1]["to_version"], rows[-1]["actor"])
        assert logged == (round_.action, round_.champion_after, winner_actor), outputs
        assert server_aliases(stack).get("champion") == round_.champion_after, outputs
        writes = REGISTRY_WRITE.findall(stack.server.log_since(log_offset))
        assert len(writes) == round_.registry_writes, f"{outputs}\nregistry writes seen by the server: {writes}"
        if round_.action == "promote":
            assert server_client(stack).get_model_version(MODEL, "2").tags["approved_by"] == winner_actor, outputs

    # The barrier should put both actions inside the same transaction window, where the unique sequence number
    # decides; rounds where one process merely came second prove less.
    assert any("at the same moment" in refusal for refusal in refusals), refusals


# MLflow's basic-auth app, as docker-compose.yml runs it: the stack's server has it, and every test above is the
# pipeline signed in as its own user (the owner of what it registers).

# Registry writes that would move a model past the gate and the promotion log, sent as raw REST calls.
REGISTRY_WRITES = [
    pytest.param("registered-models/alias", {"name": MODEL, "alias": "champion", "version": "1"}, id="alias"),
    pytest.param("model-versions/set-tag", {"name": MODEL, "version": "1", "key": "approval", "value": "forged"},
                 id="version-tag"),
    pytest.param("registered-models/set-tag", {"name": MODEL, "key": "owner", "value": "forged"}, id="model-tag"),
]


def registry_state(stack: Stack) -> tuple:
    client = server_client(stack)
    model = client.get_registered_model(MODEL)
    versions = client.search_model_versions(f"name='{MODEL}'")
    return model.aliases, model.tags, sorted((v.version, tuple(sorted(v.tags.items()))) for v in versions)


@pytest.fixture(scope="module")
def reviewer(stack: Stack) -> MlflowLogin:
    """A person with an MLflow login of their own (made by the admin): signed in, no permission beyond the default."""
    login = MlflowLogin.new("reviewer")
    assert stack.server.add_user(login) == "MLflow user 'reviewer' created"
    return login


@pytest.mark.parametrize("path, payload", REGISTRY_WRITES)
def test_registry_writes_without_the_pipelines_login_are_refused(stack: Stack, first_champion, reviewer, path,
                                                                 payload):
    import requests

    url = f"{stack.server.url}/api/2.0/mlflow/{path}"
    before = registry_state(stack)

    anonymous = requests.post(url, json=payload, timeout=30)
    wrong_password = requests.post(url, json=payload, auth=("pipeline", "not-its-password"), timeout=30)
    signed_in = requests.post(url, json=payload, auth=(reviewer.username, reviewer.password), timeout=30)
    may_look = requests.get(f"{stack.server.url}/api/2.0/mlflow/registered-models/get", params={"name": MODEL},
                            auth=(reviewer.username, reviewer.password), timeout=30)

    assert (anonymous.status_code, wrong_password.status_code, signed_in.status_code) == (401, 401, 403)
    assert may_look.status_code == 200 and may_look.json()["registered_model"]["name"] == MODEL
    assert registry_state(stack) == before


@pytest.mark.parametrize(("source", "refusal"), [
    pytest.param("s3://someone-elses-bucket/model", "Invalid model version source", id="foreign-bucket"),
    pytest.param("file:///etc", "Invalid model version source", id="server-path"),
    # The server resolves a models:/ URI to its logged model before the source guard, and fails on the missing one.
    pytest.param("models:/m-0123456789abcdef0123456789abcdef/../../other", "", id="traversal"),
])
def test_a_model_version_whose_files_are_not_a_logged_model_is_refused_even_for_the_owner(
        stack: Stack, first_champion, source, refusal):
    from mlflow.exceptions import MlflowException

    client = server_client(stack)  # the pipeline's own login: the model's owner
    before = registry_state(stack)

    with pytest.raises(MlflowException) as refused:
        client.create_model_version(MODEL, source)

    assert refused.value.error_code in ("INVALID_PARAMETER_VALUE", "INTERNAL_ERROR") and refusal in str(refused.value)
    assert registry_state(stack) == before


def test_the_pipeline_without_its_login_names_the_server_and_what_to_set(stack: Stack, first_champion):
    config = ["--config", str(stack.config_path)]
    env = {k: v for k, v in stack.cli_env().items() if not k.startswith("MLFLOW_TRACKING_")}

    anonymous = run_cli(["status", *config], env)
    wrong = run_cli(["status", *config], {**env, "MLFLOW_TRACKING_USERNAME": "pipeline",
                                          "MLFLOW_TRACKING_PASSWORD": "not-its-password"})

    for result in (anonymous, wrong):
        assert result.returncode == 1, describe([result])
        assert f"the MLflow tracking server at {stack.server.url} refused the login" in result.stderr, describe([result])
        assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in result.stderr
        assert "Traceback" not in result.stderr
    assert ": no user." in anonymous.stderr
    assert "user 'pipeline' with the password in MLFLOW_TRACKING_PASSWORD" in wrong.stderr
    assert "not-its-password" not in wrong.stdout + wrong.stderr


def test_a_promotion_by_a_user_who_is_not_the_owner_moves_nothing_and_logs_nothing(
        stack: Stack, challenger, reviewer):
    before, rows_before = registry_state(stack), log_rows(stack)
    champion = before[0]["champion"]
    target = "2" if champion == "1" else "1"
    env = {**stack.cli_env(), **reviewer.env()}

    result = run_cli(["promote", "--version", target, "--config", str(stack.config_path), "--actor", "mallory"], env)

    assert result.returncode == 1, describe([result])
    assert "denied user 'reviewer' this request" in result.stderr, describe([result])
    assert "needs MANAGE on the experiment and the registered model" in result.stderr
    assert registry_state(stack) == before
    assert log_rows(stack) == rows_before


def test_ensure_user_run_again_sets_the_new_password(stack: Stack):
    import requests

    first = MlflowLogin.new("rotated")
    second = MlflowLogin("rotated", first.password + "-next")
    probe = f"{stack.server.url}/api/2.0/mlflow/experiments/search?max_results=1"

    assert stack.server.add_user(first) == "MLflow user 'rotated' created"
    assert stack.server.add_user(second) == (
        "MLflow user 'rotated' exists; its password is set from MLFLOW_PIPELINE_PASSWORD")

    assert requests.get(probe, auth=(second.username, second.password), timeout=30).status_code == 200
    assert requests.get(probe, auth=(first.username, first.password), timeout=30).status_code == 401
