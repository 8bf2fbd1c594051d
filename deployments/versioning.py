"""Version names for deploys: one scheme per environment, each a valid Docker tag and
Prefect deployment version (``[a-z0-9_][a-z0-9_.-]*``, at most 128 characters).

=========  ==============  =====================================  ==========================
env        deployed from   version                                example
=========  ==============  =====================================  ==========================
dev        any branch      ``<branch>-<YYYYmmdd-HHMMSS>``         ``feat-emoji-20261129-213000``
staging    ``main``        ``<YYYYmmdd-HHMMSS>``                  ``20261129-213000``
prod       a tag           the tag                                ``v1.4.0``
=========  ==============  =====================================  ==========================

Times are UTC. A branch name is lowercased, each run of other characters than ``a-z0-9._-``
(slashes included) becomes one ``-``, and a name longer than :data:`MAX_NAME` is cut and ends
with 8 hex characters of its SHA-256, so two long branches never share a version.

``python -m deployments.versioning --env dev`` prints ``version=<version>`` (the line the
workflows append to ``$GITHUB_OUTPUT``), reading the ref from GitHub's ``GITHUB_REF_NAME`` and
``GITHUB_REF_TYPE`` unless ``--ref``/``--ref-type`` are given. ``prefect.yaml`` reads the
version from ``BRANDLOOP_VERSION`` at deploy time; :func:`with_default_version` fills it with
``local-<YYYYmmdd-HHMMSS>`` for deploys made by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from ner.errors import ConfigError

#: The variable ``prefect.yaml`` reads the deployment version from.
VERSION_VARIABLE = "BRANDLOOP_VERSION"
#: Longest branch or tag part of a version (a Docker tag may hold 128 characters).
MAX_NAME = 96
STAMP_FORMAT = "%Y%m%d-%H%M%S"
STAGING_BRANCH = "main"
_OTHER = re.compile(r"[^a-z0-9._-]+")
#: What Docker accepts as a tag; our versions are the lowercase subset of it.
DOCKER_TAG = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,127}$")


class Environment(StrEnum):
    DEV = "dev"
    STAGING = "staging"
    PROD = "prod"


class RefType(StrEnum):
    BRANCH = "branch"
    TAG = "tag"


@dataclass(frozen=True)
class Ref:
    """The git ref a deploy is made from (GitHub's ``GITHUB_REF_NAME``/``GITHUB_REF_TYPE``)."""

    name: str
    type: RefType

    def __str__(self) -> str:
        return f"{self.type} {self.name!r}"


def slug(name: str, max_length: int = MAX_NAME) -> str:
    """``name`` as a Docker-tag-safe piece: lowercase, other runs -> ``-``, trimmed, cut.

    Raises :class:`ConfigError` when nothing usable is left (e.g. ``"///"``).
    """
    text = _OTHER.sub("-", name.lower()).strip(".-")
    if not text:
        raise ConfigError(f"ref {name!r} has no letter or digit to name a version with")
    if len(text) > max_length:
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
        text = f"{text[: max_length - 9].rstrip('.-')}-{digest}"
    return text


def stamp(now: datetime) -> str:
    """``now`` in UTC as ``YYYYmmdd-HHMMSS``; a naive ``now`` is taken as UTC."""
    aware = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime(STAMP_FORMAT)


def deploy_version(env: Environment, ref: Ref, now: datetime) -> str:
    """The version of a deploy of ``ref`` to ``env`` at ``now`` (see the module table).

    Raises :class:`ConfigError` when ``env`` is not deployed from such a ref: staging only
    from the ``main`` branch, prod only from a tag.
    """
    if env is Environment.DEV:
        return f"{slug(ref.name)}-{stamp(now)}"
    if env is Environment.STAGING:
        if ref != Ref(STAGING_BRANCH, RefType.BRANCH):
            raise ConfigError(f"staging deploys from the {STAGING_BRANCH} branch, not {ref}")
        return stamp(now)
    if ref.type is not RefType.TAG:
        raise ConfigError(f"prod deploys from a tag, not {ref}")
    return slug(ref.name)


def with_default_version(environ: Mapping[str, str], now: datetime | None = None) -> dict[str, str]:
    """A copy of ``environ`` whose :data:`VERSION_VARIABLE` is set: kept when given, else
    ``local-<YYYYmmdd-HHMMSS>`` (a deploy made by hand, outside the workflows)."""
    values = dict(environ)
    if not values.get(VERSION_VARIABLE, "").strip():
        values[VERSION_VARIABLE] = f"local-{stamp(now or datetime.now(UTC))}"
    return values


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deployments.versioning --env ENV``: print ``version=<version>``."""
    parser = argparse.ArgumentParser(
        prog="python -m deployments.versioning", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--env", required=True, choices=[e.value for e in Environment])
    parser.add_argument("--ref", default=os.environ.get("GITHUB_REF_NAME"))
    parser.add_argument(
        "--ref-type",
        default=os.environ.get("GITHUB_REF_TYPE", RefType.BRANCH.value),
        choices=[t.value for t in RefType],
    )
    parser.add_argument("--now", type=datetime.fromisoformat, default=None, help="ISO time")
    args = parser.parse_args(argv)
    if not args.ref:
        parser.error("no ref: pass --ref or set GITHUB_REF_NAME")
    ref = Ref(args.ref, RefType(args.ref_type))
    try:
        version = deploy_version(Environment(args.env), ref, args.now or datetime.now(UTC))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"version={version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
