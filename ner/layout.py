"""Every storage and checkpoint key brandloop reads or writes, in one place.

Keys are relative, slash-separated paths inside an environment's root (see
:func:`ner.storage.open_storage`)::

    posts/<stamp>.jsonl                         a fetched batch of posts
    predictions/<stamp>.jsonl                   the batch's predictions
    predictions/<stamp>/shard-<i>.jsonl         one shard of them while predicting in parallel
    selections/<stamp>.json                     the posts active learning chose for labelling
    tasks/<stamp>.json                          Label Studio import JSON of the batch
    tasks/<stamp>.imported.json                 receipt of the batch's import through the API
    tasks/<stamp>.rejected.json                 posts of the batch that import did not send
    exports/<stamp>-ls-<project>[-<n>].json     immutable Label Studio export snapshots
    exports/<stamp>-replay.json                 the replay annotator's export
    livesets/ls-<project>.json                  the tasks and annotations alive at the last pull
    annotations/<stamp>.jsonl                   the annotations one training run pulled
    annotations/<stamp>.train.jsonl             its training pool (gold posts left out)
    <records>.rejected.json                     why records of <records>.jsonl were refused
    <records>.review.json                       posts held for review (annotators disagree)
    goldsets/<name>.json                        a frozen gold set record
    goldsets/<name>.annotations.jsonl           its annotations
    goldsets/CURRENT.json                       the name of the gold set in force (null
                                                once retired, with the retired one's name)
    goldsets/<name>/canary.json                 the canary set frozen with gold set <name>
    goldsets/<name>/canary.annotations.jsonl    its annotations
    checkpoints/…json                           where a source or a poller stopped
    leases/<stamp>/<epoch>.json                 who delivers batch <stamp> (ner.leases;
                                                deleted once it is delivered)
    quarantine/<key>                            an unreadable file moved aside (<key> its old key)
    quarantine/<key>.reason.json                why, when, its size and SHA-256
    forgotten/<stamp>.json                      posts forgotten by one run, and its audit
    indexes/fetched/<n>.json                    post ids and text digests of up to 64
                                                posts batches (ner.fetched: a cache of posts/)

A *stamp* names the objects of one run (``flows.context.run_stamp``). No other module formats
a key: it asks this one. Every function is pure string work.
"""

from __future__ import annotations

import re

POSTS = "posts"
PREDICTIONS = "predictions"
SELECTIONS = "selections"
TASKS = "tasks"
EXPORTS = "exports"
LIVE_SETS = "livesets"
ANNOTATIONS = "annotations"
GOLDSETS = "goldsets"
CHECKPOINTS = "checkpoints"
LEASES = "leases"
QUARANTINE = "quarantine"
FORGOTTEN = "forgotten"
INDEXES = "indexes"

_JSONL = ".jsonl"
_JSON = ".json"
_RECEIPT = ".imported.json"
_REJECTED = ".rejected.json"
_GOLD_ANNOTATIONS = ".annotations.jsonl"
_REASON = ".reason.json"

#: The folders that hold brandloop's own records; of its folders, only ``exports/`` takes
#: files a user puts there.
OWN_FOLDERS = (
    POSTS, PREDICTIONS, SELECTIONS, TASKS, LIVE_SETS, ANNOTATIONS, GOLDSETS, CHECKPOINTS,
    LEASES, QUARANTINE, FORGOTTEN, INDEXES,
)  # fmt: skip

#: The pointer to the gold set in force.
GOLD_SET_CURRENT = f"{GOLDSETS}/CURRENT.json"
#: The folder of the index of fetched posts (:mod:`ner.fetched`), one object per segment.
FETCHED_INDEX = f"{INDEXES}/fetched"
#: The X source's ``since_id``.
X_CHECKPOINT = f"{CHECKPOINTS}/x_since_id.json"


def own_folder(key: str) -> str | None:
    """The folder of :data:`OWN_FOLDERS` that ``key`` lies in, else None."""
    top = key.strip("/").split("/", 1)[0]
    return top if top in OWN_FOLDERS else None


# Batches -------------------------------------------------------------------------------------
def posts_batch(stamp: str) -> str:
    """``posts/<stamp>.jsonl``: the posts one run fetched."""
    return f"{POSTS}/{stamp}{_JSONL}"


def is_posts_batch(key: str) -> bool:
    """Whether ``key`` (as listed under :data:`POSTS`) is a batch written by the fetch step."""
    return key.startswith(f"{POSTS}/") and key.endswith(_JSONL) and key.count("/") == 1


def fetched_segment(number: int) -> str:
    """``indexes/fetched/<number>.json``: one segment of the index of fetched posts."""
    return f"{FETCHED_INDEX}/{number:06d}{_JSON}"


def fetched_segment_number(key: str) -> int | None:
    """The number of an index segment ``key`` (as listed under :data:`FETCHED_INDEX`), else
    None."""
    found = re.fullmatch(rf"{FETCHED_INDEX}/(\d+){re.escape(_JSON)}", key)
    return int(found.group(1)) if found else None


def batch_stamp(posts_key: str) -> str:
    """``<stamp>`` of ``posts/<stamp>.jsonl``."""
    return posts_key.removeprefix(f"{POSTS}/").removesuffix(_JSONL)


def predictions(stamp: str) -> str:
    """``predictions/<stamp>.jsonl``: one prediction per post of the batch, in its order."""
    return f"{PREDICTIONS}/{stamp}{_JSONL}"


def shard_part(predictions_key: str, index: int) -> str:
    """Where shard ``index`` of ``predictions_key`` is written before the shards are joined:
    ``predictions/<stamp>.jsonl`` -> ``predictions/<stamp>/shard-<index:05d>.jsonl``."""
    return f"{predictions_key.removesuffix(_JSONL)}/shard-{index:05d}{_JSONL}"


def shard_key(stamp: str, index: int) -> str:
    """:func:`shard_part` of the batch ``stamp``'s predictions."""
    return shard_part(predictions(stamp), index)


def selection(stamp: str) -> str:
    """``selections/<stamp>.json``: the posts of batch ``stamp`` chosen for labelling."""
    return f"{SELECTIONS}/{stamp}{_JSON}"


def is_selection(key: str) -> bool:
    """Whether ``key`` (as listed under :data:`SELECTIONS`) is a selection record."""
    return key.endswith(_JSON)


def tasks_import(stamp: str) -> str:
    """``tasks/<stamp>.json``: Label Studio import JSON of batch ``stamp``."""
    return f"{TASKS}/{stamp}{_JSON}"


def import_receipt(stamp: str) -> str:
    """``tasks/<stamp>.imported.json``: batch ``stamp`` went to Label Studio by its API."""
    return f"{TASKS}/{stamp}{_RECEIPT}"


def import_rejected(stamp: str) -> str:
    """``tasks/<stamp>.rejected.json``: the posts of batch ``stamp`` its import through the
    API did not send (their id is in the project with another text)."""
    return f"{TASKS}/{stamp}{_REJECTED}"


def delivered_stamp(tasks_key: str) -> str | None:
    """The batch stamp a key under :data:`TASKS` marks as delivered (an import file or an
    import receipt), else ``None``."""
    if not tasks_key.endswith(_JSON) or tasks_key.endswith(_REJECTED):
        return None
    name = tasks_key.removeprefix(f"{TASKS}/")
    return name.removesuffix(_RECEIPT) if name.endswith(_RECEIPT) else name.removesuffix(_JSON)


# Label Studio exports --------------------------------------------------------------------
def export_snapshot(stamp: str, project_id: int, attempt: int = 1) -> str:
    """``exports/<stamp>-ls-<project>[-<attempt>].json``: one export of a Label Studio
    project (``-2``, ``-3`` … when the stamp was used already)."""
    suffix = "" if attempt == 1 else f"-{attempt}"
    return f"{EXPORTS}/{stamp}-ls-{project_id}{suffix}{_JSON}"


def export_snapshot_pattern(project_id: int) -> re.Pattern[str]:
    """Matches :func:`export_snapshot` keys of ``project_id``: groups stamp and attempt
    (``None`` for the first)."""
    return re.compile(rf"^{re.escape(EXPORTS)}/(.+)-ls-{project_id}(?:-(\d+))?\.json$")


def export_snapshot_project(key: str) -> int | None:
    """The project id of an :func:`export_snapshot` key, else ``None``."""
    match = _ANY_SNAPSHOT.match(key)
    return None if match is None else int(match.group(1))


_ANY_SNAPSHOT = re.compile(rf"^{re.escape(EXPORTS)}/.+-ls-(\d+)(?:-\d+)?\.json$")


def live_set(project_id: int) -> str:
    """``livesets/ls-<project>.json``: the (task, annotation) ids a Label Studio project held
    at its last pull, overwritten by each pull (deleted labels are absent from it)."""
    return f"{LIVE_SETS}/ls-{project_id}{_JSON}"


def replay_export(stamp: str) -> str:
    """``exports/<stamp>-replay.json``: the replay annotator's answer to run ``stamp``."""
    return f"{EXPORTS}/{stamp}-replay{_JSON}"


def is_export(key: str) -> bool:
    """Whether ``key`` (as listed under :data:`EXPORTS`) is an export snapshot."""
    return key.endswith(_JSON)


#: Endings of partial copies (browsers', ``gsutil``'s, ``rsync``'s): not yet a file to read.
_PARTIAL = (".tmp", ".part", ".partial", ".crdownload", ".gstmp")


def is_other_export(key: str) -> bool:
    """Whether ``key`` (as listed under :data:`EXPORTS`) is a file of another format that
    someone put there (``export.csv``): a pull sets it aside, named, rather than ignore it.
    Hidden names and partial copies are not."""
    name = key.removeprefix(f"{EXPORTS}/")
    return (
        key.startswith(f"{EXPORTS}/")
        and "/" not in name
        and not is_export(key)
        and not name.startswith(".")
        and not name.endswith(_PARTIAL)
    )


def rejected_report(records_key: str) -> str:
    """``<records>.rejected.json`` next to ``<records>.jsonl``: the records refused while
    writing it, with their reasons."""
    return f"{records_key.removesuffix(_JSONL)}{_REJECTED}"


def is_rejected_report(key: str) -> bool:
    """Whether ``key`` is a :func:`rejected_report`."""
    return key.endswith(_REJECTED)


def review_report(records_key: str) -> str:
    """``<records>.review.json`` next to ``<records>.jsonl``: the posts held out of it for
    review because their annotators disagree (``ner.agreement``)."""
    return f"{records_key.removesuffix(_JSONL)}.review{_JSON}"


# Annotations and gold sets ----------------------------------------------------------------
def pulled_annotations(stamp: str) -> str:
    """``annotations/<stamp>.jsonl``: the annotations training run ``stamp`` pulled."""
    return f"{ANNOTATIONS}/{stamp}{_JSONL}"


def is_pulled_annotations(key: str) -> bool:
    """Whether ``key`` (as listed under :data:`ANNOTATIONS`) is what a run pulled."""
    name = key.removeprefix(f"{ANNOTATIONS}/")
    return name != key and "/" not in name and name.endswith(_JSONL) and not is_training_pool(key)


def training_pool(stamp: str) -> str:
    """``annotations/<stamp>.train.jsonl``: run ``stamp``'s training pool."""
    return f"{ANNOTATIONS}/{stamp}.train{_JSONL}"


def is_training_pool(key: str) -> bool:
    """Whether ``key`` (as listed under :data:`ANNOTATIONS`) is a run's training pool."""
    return key.startswith(f"{ANNOTATIONS}/") and key.endswith(f".train{_JSONL}")


# Gold sets --------------------------------------------------------------------------------
def gold_set(name: str) -> str:
    """``goldsets/<name>.json``: the frozen gold set record ``name``."""
    return f"{GOLDSETS}/{name}{_JSON}"


def gold_set_annotations(name: str) -> str:
    """``goldsets/<name>.annotations.jsonl``: the annotations of gold set ``name``."""
    return f"{GOLDSETS}/{name}{_GOLD_ANNOTATIONS}"


def canary_set(gold_name: str) -> str:
    """``goldsets/<name>/canary.json``: the canary set frozen with gold set ``name`` (its
    rule and post ids)."""
    return f"{GOLDSETS}/{gold_name}/canary{_JSON}"


def canary_set_annotations(gold_name: str) -> str:
    """``goldsets/<name>/canary.annotations.jsonl``: the canary set's annotations."""
    return f"{GOLDSETS}/{gold_name}/canary{_GOLD_ANNOTATIONS}"


def canary_set_gold_name(key: str) -> str | None:
    """The gold set name of a canary set record key (``goldsets/<name>/canary.json``), else
    ``None``."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != GOLDSETS or parts[2] != f"canary{_JSON}":
        return None
    return parts[1]


def gold_set_name(key: str) -> str | None:
    """The name of a gold set record key (as listed under :data:`GOLDSETS`), else ``None``
    (annotations, the pointer, anything nested)."""
    if key == GOLD_SET_CURRENT or not key.endswith(_JSON) or key.count("/") != 1:
        return None
    return key.removeprefix(f"{GOLDSETS}/").removesuffix(_JSON)


# Checkpoints ------------------------------------------------------------------------------
def jsonl_checkpoint(digest: str) -> str:
    """``checkpoints/jsonl-<digest>.json``: lines already read of one JSONL input."""
    return f"{CHECKPOINTS}/jsonl-{digest}{_JSON}"


def labelstudio_checkpoint(project_id: int, reader: str | None = None) -> str:
    """``checkpoints/labelstudio-<project>[-<reader>].json``: the labels already counted of a
    Label Studio project, by the export step (no ``reader``) or another poller
    (``"trigger"``, ``"feedback-loop"``), each with its own place."""
    suffix = "" if reader is None else f"-{reader}"
    return f"{CHECKPOINTS}/labelstudio-{project_id}{suffix}{_JSON}"


def export_watch_checkpoint() -> str:
    """``checkpoints/export-watch.json``: the export files the export watcher acted on."""
    return f"{CHECKPOINTS}/export-watch{_JSON}"


# Leases -----------------------------------------------------------------------------------
def lease_folder(name: str) -> str:
    """``leases/<name>``: the epochs of lease ``name`` (one per batch stamp)."""
    return f"{LEASES}/{name}"


def lease_epoch(folder: str, epoch: int) -> str:
    """``leases/<name>/<epoch:09d>.json``: one create-only epoch of a lease."""
    return f"{folder}/{epoch:09d}{_JSON}"


# Quarantine -------------------------------------------------------------------------------
def quarantined(key: str, attempt: int = 1) -> str:
    """``quarantine/<key>``: where the unreadable file ``key`` is moved aside (``-2``, ``-3``
    … before the extension when a file of that name was quarantined already). Outside
    :data:`EXPORTS`, so listings of exports never see it again."""
    if attempt == 1:
        return f"{QUARANTINE}/{key}"
    folder, _, name = key.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    renamed = f"{stem}-{attempt}.{ext}" if dot else f"{name}-{attempt}"
    return f"{QUARANTINE}/{folder}/{renamed}" if folder else f"{QUARANTINE}/{renamed}"


def quarantine_reason(quarantined_key: str) -> str:
    """``quarantine/<key>.reason.json``: why the file at ``quarantined_key`` was moved aside."""
    return f"{quarantined_key}{_REASON}"


def is_quarantine_reason(key: str) -> bool:
    """Whether ``key`` (as listed under :data:`QUARANTINE`) is a reason record."""
    return key.endswith(_REASON)


# Forgotten posts ---------------------------------------------------------------------------
def forget_record(stamp: str) -> str:
    """``forgotten/<stamp>.json``: the posts one forget run removed (a tombstone every reader
    honours) and its audit (:mod:`ner.forget`)."""
    return f"{FORGOTTEN}/{stamp}{_JSON}"


def is_forget_record(key: str) -> bool:
    """Whether ``key`` (as listed under :data:`FORGOTTEN`) is a forget record."""
    return key.startswith(f"{FORGOTTEN}/") and key.endswith(_JSON) and key.count("/") == 1


def is_records_file(key: str) -> bool:
    """Whether ``key`` is a JSONL records object (posts, predictions, annotations)."""
    return key.endswith(_JSONL)


def is_gold_set_annotations(key: str) -> bool:
    """Whether ``key`` (as listed under :data:`GOLDSETS`) holds a gold set's annotations."""
    return key.endswith(_GOLD_ANNOTATIONS)
