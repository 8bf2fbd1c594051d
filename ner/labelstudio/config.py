"""The labelling config: built and read with the SDK's ``LabelInterface``.

:func:`label_config` builds the config brandloop creates projects with (one ``<Labels>``
control named ``label`` over one ``<Text>`` object named ``text`` reading ``$text``).
:func:`parse_label_config` reads ``from_name`` / ``to_name`` / the text field back from any
project's config, so results are written and read with the project's own names.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from xml.etree.ElementTree import ParseError, canonicalize

from label_studio_sdk._legacy.exceptions import LabelStudioXMLSyntaxErrorSentryIgnored
from label_studio_sdk.label_interface import LabelInterface
from label_studio_sdk.label_interface.control_tags import ControlTag
from label_studio_sdk.label_interface.create import labels as labels_tag

from ner.errors import LabelStudioError

log = logging.getLogger(__name__)

#: Name of the ``<Labels>`` control and of the ``<Text>`` object brandloop generates.
CONTROL_NAME = "label"
OBJECT_NAME = "text"


@dataclass(frozen=True, slots=True)
class LabelConfig:
    """What a project's labelling config says about its span labels.

    ``from_name`` is the ``name`` of the ``<Labels>`` control, ``to_name`` the ``name`` of the
    ``<Text>`` object it is bound to, ``labels`` the ``<Label value=…>`` list and ``text_key``
    the task ``data`` field the text is read from (``"text"`` for ``value="$text"``).
    """

    from_name: str
    to_name: str
    labels: tuple[str, ...]
    text_key: str = "text"

    @classmethod
    def for_labels(cls, labels: Sequence[str]) -> LabelConfig:
        """The config :func:`label_config` generates for ``labels``, already parsed."""
        return parse_label_config(label_config(labels))


def _check_labels(labels: Sequence[str]) -> list[str]:
    if isinstance(labels, str):
        raise LabelStudioError("labels must be a sequence of label names, not one string")
    if not labels:
        raise LabelStudioError("cannot build a labelling config without labels")
    seen: set[str] = set()
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise LabelStudioError(f"invalid label {label!r}: labels must be non-empty strings")
        if label in seen:
            raise LabelStudioError(f"label {label!r} is listed twice")
        seen.add(label)
    return list(labels)


def label_config(labels: Sequence[str]) -> str:
    """Label Studio XML config with one ``<Labels>`` control over one ``<Text>`` object.

    Built by ``LabelInterface.create``: the control is named ``label``, the object ``text``
    and it reads ``$text``; every label becomes a ``<Label value=…/>`` (XML-escaped). Raises
    :class:`LabelStudioError` for an empty list, a blank label or a label listed twice.
    """
    tags = {CONTROL_NAME: labels_tag(_check_labels(labels)), OBJECT_NAME: "Text"}
    return str(LabelInterface.create(tags, pretty=False))


def is_generated(xml: str) -> bool:
    """Whether ``xml`` is a config :func:`label_config` makes (for its own labels).

    Compared canonically (C14N), so a config written by an older brandloop, with another
    spelling of the same XML, still counts as generated.
    """
    try:
        labels = parse_label_config(xml).labels
        return canonicalize(xml, strip_text=True) == canonicalize(
            label_config(labels), strip_text=True
        )
    except (LabelStudioError, ParseError):
        return False


def _interface(xml: str) -> LabelInterface:
    try:
        return LabelInterface(xml)
    except LabelStudioXMLSyntaxErrorSentryIgnored as exc:
        raise LabelStudioError(f"the labelling config is not valid XML: {exc}") from exc


def _text_binding(control: ControlTag, texts: dict[str, str]) -> LabelConfig | None:
    """The control's config on the first ``<Text>`` it is bound to, if any."""
    if not control.name:
        return None
    for to_name in (name.strip() for name in control.to_name or []):
        if to_name not in texts:
            continue
        value = texts[to_name]
        if not value.startswith("$") or len(value) < 2:
            raise LabelStudioError(
                f"<Text name={to_name!r}> has value={value!r}; expected a task field "
                'such as value="$text"'
            )
        return LabelConfig(control.name, to_name, tuple(control.labels or ()), value[1:])
    return None


def parse_label_config(xml: str) -> LabelConfig:
    """Read the first ``<Labels>`` control bound to a ``<Text>`` object from a project config.

    ``toName`` may list several objects separated by commas; the first one that is a ``<Text>``
    is used. Raises :class:`LabelStudioError` when the XML does not parse, when no ``<Labels>``
    is bound to a ``<Text>``, or when that ``<Text>`` does not read a ``$field`` of the task.
    """
    interface = _interface(xml)
    texts = {tag.name: str(tag.value or "") for tag in interface.objects or [] if tag.tag == "Text"}
    found = [
        config
        for control in interface.controls or []
        if control.tag == "Labels" and (config := _text_binding(control, texts)) is not None
    ]
    if not found:
        raise LabelStudioError(
            "the labelling config has no <Labels> control bound to a <Text> object "
            f"(Text objects: {sorted(texts) or 'none'})"
        )
    if len(found) > 1:
        log.info(
            "labelling config has %d <Labels> controls on Text; using %r",
            len(found),
            found[0].from_name,
        )
    return found[0]
