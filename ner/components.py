"""spaCy components that brandloop adds to pipelines.

Registered through the ``spacy_factories`` entry point in ``pyproject.toml``, so any process
with brandloop installed can ``spacy.load`` (or ``mlflow.spacy.load_model``) a saved
pipeline that contains them, without importing this module first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from spacy.language import Language
from spacy.tokens import Doc, Span

LABEL_FILTER = "brandloop_labels"


class LabelFilter:
    """Map entity labels onto ours and drop the rest.

    ``mapping`` renames labels (``{"ORG": "BRAND"}``); entities whose (mapped) label is not
    in ``keep`` are removed. Run it after every component that sets ``doc.ents``.
    """

    def __init__(self, mapping: Mapping[str, str], keep: Sequence[str]) -> None:
        self.mapping = dict(mapping)
        self.keep = frozenset(keep)

    def __call__(self, doc: Doc) -> Doc:
        ents: list[Span] = []
        for ent in doc.ents:
            label = self.mapping.get(ent.label_, ent.label_)
            if label not in self.keep:
                continue
            if label != ent.label_:
                ent = Span(doc, ent.start, ent.end, label=label)
            ents.append(ent)
        doc.ents = ents
        return doc


def make_label_filter(
    nlp: Language, name: str, mapping: dict[str, str], keep: list[str]
) -> LabelFilter:
    """spaCy factory for :class:`LabelFilter`."""
    return LabelFilter(mapping, keep)


if LABEL_FILTER not in Language.factories:  # also reachable through the entry point
    Language.factory(LABEL_FILTER, default_config={"mapping": {}, "keep": ["BRAND"]})(
        make_label_filter
    )
