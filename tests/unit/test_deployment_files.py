"""The deployment files are consistent with each other and with the code.

No Docker engine runs here, so ``deployments/compose.yaml`` and the Dockerfiles are checked
structurally: every ``${VAR}`` is documented, every file they reference exists, services
reach each other on the ports they listen on. ``prefect.yaml`` is checked against the flows'
signatures and the bootstrap's names. ``docker compose config`` (or ``docker-compose``) runs
when such a CLI is installed.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments import bootstrap
from ner.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = ROOT / "deployments"
COMPOSE = DEPLOYMENTS / "compose.yaml"
ENV_EXAMPLE = DEPLOYMENTS / ".env.example"
DOCKERFILE = DEPLOYMENTS / "Dockerfile"
FLOWS = {"apply-ner", "train-ner", "feedback-loop"}
MANUAL = {"feedback-loop"}
SECRET_VARIABLES = {"NER_X_BEARER_TOKEN", "NER_LABEL_STUDIO_API_KEY"}
_COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:[:?\-][^}]*)?\}")


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example line without '=': {line!r}"
            values[name] = value
    return values


def flow_signature(entrypoint: str) -> tuple[str, set[str]]:
    """(name given to @flow, parameter names) of an entrypoint, read without importing."""
    path, func = entrypoint.split(":")
    tree = ast.parse((ROOT / path).read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == func:
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "flow":
                    names = [k.value for k in deco.keywords if k.arg == "name"]
                    assert names, f"@flow on {entrypoint} has no name="
                    params = {a.arg for a in node.args.args + node.args.kwonlyargs}
                    return str(ast.literal_eval(names[0])), params
    raise AssertionError(f"no @flow function {func} in {path}")


@pytest.fixture(scope="module")
def prefect_file() -> dict[str, Any]:
    return bootstrap.load_prefect_file()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


# --- prefect.yaml -----------------------------------------------------------------------
def test_every_flow_is_deployed_once_per_environment(prefect_file: dict[str, Any]) -> None:
    # Given the deployments of prefect.yaml
    pairs = [(bootstrap.flow_name(d), d["name"]) for d in prefect_file["deployments"]]
    # Then each of the three flows has exactly one deployment per environment
    assert sorted(pairs) == sorted((f, e) for f in FLOWS for e in bootstrap.ENVIRONMENTS)
    # And each entrypoint is a @flow whose name is what `prefect deploy --name flow/env` matches
    for deployment in prefect_file["deployments"]:
        name, _ = flow_signature(deployment["entrypoint"])
        assert name == bootstrap.flow_name(deployment)


def test_parameters_match_the_flow_signatures(prefect_file: dict[str, Any]) -> None:
    for deployment in prefect_file["deployments"]:
        _, params = flow_signature(deployment["entrypoint"])
        # Then no deployment passes a parameter its flow does not take
        assert set(deployment.get("parameters") or {}) <= params, deployment["entrypoint"]
        assert deployment.get("enforce_parameter_schema") is True
    apply = [d for d in prefect_file["deployments"] if bootstrap.flow_name(d) == "apply-ner"]
    # And apply-ner reads the X API and sends to Label Studio, keywords as a parameter
    for deployment in apply:
        params = deployment["parameters"]
        assert params["source"] == "x" and params["destination"] == "label_studio"
        assert params["keywords"] and all(isinstance(k, str) for k in params["keywords"])


def test_schedules_have_slugs_and_only_prod_is_active(prefect_file: dict[str, Any]) -> None:
    for deployment in prefect_file["deployments"]:
        flow, env = bootstrap.flow_name(deployment), deployment["name"]
        schedules = deployment.get("schedules") or []
        if flow in MANUAL:
            # Then the feedback loop is manual
            assert schedules == [], f"{flow}/{env} must have no schedule"
            continue
        # Then apply-ner and train-ner run on a cron schedule with a slug
        assert len(schedules) == 1, f"{flow}/{env}"
        (schedule,) = schedules
        assert schedule["cron"].count(" ") == 4
        assert re.fullmatch(r"[a-z0-9-]+", schedule["slug"])
        # And only prod's schedules are active after a deploy
        assert schedule["active"] is (env == "prod"), f"{flow}/{env}"


def test_environments_have_their_own_pool_env_and_secret_blocks(
    prefect_file: dict[str, Any],
) -> None:
    for deployment in prefect_file["deployments"]:
        env = deployment["name"]
        pool = deployment["work_pool"]
        job_env = pool["job_variables"]["env"]
        # Then every environment has its own work pool and NER_ENV
        assert pool["name"] == f"brandloop-{env}"
        assert job_env["NER_ENV"] == env
        # And the process worker starts runs in the project, not in a temp directory
        assert bootstrap.env_placeholders(pool["job_variables"]["working_dir"]) == {
            "BRANDLOOP_PROJECT_DIR"
        }
        # And storage, MLflow and Label Studio come from per-environment variables
        for key in ("NER_STORAGE_URI", "NER_MLFLOW_TRACKING_URI", "NER_LABEL_STUDIO_URL"):
            (var,) = bootstrap.env_placeholders(job_env[key])
            assert var.startswith(f"BRANDLOOP_{env.upper()}_"), (env, key, var)
        # And secrets are named blocks, the same names the bootstrap saves
        for field in bootstrap.SECRET_BLOCKS:
            block = job_env[f"NER_{field.upper()}_BLOCK"]
            assert block == bootstrap.secret_block_name(field, env)
        assert not SECRET_VARIABLES & set(job_env), "a secret value variable in job_variables"


def test_prefect_file_has_no_plaintext_secret() -> None:
    text = (ROOT / "prefect.yaml").read_text()
    # Then the secret settings only appear as *_BLOCK names
    for name in SECRET_VARIABLES:
        assert re.findall(rf"{name}(?!_BLOCK)\b", text) == []
    assert "api_key:" not in text.lower() and "token:" not in text.lower()


def test_every_deploy_time_variable_is_documented(prefect_file: dict[str, Any]) -> None:
    documented = env_example()
    needed = bootstrap.required_variables(prefect_file, bootstrap.ENVIRONMENTS)
    # Then .env.example lists every {{ $VAR }} of prefect.yaml and every secret variable
    assert needed and set(needed) <= set(documented)
    for env in bootstrap.ENVIRONMENTS:  # dev too: outside compose it is set by hand
        for field in bootstrap.SECRET_BLOCKS:
            assert bootstrap.secret_variable(field, env) in documented


def test_the_readmes_deploy_env_recipe_exports_one_environment_only() -> None:
    # a trial's recipe exported the dev lines (compose hosts, which every dev command then
    # used) and an empty BRANDLOOP_VERSION; the README's grep runs here on the example file
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (pattern,) = re.findall(r"`grep -E '([^']+)' deployments/\.env\.example > deploy\.env`", readme)
    lines = (ROOT / "deployments" / ".env.example").read_text(encoding="utf-8").splitlines()
    names = [line.partition("=")[0] for line in lines if re.search(pattern, line)]
    assert "BRANDLOOP_PROJECT_DIR" in names and "BRANDLOOP_STAGING_STORAGE_URI" in names
    assert all(n == "BRANDLOOP_PROJECT_DIR" or n.startswith("BRANDLOOP_STAGING_") for n in names)


def test_missing_and_empty_variables_are_reported(prefect_file: dict[str, Any]) -> None:
    # Given the dev variables, one of them empty
    environ = usable_values(bootstrap.required_variables(prefect_file, ["dev"]))
    assert bootstrap.unusable_variables(prefect_file, ["dev"], environ) == []
    environ["BRANDLOOP_DEV_MLFLOW_TRACKING_URI"] = " "
    # Then dev misses exactly that one, and prod misses its own
    assert bootstrap.unusable_variables(prefect_file, ["dev"], environ) == [
        "BRANDLOOP_DEV_MLFLOW_TRACKING_URI"
    ]
    prod_missing = bootstrap.unusable_variables(prefect_file, ["prod"], environ)
    assert prod_missing and all(n.startswith("BRANDLOOP_PROD_") for n in prod_missing)
    with pytest.raises(bootstrap.BootstrapError, match="BRANDLOOP_DEV_MLFLOW_TRACKING_URI"):
        bootstrap.bootstrap(["dev"], environ, deploy=True, config=prefect_file)


def usable_values(names: list[str]) -> dict[str, str]:
    """A value of the right shape for each deploy-time variable of ``names``."""
    shapes = {
        "_MLFLOW_TRACKING_URI": "http://mlflow.internal:5000",
        "_LABEL_STUDIO_URL": "https://label-studio.internal",
        "_STORAGE_URI": "gs://our-bucket",
        "_PROJECT_DIR": str(Path(__file__).resolve().parents[2]),  # this checkout
    }
    return {n: next((v for k, v in shapes.items() if n.endswith(k)), "1.2.3") for n in names}


def test_values_of_the_wrong_shape_are_refused_and_say_why(
    prefect_file: dict[str, Any],
) -> None:
    # Given dev's variables, with the mistakes trials made: a bare file name as tracking URI,
    # a URL pasted with a space before it, a relative folder, a host without its scheme
    environ = usable_values(bootstrap.required_variables(prefect_file, ["dev"]))
    environ |= {
        "BRANDLOOP_DEV_MLFLOW_TRACKING_URI": "mlflow.db",
        "BRANDLOOP_DEV_LABEL_STUDIO_URL": " http://127.0.0.1:8080",
        "BRANDLOOP_DEV_STORAGE_URI": ".brandloop/storage",
        "BRANDLOOP_PROJECT_DIR": "brandloop",
    }
    unusable = bootstrap.unusable_variables(prefect_file, ["dev"], environ)
    # Then each is refused, saying what it should look like
    lines = bootstrap.check_lines(unusable, environ, {})
    assert lines == [
        "invalid: BRANDLOOP_DEV_LABEL_STUDIO_URL=' http://127.0.0.1:8080' (spaces around the "
        "value)",
        "invalid: BRANDLOOP_DEV_MLFLOW_TRACKING_URI='mlflow.db' (not http://… or https://… or "
        "sqlite://… or postgresql://… or mysql://… or file://…)",
        "invalid: BRANDLOOP_DEV_STORAGE_URI='.brandloop/storage' (not gs://… or file://… or an "
        "absolute path)",
        "invalid: BRANDLOOP_PROJECT_DIR='brandloop' (not an absolute path)",
    ]
    # and the error says to fix them, not to copy the example file (a trial was told to)
    error = bootstrap.unusable_error(unusable, ["dev"], environ)
    assert error.endswith("(fix each value as the line above it says, and export it again)")
    # while one unset besides them still points to the example file
    unset = {k: v for k, v in environ.items() if k != "BRANDLOOP_DEV_STORAGE_URI"}
    assert "deployments/.env.example" in bootstrap.unusable_error(unusable, ["dev"], unset)
    # And the README's own values outside compose pass
    environ |= {
        "BRANDLOOP_DEV_MLFLOW_TRACKING_URI": "sqlite:////home/me/brandloop/mlflow.db",
        "BRANDLOOP_DEV_LABEL_STUDIO_URL": "http://127.0.0.1:8080",
        "BRANDLOOP_DEV_STORAGE_URI": "/home/me/brandloop/.brandloop/storage",
        "BRANDLOOP_PROJECT_DIR": "/home/me/brandloop",
    }
    assert bootstrap.unusable_variables(prefect_file, ["dev"], environ) == []


def test_the_example_files_compose_values_are_noted_not_refused(
    prefect_file: dict[str, Any],
) -> None:
    # Given dev's variables as the example file has them (compose's hosts and image folder,
    # which a trial deployed with outside compose)
    examples = bootstrap.example_values()
    needed = bootstrap.required_variables(prefect_file, ["dev"])
    environ = {n: examples.get(n, "1.2.3") for n in needed}  # the version is not in it
    # Then they pass, each noted as the example's, and the folder this machine lacks as such
    assert bootstrap.unusable_variables(prefect_file, ["dev"], environ) == []
    notes = bootstrap.example_value_notes(prefect_file, ["dev"], environ)
    assert "note: BRANDLOOP_DEV_MLFLOW_TRACKING_URI=http://mlflow:5000 is the example file's " in (
        "\n".join(notes)
    )
    assert len([n for n in notes if "is the example file's value" in n]) == 4
    assert notes[-1].startswith("note: BRANDLOOP_PROJECT_DIR=/opt/brandloop is not a folder here")
    # And values of one's own raise no note
    assert bootstrap.example_value_notes(prefect_file, ["dev"], usable_values(list(environ))) == []


def test_placeholders_of_the_example_file_are_refused_and_named(
    prefect_file: dict[str, Any],
) -> None:
    # Given staging's variables from the example file, with its placeholder hosts
    examples = bootstrap.example_values()
    needed = bootstrap.required_variables(prefect_file, ["staging"])
    environ = {**{n: examples.get(n, "") for n in needed}, "BRANDLOOP_VERSION": "1.2.3"}
    environ["BRANDLOOP_STAGING_STORAGE_URI"] = "gs://our-real-bucket"
    del environ["BRANDLOOP_PROJECT_DIR"]
    unusable = bootstrap.unusable_variables(prefect_file, ["staging"], environ)
    # Then the two example.com URLs and the unset folder are unusable, the real bucket is not
    assert unusable == [
        "BRANDLOOP_PROJECT_DIR",
        "BRANDLOOP_STAGING_LABEL_STUDIO_URL",
        "BRANDLOOP_STAGING_MLFLOW_TRACKING_URI",
    ]
    # And each line says why, an unset one with the example's value
    assert bootstrap.check_lines(unusable, environ, examples) == [
        "missing: BRANDLOOP_PROJECT_DIR (example: /opt/brandloop)",
        "placeholder: BRANDLOOP_STAGING_LABEL_STUDIO_URL="
        "https://label-studio.staging.example.com (the example's; put in the real value)",
        "placeholder: BRANDLOOP_STAGING_MLFLOW_TRACKING_URI="
        "https://mlflow.staging.example.com (the example's; put in the real value)",
    ]
    with pytest.raises(bootstrap.BootstrapError, match="BRANDLOOP_STAGING_MLFLOW_TRACKING_URI"):
        bootstrap.bootstrap(["staging"], environ, deploy=True, config=prefect_file)
    # And a real host that merely contains the word is not a placeholder
    assert not bootstrap.is_placeholder("https://mlflow.example.company.io")
    assert bootstrap.is_placeholder("change-me") and bootstrap.is_placeholder("http://example.com")


def test_the_export_hint_sets_deploy_variables_and_no_setting(tmp_path: Path) -> None:
    # Given the hint's two commands, run as written in a copy of the project's layout
    hint = bootstrap.export_hint(["staging"])
    grep = re.search(r"\((grep .*?)\), put", hint)
    export = re.search(r"export them: (.*)$", hint)
    assert grep and export
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / ".env.example").write_text(ENV_EXAMPLE.read_text())
    script = f"{grep.group(1)} && {export.group(1)} && env"
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    exported = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    # Then the deploy-time variables are set, and none of the compose lines (which are
    # brandloop settings or passwords) leaked into the shell
    example = env_example()
    assert exported["BRANDLOOP_STAGING_STORAGE_URI"] == example["BRANDLOOP_STAGING_STORAGE_URI"]
    assert exported["BRANDLOOP_PROJECT_DIR"] == example["BRANDLOOP_PROJECT_DIR"]
    assert "NER_MIN_NEW_LABELS" not in exported and "POSTGRES_PASSWORD" not in exported
    # nor another environment's lines (a trial's dev commands then used the compose hosts)
    assert not any(name.startswith(("BRANDLOOP_DEV_", "BRANDLOOP_PROD_")) for name in exported)
    assert "'^BRANDLOOP_(PROJECT_DIR|DEV_|PROD_)'" in bootstrap.export_hint(["dev", "prod"])


def answering() -> str:
    """``bootstrap.prefect_api`` for a Prefect API that answers (the real check against a
    server: tests/integration/test_deployments.py)."""
    return "http://127.0.0.1:4200/api"


def test_the_check_says_when_nothing_is_missing(
    prefect_file: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Given every dev variable set (a trial's successful check printed nothing)
    for name, value in usable_values(bootstrap.required_variables(prefect_file, ["dev"])).items():
        monkeypatch.setenv(name, value)
    real = bootstrap.prefect_api
    monkeypatch.setattr(bootstrap, "prefect_api", answering)  # reachability: integration
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert bootstrap.main(["--env", "dev", "--check"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "every deploy-time variable is set",  # and where the deploy would go (trial AF)
        "the Prefect API answers at http://127.0.0.1:4200/api: the deploy would go there",
    ]
    monkeypatch.setattr(bootstrap, "prefect_api", real)
    # and without a Prefect API the check fails as the deploy would (it passed with a note,
    # so `deploy --check && deploy` went on to a refused deploy)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert bootstrap.main(["--env", "dev", "--check"]) == 1
    said = capsys.readouterr().out.splitlines()[1]
    assert said.startswith("PREFECT_API_URL is not set: the work pools, Secret blocks and")
    assert said.endswith(": a deploy would be refused")
    # And with one unset, it says the same as `brandloop deploy --check` does
    monkeypatch.setattr(bootstrap, "prefect_api", answering)
    monkeypatch.delenv("BRANDLOOP_DEV_STORAGE_URI")
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert bootstrap.main(["--env", "dev", "--check"]) == 1
    assert capsys.readouterr().out.splitlines()[0] == (
        "missing: BRANDLOOP_DEV_STORAGE_URI (example: gs://brandloop)"
    )


def test_the_check_notes_unset_secrets_when_it_would_save_them(
    prefect_file: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Given every dev variable set, the X token too, but not the Label Studio key (a trial's
    # check passed, then the block was created empty without a word)
    for name, value in usable_values(bootstrap.required_variables(prefect_file, ["dev"])).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BRANDLOOP_DEV_X_BEARER_TOKEN", "token")
    monkeypatch.delenv("BRANDLOOP_DEV_LABEL_STUDIO_API_KEY", raising=False)
    monkeypatch.setattr(bootstrap, "prefect_api", answering)  # reachability: integration
    # When the check runs for a --secrets-from-env bootstrap
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert bootstrap.main(["--env", "dev", "--check", "--secrets-from-env"]) == 0
    # Then it passes and notes what will happen to the key's block; nothing about the token
    assert capsys.readouterr().out.splitlines()[:2] == [
        "every deploy-time variable is set",
        "note: BRANDLOOP_DEV_LABEL_STUDIO_API_KEY is unset or empty: --secrets-from-env keeps "
        "Secret block label-studio-api-key-dev if it exists, else creates it empty (a flow that "
        "needs it then fails, naming it)",
    ]
    # And a check without --secrets-from-env does not mention secrets
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert bootstrap.main(["--env", "dev", "--check"]) == 0
    assert "note:" not in capsys.readouterr().out


def test_a_block_created_empty_gets_a_note() -> None:
    done = {
        "secret_blocks": {"x-bearer-token-dev": "kept", "label-studio-api-key-dev": "created empty"}
    }
    assert bootstrap.empty_block_notes("dev", done) == [
        "note: Secret block label-studio-api-key-dev was created empty "
        "(BRANDLOOP_DEV_LABEL_STUDIO_API_KEY unset or empty): a flow that needs it fails until "
        "you set BRANDLOOP_DEV_LABEL_STUDIO_API_KEY and run with --secrets-from-env again"
    ]
    assert bootstrap.empty_block_notes("dev", {"work_pools": {}}) == []
    # And in prod, whose schedules are active, the note names the deployments that need it
    # (a trial's prod deploy on an empty X token left apply-ner/prod failing every 6 h)
    prod = {"secret_blocks": {"x-bearer-token-prod": "created empty"}}
    [note] = bootstrap.empty_block_notes("prod", prod)
    assert note.endswith(
        "; apply-ner/prod runs on an active schedule that fails until then (or pause it: "
        "`prefect deployment schedule ls` and `pause`)"
    )
    config = bootstrap.load_prefect_file()
    assert bootstrap.scheduled_users(config, "prod", "label_studio_api_key") == [
        "apply-ner/prod",
        "train-ner/prod",
    ]
    assert bootstrap.scheduled_users(config, "dev", "x_bearer_token") == []


def test_a_bootstrap_report_reads_as_one_line() -> None:
    done = {
        "work_pools": {"brandloop-dev": "exists"},
        "secret_blocks": {"x-bearer-token-dev": "saved", "label-studio-api-key-dev": "empty"},
        "deployed": [],
    }
    assert bootstrap.report_line(done) == (
        "work pools: brandloop-dev exists; "
        "secret blocks: x-bearer-token-dev saved, label-studio-api-key-dev empty; deployed: none"
    )


# --- compose.yaml -------------------------------------------------------------------------
def test_compose_variables_are_all_in_env_example(compose: dict[str, Any]) -> None:
    used = set(_COMPOSE_VAR.findall(COMPOSE.read_text()))
    documented = env_example()
    # Then every ${VAR} of the compose file has a line in .env.example
    assert used and used <= set(documented), sorted(used - set(documented))
    # And .env.example holds no real credential
    for name, value in documented.items():
        if any(w in name for w in ("PASSWORD", "TOKEN", "API_KEY")):
            assert value in ("", "change-me"), name


def test_compose_has_the_whole_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {"postgres", "label-studio", "mlflow", "gcs", "prefect-server", "worker"}
    assert expected | {"bootstrap", "label-trigger"} <= set(services)
    assert services["label-studio"]["image"] == "heartexlabs/label-studio:1.23.2"
    assert services["gcs"]["image"].startswith("fsouza/fake-gcs-server:")
    # MLflow: PostgreSQL backend, artifacts served through the server from a volume
    command = services["mlflow"]["command"]
    backend = command[command.index("--backend-store-uri") + 1]
    assert backend.startswith("postgresql://") and backend.endswith("@postgres:5432/mlflow")
    assert "--serve-artifacts" in command
    destination = command[command.index("--artifacts-destination") + 1]
    assert any(v.split(":")[1] == destination for v in services["mlflow"]["volumes"])
    # Label Studio on PostgreSQL, with webhooks allowed to reach the compose network
    ls_env = services["label-studio"]["environment"]
    assert ls_env["DJANGO_DB"] == "default" and ls_env["POSTGRE_HOST"] == "postgres"
    assert ls_env["SSRF_PROTECTION_ENABLED"] == "false"


def _listen_port(service: dict[str, Any]) -> str:
    command = service.get("command") or []
    for flag in ("--port", "-port"):
        if flag in command:
            return str(command[command.index(flag) + 1])
    for item in command:
        if str(item).startswith("-port="):
            return str(item).split("=", 1)[1]
    return str((service.get("environment") or {}).get("NER_SERVE_PORT", ""))


def test_compose_ports_and_urls_agree(compose: dict[str, Any]) -> None:
    services = compose["services"]
    known_ports = {"label-studio": "8080", "postgres": "5432"}
    for name, service in services.items():
        port = _listen_port(service) or known_ports.get(name, "")
        # Then every published port maps to the port the service listens on
        for mapping in service.get("ports", []):
            assert str(mapping).rsplit(":", 1)[1] == port, (name, mapping)
        # And every depends_on names a service of the file
        assert set(service.get("depends_on") or {}) <= set(services), name
    # And every URL between services uses a service name and its listening port
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            for host, port in re.findall(r"://(?:[^@/]*@)?([a-z-]+):(\d+)", str(value)):
                assert host in services, (name, key, value)
                expected = _listen_port(services[host]) or known_ports.get(host)
                assert port == expected, (name, key, value)


def test_compose_services_running_brandloop_reach_every_server(
    compose: dict[str, Any], prefect_file: dict[str, Any]
) -> None:
    services = compose["services"]
    runners = [n for n, s in services.items() if s.get("image") == "brandloop-flows:local"]
    expected = {"prefect-server", "bootstrap", "worker", "label-trigger", "serving", "ml-backend"}
    assert set(runners) == expected
    for name in ("bootstrap", "worker", "label-trigger"):
        env = services[name]["environment"]
        # Then each talks to the Prefect API, MLflow, the bucket and Label Studio
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api", name
        assert env["NER_MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert env["STORAGE_EMULATOR_HOST"] == "http://gcs:4443", name
        assert env["NER_STORAGE_URI"].startswith("gs://"), name
        assert env["NER_LABEL_STUDIO_URL"] == "http://label-studio:8080", name
        assert not SECRET_VARIABLES & set(env), name
    # And the bootstrap gets every deploy-time variable of dev (the image sets the project dir)
    boot_env = set(services["bootstrap"]["environment"]) | {"BRANDLOOP_PROJECT_DIR"}
    assert set(bootstrap.required_variables(prefect_file, ["dev"])) <= boot_env
    assert "BRANDLOOP_PROJECT_DIR=/opt/brandloop" in DOCKERFILE.read_text()
    # And the worker serves the pool dev deploys to
    pools = bootstrap.work_pool_names(prefect_file, "dev")
    command = services["worker"]["command"]
    assert command[command.index("--pool") + 1] in pools
    # And the label trigger starts train-ner for the same environment
    trigger = services["label-trigger"]["command"]
    assert trigger[trigger.index("--env") + 1] == "dev"
    assert "deployments.label_trigger" in trigger
    # And the REST API serves the champion of the same tracking server, token from .env
    serving = services["serving"]["environment"]
    assert services["serving"]["command"][-1] == "apps.serving"
    assert serving["NER_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "NER_SERVE_MODEL" not in serving  # derived from NER_ENV: dev's champion
    assert load_settings(env=serving["NER_ENV"]).serve_model == "models:/brand-ner-dev@champion"
    assert serving["NER_SERVE_API_KEY"] == "${SERVE_API_KEY}"
    # And the ML backend serves the same champion to Label Studio, behind Basic auth
    backend = services["ml-backend"]
    assert backend["command"][2] == "apps.ml_backend"
    assert backend["environment"]["NER_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert backend["environment"]["NER_ENV"] == serving["NER_ENV"]
    assert backend["environment"]["NER_ML_BACKEND_PASSWORD"] == "${ML_BACKEND_PASSWORD}"
    assert services["label-studio"]["environment"]["ML_BLOCK_LOCAL_IP"] == "false"


def test_compose_files_it_mounts_and_builds_exist(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = (COMPOSE.parent / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), (name, volume)
            else:
                assert source in named, (name, volume)


# --- Dockerfile -----------------------------------------------------------------------------
def _instructions(path: Path) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", path.read_text())
    lines = [ln.strip() for ln in joined.splitlines()]
    return [
        (ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "")
        for ln in lines
        if ln and not ln.startswith("#")
    ]


def test_flows_dockerfile_builds_from_the_lock_file() -> None:
    steps = _instructions(DOCKERFILE)
    assert steps[0] == ("FROM", "python:3.11-slim")
    copies = [args.split() for op, args in steps if op == "COPY"]
    sources = [src for args in copies for src in args[:-1] if not src.startswith("--")]
    # Then everything it copies exists in the project (paths relative to the build context)
    for src in sources:
        assert (ROOT / src).exists(), src
    assert {"uv.lock", "pyproject.toml", "ner/", "flows/", "prefect.yaml"} <= set(sources)
    runs = " ".join(args for op, args in steps if op == "RUN")
    # And it installs uv (pinned) and the locked environment without dev dependencies
    assert re.search(r"uv==\d+\.\d+\.\d+", runs)
    assert runs.count("uv sync --locked --no-dev") == 2
    # And the lock copy comes before the first sync, the code after it (layer caching)
    order = [op + " " + args for op, args in steps]
    first_sync = next(i for i, s in enumerate(order) if "uv sync" in s)
    lock_copy = next(i for i, s in enumerate(order) if s.startswith("COPY") and "uv.lock" in s)
    code_copy = next(i for i, s in enumerate(order) if s.startswith("COPY ner/"))
    assert lock_copy < first_sync < code_copy
    workdir = next(args for op, args in steps if op == "WORKDIR")
    assert f"BRANDLOOP_PROJECT_DIR={workdir}" in DOCKERFILE.read_text()


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    ignored = {
        ln.strip().rstrip("/")
        for ln in (DEPLOYMENTS / "Dockerfile.dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    }
    copies = [args.split()[:-1] for op, args in _instructions(DOCKERFILE) if op == "COPY"]
    for src in (s.rstrip("/") for args in copies for s in args):
        assert src not in ignored, src
    assert {".venv", ".git", ".env"} <= ignored


def test_mlflow_dockerfile_adds_the_postgres_driver() -> None:
    steps = _instructions(DEPLOYMENTS / "mlflow.Dockerfile")
    assert steps[0][0] == "FROM" and steps[0][1].startswith("ghcr.io/mlflow/mlflow:v3.17.2")
    assert any(op == "RUN" and "psycopg2" in args for op, args in steps)


def test_the_bootstrap_names_the_prefect_api_it_needs_and_why_a_variable_is_unusable(
    prefect_file: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.support.servers import free_port

    environ = usable_values(bootstrap.required_variables(prefect_file, ["dev"]))
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    # Given no PREFECT_API_URL (a trial's bootstrap deployed into a temporary database)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        # Then even a --no-deploy run refuses, naming the variable, before creating anything
        assert bootstrap.main(["--env", "dev", "--no-deploy"]) == 1
    assert "PREFECT_API_URL is not set" in capsys.readouterr().err  # the log goes to stderr
    # Given an API where nothing listens: the error names it (a trial saw a 78-line trace)
    dead = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: dead}):
        assert bootstrap.main(["--env", "dev", "--no-deploy"]) == 1
    assert f"no Prefect API answers at PREFECT_API_URL={dead}" in capsys.readouterr().err
    # Given an invalid variable, a deploy says why, as --check does (it listed names only)
    monkeypatch.setenv("BRANDLOOP_DEV_MLFLOW_TRACKING_URI", "mlflow.db")
    assert bootstrap.main(["--env", "dev"]) == 1
    said = capsys.readouterr()
    assert said.out.startswith("invalid: BRANDLOOP_DEV_MLFLOW_TRACKING_URI=")
    assert "PREFECT_API_URL" not in said.err  # the variables are said first
    # and --no-deploy, which deploys nothing, does not need the deploy-time variables
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert bootstrap.main(["--env", "dev", "--no-deploy"]) == 1
    said = capsys.readouterr()
    assert "PREFECT_API_URL is not set" in said.err and "invalid" not in said.out


def test_the_cli_check_fails_as_the_deploy_would_without_a_prefect_api(
    prefect_file: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    from apps import cli

    # Given every dev variable set, and no Prefect API (a trial's `brandloop deploy --check`
    # printed "a deploy would be refused" and exited 0, where the module's check exits 1)
    for name, value in usable_values(bootstrap.required_variables(prefect_file, ["dev"])).items():
        monkeypatch.setenv(name, value)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = CliRunner().invoke(cli.app, ["deploy", "--env", "dev", "--check"])
    # Then it fails, in one error line that says why
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines() == ["every deploy-time variable is set"]
    said = " ".join(result.stderr.split())
    assert said.startswith("error: PREFECT_API_URL is not set: the work pools, Secret blocks")
    assert said.endswith("a deploy would be refused")
