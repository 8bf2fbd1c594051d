"""The flows against the real servers: storage in a GCS bucket (the emulator, through
google-cloud-storage), MLflow as a tracking server over HTTP, Prefect as an API server.

One feedback loop runs per module, configured as a deployment is, through ``NER_*``
variables (``NER_STORAGE_URI=gs://…``, ``NER_MLFLOW_TRACKING_URI=http://…``, the secrets
too); only the training shortcuts are flow parameters. It runs apply-ner (source: a JSONL
object in the bucket), the replay annotator and train-ner as sub-flows, round after round.
Then the tests read what it left:

* MLflow through its REST API with plain HTTP (``/api/2.0/mlflow/...``): the alias, the
  model versions, the training run (params, metrics, dataset inputs), the audit runs of
  every alias move, and no secret anywhere in params or tags;
* the bucket through google-cloud-storage: posts, tasks, exports, annotations, the frozen
  gold set and its ``CURRENT.json``, the source checkpoint, each post exactly once.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from flows.apply_ner import apply_ner
from flows.feedback_loop import LoopResult, LoopStatus, feedback_loop
from ner.base_model import default_base_model
from ner.datasets import load_gold_set
from ner.storage import Storage, open_storage
from tests.support.flows import demo_slice, flow_name, prefect_api, subflow_runs
from tests.support.servers import GcsService, MlflowService, PrefectService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_POSTS = 260
PER_ROUND = 160
#: Sentinel secrets: set like a deployment sets them, they must never reach MLflow.
X_TOKEN = "x-token-sentinel-" + uuid.uuid4().hex
LS_KEY = "ls-key-sentinel-" + uuid.uuid4().hex


@dataclass
class LoopRun:
    """What the module's feedback loop was given and returned."""

    mlflow: MlflowService
    gcs: GcsService
    prefect: PrefectService
    bucket: str
    storage: Storage
    model: str
    experiment: str
    input_ids: list[str]
    result: dict[str, Any]
    flow_run_id: str
    seconds: float

    def rest(self, method: str, path: str, **payload: Any) -> dict[str, Any]:
        """One call of MLflow's REST API (GET: query string, POST: JSON body)."""
        url = f"{self.mlflow.url}/api/2.0/mlflow/{path}"
        if method == "GET":
            response = requests.get(url, params=payload, timeout=30)
        else:
            response = requests.post(url, json=payload, timeout=30)
        assert response.status_code == 200, f"{method} {path}: {response.text[:500]}"
        return dict(response.json())

    def experiment_id(self, name: str) -> str:
        body = self.rest("GET", "experiments/get-by-name", experiment_name=name)
        return str(body["experiment"]["experiment_id"])

    def runs(self, experiment: str, filter_string: str = "") -> list[dict[str, Any]]:
        body = self.rest(
            "POST",
            "runs/search",
            experiment_ids=[self.experiment_id(experiment)],
            filter=filter_string,
            max_results=1000,
            order_by=["attributes.start_time ASC"],
        )
        return list(body.get("runs", []))


def tags_of(entity: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in entity.get("data", entity).get("tags", [])}


@pytest.fixture(scope="module")
def loop(
    mlflow_server: MlflowService,
    gcs_emulator: GcsService,
    prefect_server: PrefectService,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LoopRun]:
    tmp = tmp_path_factory.mktemp("flows-on-servers")
    bucket = f"loop-{uuid.uuid4().hex[:10]}"
    gcs_emulator.client().create_bucket(bucket)
    storage_uri = f"gs://{bucket}/brandloop"
    storage = open_storage(storage_uri, "dev")
    # The input posts are an object in the same bucket, outside the loop's own folders.
    posts = demo_slice(tmp, N_POSTS)
    storage.write_bytes("inbox/posts.jsonl", posts.read_bytes())
    input_ids = [json.loads(line)["id"] for line in posts.read_text().splitlines()]
    name = f"brand-ner-{uuid.uuid4().hex[:6]}"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "NER_STORAGE_URI": storage_uri,
            "NER_MLFLOW_TRACKING_URI": mlflow_server.url,
            "NER_REGISTERED_MODEL_NAME": name,
            "NER_EXPERIMENT_NAME": name,
            "NER_X_BEARER_TOKEN": X_TOKEN,
            "NER_LABEL_STUDIO_API_KEY": LS_KEY,
        }.items():
            mp.setenv(key, value)
        with prefect_api(prefect_server):
            started = time.monotonic()
            state: Any = feedback_loop(
                source="jsonl",
                input_uri=storage.uri("inbox/posts.jsonl"),
                posts_per_round=PER_ROUND,
                annotator="replay",
                max_rounds=3,
                overrides={
                    "cold_start": "base",
                    "threshold": 0.3,
                    "train": {"max_epochs": 3},
                    "seed": 7,
                    # the servers are the subject here (the canary set and the recent gold
                    # slice are tested in test_gate_canary): the split of earlier rounds
                    "canary_fraction": 0.0,
                    "gold_recent_fraction": 0.0,
                },
                return_state=True,
            )
            seconds = time.monotonic() - started
            assert state.is_completed(), state
            result = state.result()
            assert isinstance(result, LoopResult) and isinstance(result.status, LoopStatus)
            yield LoopRun(
                mlflow=mlflow_server,
                gcs=gcs_emulator,
                prefect=prefect_server,
                bucket=bucket,
                storage=storage,
                model=name,
                experiment=name,
                input_ids=input_ids,
                # the loop's result as the flat rows the demo prints
                result={
                    "status": result.status,
                    "rounds": [r.table_row() for r in result.rounds],
                    "cold_start": [r.cold_start for r in result.rounds],
                },
                flow_run_id=str(state.state_details.flow_run_id),
                seconds=seconds,
            )


def test_the_loop_promoted_then_met_the_threshold(loop: LoopRun) -> None:
    rounds = loop.result["rounds"]
    print(f"\nfeedback loop on gs:// + MLflow server: {loop.seconds:.1f} s")
    for r in rounds:
        print(
            f"  round {r['round']}: {r['status']}, champion F1 {r['champion_f1']:.3f}, "
            f"challenger F1 {r.get('challenger_f1') or float('nan'):.3f}"
        )
    assert [r["status"] for r in rounds] == ["promoted", "threshold_met"], rounds
    assert loop.result["status"] == "threshold_met"
    assert loop.result["cold_start"] == [True, False]  # round 1 predicted with the cold start
    first, second = rounds
    assert first["challenger_f1"] >= 0.3 > first["champion_f1"]
    assert second["champion_model"] == f"{loop.model}/{first['promoted_version']}"
    assert second["gold_hash"] == first["gold_hash"]


# --------------------------------------------------------------------------- §3 MLflow
def test_champion_alias_points_at_the_promoted_version(loop: LoopRun) -> None:
    first = loop.result["rounds"][0]
    version = first["promoted_version"]
    # The alias, over REST
    alias = loop.rest("GET", "registered-models/alias", name=loop.model, alias="champion")
    assert alias["model_version"]["version"] == version
    assert alias["model_version"]["run_id"] == first["run_id"]
    # And the registered model lists exactly that alias (challenger was cleared on promotion)
    model = loop.rest("GET", "registered-models/get", name=loop.model)["registered_model"]
    assert [(a["alias"], a["version"]) for a in model.get("aliases", [])] == [("champion", version)]
    # And the version is READY and carries its gold-set evaluation, the promotion's basis
    found = loop.rest("GET", "model-versions/search", filter=f"name='{loop.model}'")
    versions = {v["version"]: v for v in found["model_versions"]}
    assert list(versions) == [version]
    mv = versions[version]
    assert mv["status"] == "READY"
    tags = {t["key"]: t["value"] for t in mv.get("tags", [])}
    f1_tag = f"brandloop.eval.{first['gold_hash'][:16]}.f1"
    assert float(tags[f1_tag]) == pytest.approx(first["challenger_f1"], abs=1e-6)
    assert "brandloop.champion_since" in tags


def test_alias_moves_are_audited_in_order(loop: LoopRun) -> None:
    first = loop.result["rounds"][0]
    version = first["promoted_version"]
    audit = loop.runs(f"{loop.experiment}-audit")
    moves = [
        (t["brandloop.alias"], t["brandloop.from_version"], t["brandloop.to_version"])
        for t in map(tags_of, audit)
    ]
    # challenger set at training, champion set at promotion, challenger cleared after it
    assert moves == [
        ("challenger", "", version),
        ("champion", "", version),
        ("challenger", version, ""),
    ]
    for run in audit:
        tags = tags_of(run)
        assert run["info"]["status"] == "FINISHED"
        assert tags["brandloop.gold_hash"] == first["gold_hash"]
        assert tags["brandloop.actor"].startswith("prefect:train-ner/")
        assert tags["brandloop.reason"]
    champion_move = audit[1]
    metrics = {m["key"]: m["value"] for m in champion_move["data"]["metrics"]}
    assert metrics["challenger_f1"] == pytest.approx(first["challenger_f1"])
    # no champion yet: the round's "champion F1" was the cold start's, logged by that name
    assert "champion_f1" not in metrics
    assert metrics["cold_start_f1"] == pytest.approx(first["champion_f1"])
    assert metrics["threshold"] == 0.3
    # no champion yet: the gate's threshold rule is the one that applied
    assert tags_of(champion_move)["brandloop.reason"].startswith("promoted: threshold:")


def test_training_run_has_params_metrics_and_dataset_inputs(loop: LoopRun) -> None:
    first = loop.result["rounds"][0]
    run = loop.rest("GET", "runs/get", run_id=first["run_id"])["run"]
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    tags = tags_of(run)
    # Closed by the promotion step, in the experiment the settings named
    assert run["info"]["status"] == "FINISHED"
    assert run["info"]["experiment_id"] == loop.experiment_id(loop.experiment)
    assert params["max_epochs"] == "3" and params["seed"] == "7"
    assert params["base_model"] == default_base_model()  # en_core_web_md, from make install
    assert params["labels"] == "BRAND" and params["threshold"] == "0.3"
    assert metrics["gold.f1"] == pytest.approx(first["challenger_f1"])
    sizes = metrics["train_size"] + metrics["dev_size"] + metrics["train_rejected"]
    # the fast recipe trains on 60 % of the posts without a brand
    assert params["negative_fraction"] == "0.6"
    assert sizes <= first["n_train"] and metrics["train_size"] > 0
    assert {"gold.precision", "gold.recall", "gold.BRAND.f1", "curve_dev_f1"} <= set(metrics)
    assert tags["brandloop.gold_hash"] == first["gold_hash"]
    assert tags["brandloop.env"] == "dev"
    assert tags["brandloop.kind"] == "training"
    # The Prefect flow run that trained it is a train-ner sub-flow of the loop
    children = subflow_runs(loop.prefect, loop.flow_run_id)
    train_runs = [c["id"] for c in children if flow_name(loop.prefect, c["flow_id"]) == "train-ner"]
    assert len(train_runs) == 2
    assert tags["brandloop.prefect_flow_run_id"] == train_runs[0]
    # Both datasets are inputs, by hash, with their gs:// location
    inputs = {d["dataset"]["name"]: d["dataset"] for d in run["inputs"].get("dataset_inputs", [])}
    assert set(inputs) == {"train-pool", "gold"}
    assert inputs["gold"]["digest"] == first["gold_hash"][:36]
    assert f"gs://{loop.bucket}/brandloop/dev/" in inputs["train-pool"]["source"]
    # And no run of the loop was left RUNNING
    assert loop.runs(loop.experiment, "attributes.status = 'RUNNING'") == []


def test_no_secret_reaches_mlflow_params_or_tags(loop: LoopRun) -> None:
    texts: list[str] = []
    for experiment in (loop.experiment, f"{loop.experiment}-audit"):
        for run in loop.runs(experiment):
            data = run["data"]
            texts += [f"{p['key']}={p['value']}" for p in data.get("params", [])]
            texts += [f"{t['key']}={t['value']}" for t in data.get("tags", [])]
    found = loop.rest("GET", "model-versions/search", filter=f"name='{loop.model}'")
    for mv in found["model_versions"]:
        texts += [f"{t['key']}={t['value']}" for t in mv.get("tags", [])]
    # The search is not vacuous: params and tags of several runs were read
    assert len(texts) > 50
    assert not [t for t in texts if X_TOKEN in t or LS_KEY in t]
    assert not [t for t in texts if "bearer_token" in t or "api_key" in t.split("=")[0]]


# --------------------------------------------------------------------------- §4 GCS
def test_every_object_of_the_loop_is_in_the_bucket(loop: LoopRun) -> None:
    names = sorted(b.name for b in loop.gcs.client().list_blobs(loop.bucket))
    keys = [n.removeprefix("brandloop/dev/") for n in names]
    # Nothing outside the env's prefix but the input, nothing on local disk's layout
    assert all(n.startswith("brandloop/dev/") for n in names)

    def under(folder: str, suffix: str) -> list[str]:
        return [k for k in keys if k.startswith(f"{folder}/") and k.endswith(suffix)]

    first, second = loop.result["rounds"]
    posts = under("posts", ".jsonl")
    tasks = under("tasks", ".json")
    assert len(posts) == 2 and len(under("predictions", ".jsonl")) == 2
    assert len(tasks) == 2 and len(under("exports", "-replay.json")) == 2
    assert {p.removeprefix("posts/").removesuffix(".jsonl") for p in posts} == {
        t.removeprefix("tasks/").removesuffix(".json") for t in tasks
    }
    assert "goldsets/CURRENT.json" in keys
    assert len(under("checkpoints", ".json")) == 1
    assert under("annotations", ".train.jsonl")
    # Every input post was fetched exactly once, and every fetched post became one task
    fetched = [json.loads(line)["id"] for key in posts for line in loop.storage.iter_lines(key)]
    assert sorted(fetched) == sorted(loop.input_ids)
    task_ids = [t["data"]["post_id"] for key in tasks for t in loop.storage.read_json(key)]
    assert sorted(task_ids) == sorted(fetched)
    assert [r["posts_sent"] for r in loop.result["rounds"]] == [PER_ROUND, N_POSTS - PER_ROUND]
    # The checkpoint says the whole input was read; the gold set in force is the one used
    checkpoint = loop.storage.read_json(under("checkpoints", ".json")[0])
    assert checkpoint["line"] == N_POSTS
    assert checkpoint["input"] == loop.storage.uri("inbox/posts.jsonl")
    loaded = load_gold_set(loop.storage)
    assert loaded is not None
    gold_set, gold = loaded
    assert gold_set.hash == first["gold_hash"] == second["gold_hash"]
    assert len(gold) == first["n_gold"]
    assert loop.storage.read_json("goldsets/CURRENT.json")["name"] in gold_set.annotations_key


def test_apply_ner_alone_reads_and_writes_the_bucket(
    loop: LoopRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given new posts as an object in another bucket prefix, and the loop's champion
    storage_uri = f"gs://{loop.bucket}/standalone"
    storage = open_storage(storage_uri, "staging")
    posts = demo_slice(tmp_path, 25, start=N_POSTS)
    storage.write_bytes("inbox/more.jsonl", posts.read_bytes())
    monkeypatch.setenv("NER_STORAGE_URI", storage_uri)
    monkeypatch.setenv("NER_ENV", "staging")
    monkeypatch.setenv("NER_MLFLOW_TRACKING_URI", loop.mlflow.url)
    monkeypatch.setenv("NER_REGISTERED_MODEL_NAME", loop.model)
    # When apply-ner runs with a storage key as input
    with prefect_api(loop.prefect):
        state = apply_ner(
            source="jsonl", input_uri="inbox/more.jsonl", max_posts=100, return_state=True
        )
        result = state.result()
        shown = _artifact(str(state.state_details.flow_run_id))
    # Then Prefect holds its summary as the run's artifact (a deployment's return value is
    # not kept), with full storage addresses
    assert shown.startswith("# apply-ner: delivered\n")
    assert f"| tasks_key | {storage.uri(result.delivered.tasks_key)} |" in shown  # type: ignore[union-attr]
    # And it predicted with the champion from the MLflow server and wrote into the bucket
    promoted = loop.result["rounds"][0]["promoted_version"]
    assert result.model_version == f"{loop.model}/{promoted}" and not result.cold_start
    assert result.delivered is not None and result.delivered.tasks_key is not None
    assert result.n_posts == result.delivered.n_predictions == 25
    names = {b.name for b in loop.gcs.client().list_blobs(loop.bucket, prefix="standalone/")}
    assert f"standalone/staging/{result.fetched.posts_key}" in names
    assert f"standalone/staging/{result.delivered.tasks_key}" in names
    tasks = storage.read_json(result.delivered.tasks_key)
    assert [t["data"]["post_id"] for t in tasks] == [
        json.loads(line)["id"] for line in posts.read_text().splitlines()
    ]
    assert {p["model_version"] for t in tasks for p in t["predictions"]} == {
        f"{loop.model}/{promoted}"
    }


def _artifact(flow_run_id: str) -> str:
    """The one Markdown artifact the flow run ``flow_run_id`` published, as its text."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    runs = ArtifactFilterFlowRunId(any_=[flow_run_id])
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=runs))
    assert artifact.key == "apply-ner-staging" and artifact.type == "markdown"
    return str(artifact.data)
