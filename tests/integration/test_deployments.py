"""prefect.yaml against a real Prefect server: deploy, schedules, a worker run, the label
trigger.

One module-scoped deploy (``prefect --no-prompt deploy --all`` from the project root, with
the deploy-time variables pointing dev at a temp folder and the session's MLflow server)
serves every test here. Flow runs execute in a real process worker (``--run-once``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests

from deployments import bootstrap
from deployments.versioning import Environment, Ref, RefType, deploy_version
from ner.replay import demo_gold_path, demo_posts_path
from ner.storage import open_storage
from tests.support.servers import MlflowService, PrefectService, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ENVS = bootstrap.ENVIRONMENTS
#: Seconds measured in this module (printed at the end of the module).
TIMINGS: dict[str, float] = {}
#: What the dev workflow would name a deploy of branch feature/Emoji-Offsets.
VERSION = deploy_version(
    Environment.DEV, Ref("feature/Emoji-Offsets", RefType.BRANCH), datetime(2026, 11, 29, 21, 5)
)


@dataclass
class Deployed:
    """What the module's deploy produced."""

    prefect: PrefectService
    mlflow: MlflowService
    storage_uris: dict[str, str]
    sentinels: list[str]
    deploy_env: dict[str, str]
    deploy_output: str
    deployments: list[dict[str, Any]] = field(default_factory=list)

    def api(self, method: str, path: str, payload: Any = None) -> Any:
        response = requests.request(
            method, f"{self.prefect.api_url}{path}", json=payload, timeout=30
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def read_deployments(self) -> list[dict[str, Any]]:
        flows = {f["id"]: f["name"] for f in self.api("POST", "/flows/filter", {})}
        found = self.api("POST", "/deployments/filter", {})
        for deployment in found:
            deployment["flow_name"] = flows[deployment["flow_id"]]
        return [d for d in found if d["flow_name"] in FLOW_NAMES]

    def deployment(self, flow: str, env: str) -> dict[str, Any]:
        found = self.api("GET", f"/deployments/name/{flow}/{env}")
        assert isinstance(found, dict)
        return found


FLOW_NAMES = ("apply-ner", "train-ner", "feedback-loop")


@pytest.fixture(scope="module")
def deployed(
    prefect_server: PrefectService,
    mlflow_server: MlflowService,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployed]:
    tmp = tmp_path_factory.mktemp("deployments")
    # Given deploy-time variables: dev on a temp folder and the session's MLflow server
    storage_uris = {env: str(tmp / f"storage-{env}") for env in ENVS}
    sentinels = [f"sentinel-{secrets.token_hex(8)}" for _ in range(4)]
    deploy_env = {"BRANDLOOP_PROJECT_DIR": str(ROOT), "BRANDLOOP_VERSION": VERSION}
    for env in ENVS:
        prefix = f"BRANDLOOP_{env.upper()}_"
        deploy_env[prefix + "STORAGE_URI"] = storage_uris[env]
        deploy_env[prefix + "MLFLOW_TRACKING_URI"] = mlflow_server.url
        deploy_env[prefix + "LABEL_STUDIO_URL"] = "http://127.0.0.1:9"  # never called here
    # And secrets in the deploying shell, which must never reach a deployment
    secret_env = {
        "NER_X_BEARER_TOKEN": sentinels[0],
        "NER_LABEL_STUDIO_API_KEY": sentinels[1],
        "BRANDLOOP_DEV_X_BEARER_TOKEN": sentinels[2],
        "BRANDLOOP_DEV_LABEL_STUDIO_API_KEY": sentinels[3],
    }
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env = {**inherited, **prefect_server.env(), **deploy_env, **secret_env}
    # And the three process work pools and the Secret blocks the flows read at run time,
    # made by the bootstrap CLI (without deploying)
    boot = subprocess.run(
        [sys.executable, "-m", "deployments.bootstrap", "--no-deploy", "--secrets-from-env"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert boot.returncode == 0, boot.stderr[-3000:]
    assert not any(s in boot.stdout + boot.stderr for s in sentinels)
    for name in ENVS:
        pool = requests.get(f"{prefect_server.api_url}/work_pools/brandloop-{name}", timeout=10)
        assert pool.status_code == 200 and pool.json()["type"] == "process"

    # When everything is deployed from the project root
    started = time.monotonic()
    done = prefect_server.cli(
        "deploy", "--all", cwd=ROOT, extra_env={**deploy_env, **secret_env}, timeout=300
    )
    TIMINGS["deploy --all (9 deployments)"] = time.monotonic() - started
    result = Deployed(
        prefect_server,
        mlflow_server,
        storage_uris,
        sentinels,
        {**deploy_env, **secret_env},
        done.stdout,
    )
    result.deployments = result.read_deployments()
    yield result
    print("\ndeployment timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMINGS.items()))


# --- deploy ---------------------------------------------------------------------------------
def test_deploy_all_creates_every_deployment(deployed: Deployed) -> None:
    names = sorted((d["flow_name"], d["name"]) for d in deployed.deployments)
    # Then the server holds the nine deployments, each on its environment's pool
    assert names == sorted((f, e) for f in FLOW_NAMES for e in ENVS)
    for deployment in deployed.deployments:
        env = deployment["name"]
        assert deployment["work_pool_name"] == f"brandloop-{env}"
        assert deployment["entrypoint"].startswith("flows/")
        assert deployment["pull_steps"] == []
        assert deployment["enforce_parameter_schema"] is True
        assert f"env:{env}" in deployment["tags"]


def test_every_deployment_carries_the_version_it_was_deployed_as(deployed: Deployed) -> None:
    # Given BRANDLOOP_VERSION named by deployments.versioning in the deploying shell
    assert VERSION == "feature-emoji-offsets-20261129-210500"
    # Then prefect.yaml stored it as the version of all nine deployments (3 flows x 3 envs)
    versions = {(d["flow_name"], d["name"]): d["version"] for d in deployed.deployments}
    assert len(versions) == 9 and set(versions.values()) == {VERSION}, versions


def test_schedules_exist_with_their_slugs(deployed: Deployed) -> None:
    declared = {
        (bootstrap.flow_name(d), d["name"]): d.get("schedules") or []
        for d in bootstrap.load_prefect_file()["deployments"]
    }
    for deployment in deployed.deployments:
        flow, env = deployment["flow_name"], deployment["name"]
        schedules = deployment["schedules"]
        if flow == "feedback-loop":
            assert schedules == [], f"{flow}/{env} should be manual"
            continue
        # Then apply-ner and train-ner each have their one cron schedule, with its slug
        assert len(schedules) == 1, f"{flow}/{env}: {schedules}"
        (schedule,) = schedules
        (wanted,) = declared[(flow, env)]
        assert schedule["slug"] == wanted["slug"]
        assert schedule["schedule"]["cron"] == wanted["cron"]
        assert schedule["schedule"]["timezone"] == "UTC"
        # And only prod runs on its schedule after a deploy
        assert schedule["active"] is (env == "prod")
    # And train-ner trains one run at a time per environment
    for env in ENVS:
        limit = deployed.deployment("train-ner", env)["global_concurrency_limit"]
        assert limit is not None and limit["limit"] == 1


def test_job_variables_are_resolved_at_deploy_time(deployed: Deployed) -> None:
    for deployment in deployed.deployments:
        env = deployment["name"]
        variables = deployment["job_variables"]
        job_env = variables["env"]
        # Then the {{ $VAR }} placeholders were replaced by the deploying shell's values
        assert variables["working_dir"] == str(ROOT)
        assert job_env["NER_ENV"] == env
        assert job_env["NER_STORAGE_URI"] == deployed.storage_uris[env]
        assert job_env["NER_MLFLOW_TRACKING_URI"] == deployed.mlflow.url
        assert all(v and "{{" not in v for v in job_env.values()), job_env
        # And the secrets are block names only
        assert job_env["NER_X_BEARER_TOKEN_BLOCK"] == f"x-bearer-token-{env}"
        assert job_env["NER_LABEL_STUDIO_API_KEY_BLOCK"] == f"label-studio-api-key-{env}"


def test_no_secret_value_reaches_a_deployment(deployed: Deployed) -> None:
    # Given secrets set in the deploying shell and saved in Secret blocks
    stored = json.dumps(deployed.deployments)
    # Then none of them appears in any deployment (parameters, job variables, anything)
    for sentinel in deployed.sentinels:
        assert sentinel not in stored
        assert sentinel not in deployed.deploy_output
    for deployment in deployed.deployments:
        keys = set(deployment["parameters"]) | set(deployment["job_variables"]["env"])
        assert not {"NER_X_BEARER_TOKEN", "NER_LABEL_STUDIO_API_KEY"} & keys


def test_redeploy_updates_schedules_instead_of_adding(deployed: Deployed) -> None:
    before = deployed.deployment("train-ner", "dev")["schedules"]
    # When train-ner/dev is deployed again
    deployed.prefect.cli(
        "deploy", "--name", "train-ner/dev", cwd=ROOT, extra_env=deployed.deploy_env
    )
    after = deployed.deployment("train-ner", "dev")["schedules"]
    # Then it still has one schedule: the same one (matched by its slug)
    assert [s["id"] for s in after] == [s["id"] for s in before]
    assert len(after) == 1


# --- running the deployments ----------------------------------------------------------------
def _run_deployment(deployed: Deployed, name: str, params: dict[str, Any]) -> str:
    done = deployed.prefect.cli("deployment", "run", name, "--params", json.dumps(params))
    match = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout)
    assert match, done.stdout
    return match.group(1)


def test_the_check_passes_only_where_a_prefect_api_answers(deployed: Deployed) -> None:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env = {**inherited, **deployed.prefect.env(), **deployed.deploy_env}

    def check(api_url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "deployments.bootstrap", "--env", "dev", "--check"],
            cwd=ROOT,
            env={**env, "PREFECT_API_URL": api_url},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    # Given every dev variable set: the check passes where the server answers
    ok = check(deployed.prefect.api_url)
    assert ok.returncode == 0, ok.stdout + ok.stderr[-2000:]
    assert ok.stdout.splitlines()[0] == "every deploy-time variable is set"
    api = deployed.prefect.api_url
    assert (
        ok.stdout.splitlines()[-1] == f"the Prefect API answers at {api}: the deploy would go there"
    )
    # And fails, as the deploy would, where nothing answers (it passed before: trial AD)
    dead = f"http://127.0.0.1:{free_port()}/api"
    down = check(dead)
    assert down.returncode == 1, down.stdout
    assert f"no Prefect API answers at PREFECT_API_URL={dead}" in down.stdout
    assert down.stdout.rstrip().endswith("a deploy would be refused")


@pytest.mark.parametrize(
    ("flow", "params", "named"),
    [
        ("apply-ner", {"max_posts": 0}, "max_posts"),
        ("feedback-loop", {"max_rounds": 0}, "max_rounds"),
        ("feedback-loop", {"poll_interval_s": 0}, "poll_interval_s"),
    ],
)
def test_a_deployment_run_with_a_count_out_of_range_is_refused_before_it_exists(
    deployed: Deployed, flow: str, params: dict[str, Any], named: str
) -> None:
    # Given a deployed flow (its parameter schema carries the bounds, and it is enforced)
    (deployment,) = [
        d for d in deployed.deployments if d["flow_name"] == flow and d["name"] == "dev"
    ]
    before = deployed.api("POST", "/flow_runs/count", {})
    # When a run is asked for with a count of 0, as the Prefect UI or the API would
    response = requests.post(
        f"{deployed.prefect.api_url}/deployments/{deployment['id']}/create_flow_run",
        json={"parameters": params},
        timeout=30,
    )
    # Then the server refuses it, naming the parameter, and no flow run exists
    assert response.status_code == 409, response.text
    assert named in response.text
    assert deployed.api("POST", "/flow_runs/count", {}) == before


def test_deployed_flows_run_on_a_process_worker(deployed: Deployed, tmp_path: Path) -> None:
    storage = open_storage(deployed.storage_uris["dev"], "dev")
    # Given a small JSONL of posts, and a Label Studio export in dev's storage
    posts = demo_posts_path().read_text().splitlines()[:12]
    input_file = tmp_path / "posts.jsonl"
    input_file.write_text("\n".join(posts) + "\n")
    export = json.loads(demo_gold_path().read_text())[:60]
    storage.write_json("exports/test-export.json", export)

    # When apply-ner/dev and train-ner/dev are run with parameters, by one --run-once worker
    apply_id = _run_deployment(
        deployed,
        "apply-ner/dev",
        {"source": "jsonl", "input_uri": str(input_file), "destination": "storage"},
    )
    train_id = _run_deployment(
        deployed,
        "train-ner/dev",
        {
            "source": "storage",
            "export_keys": ["exports/test-export.json"],
            "overrides": {"threshold": 0.0},
        },
    )
    # And an apply-ner/dev run whose overrides name staging (a trial's run took staging's
    # model and a third storage prefix without a word)
    moved_id = _run_deployment(
        deployed,
        "apply-ner/dev",
        {
            "source": "jsonl",
            "input_uri": str(input_file),
            "destination": "storage",
            "overrides": {"env": "staging"},
        },
    )
    started = time.monotonic()
    worker = deployed.prefect.run_worker("brandloop-dev", timeout=420)
    TIMINGS["worker --run-once (apply-ner x 2 + train-ner)"] = time.monotonic() - started

    # Then both flow runs COMPLETED
    states = {
        run_id: deployed.api("GET", f"/flow_runs/{run_id}")["state"]["type"]
        for run_id in (apply_id, train_id)
    }
    assert states == {apply_id: "COMPLETED", train_id: "COMPLETED"}, worker.stdout[-6000:]
    # And the run moved to staging failed, saying why, before writing anything
    moved = deployed.api("GET", f"/flow_runs/{moved_id}")["state"]
    assert moved["type"] == "FAILED", worker.stdout[-6000:]
    assert "may not move it to another's state: env='staging'" in moved["message"]
    assert not (Path(deployed.storage_uris["dev"]) / "staging").exists()

    # And apply-ner wrote Label Studio tasks for the posts into dev's storage
    task_files = [k for k in storage.list("tasks") if apply_id[:8] in k]
    assert len(task_files) == 1, storage.list("tasks")
    tasks = storage.read_json(task_files[0])
    assert len(tasks) == len(posts)
    assert all("predictions" in t and t["data"]["text"] for t in tasks)

    # And train-ner logged its evaluation to the MLflow server, tagged with the flow run
    client = mlflow.MlflowClient(tracking_uri=deployed.mlflow.url, registry_uri=deployed.mlflow.url)
    experiment = client.get_experiment_by_name("brand-ner-dev")
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`brandloop.prefect_flow_run_id` = '{train_id}'",
    )
    assert len(runs) >= 1
    assert runs[0].data.tags["brandloop.env"] == "dev"
    assert any(k.endswith("f1") for k in runs[0].data.metrics)


def test_apply_deployment_runs_its_predict_step_on_dask_on_a_process_worker(
    deployed: Deployed, tmp_path: Path
) -> None:
    storage = open_storage(deployed.storage_uris["staging"], "staging")
    # Given a JSONL of posts
    posts = demo_posts_path().read_text().splitlines()[:30]
    input_file = tmp_path / "posts.jsonl"
    input_file.write_text("\n".join(posts) + "\n")

    # When apply-ner/staging runs on staging's process worker with its predict step on a
    # local Dask cluster of 2 workers, cut into 3 shards
    params = {"source": "jsonl", "input_uri": str(input_file), "destination": "storage"}
    params |= {"executor": "dask", "workers": 2, "n_shards": 3}
    run_id = _run_deployment(deployed, "apply-ner/staging", params)
    started = time.monotonic()
    # INFO even under `make test` (which exports PREFECT_LOGGING_LEVEL=WARNING): the test reads
    # the predict task's INFO line back from the API
    worker = deployed.prefect.run_worker(
        "brandloop-staging", timeout=420, extra_env={"PREFECT_LOGGING_LEVEL": "INFO"}
    )
    TIMINGS["worker --run-once (apply-ner on dask)"] = time.monotonic() - started

    # Then the flow run COMPLETED, and so did its predict task, which ran 3 shards on Dask
    state = deployed.api("GET", f"/flow_runs/{run_id}")["state"]["type"]
    assert state == "COMPLETED", worker.stdout[-6000:]
    task_runs = deployed.api("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
    [predict] = [t for t in task_runs if t["name"].startswith("predict_posts")]
    assert predict["state"]["type"] == "COMPLETED"
    # (the worker's run ships its logs to the API in the background: give them a moment)
    logs: list[Any] = []
    deadline = time.monotonic() + 60
    while not any("in 3 shards on dask" in log["message"] for log in logs):
        assert time.monotonic() < deadline, logs
        time.sleep(1)
        logs = deployed.api(
            "POST", "/logs/filter", {"logs": {"task_run_id": {"any_": [predict["id"]]}}}
        )
    # And staging's storage holds one task per post, in the posts' order, each pre-annotated
    task_files = [k for k in storage.list("tasks") if run_id[:8] in k]
    assert len(task_files) == 1, storage.list("tasks")
    tasks = storage.read_json(task_files[0])
    assert [t["data"]["post_id"] for t in tasks] == [json.loads(p)["id"] for p in posts]
    assert all("predictions" in t for t in tasks)
