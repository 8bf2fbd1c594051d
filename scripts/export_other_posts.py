#!/usr/bin/env python3
"""Write the demo's posts of other topics: the WNUT-17 train texts, without and with labels.

``brandloop demo`` trains its champion on synthetic beauty posts, in which nearly every
capitalised word is a brand. These 3,394 real posts (tweets of 2010-2017: people, places,
events, products) are the pool its recipe draws **hard negatives** from
(``train.negatives_uri``, :func:`ner.rehearsal.hard_negatives`), so that the champion learns
that a capitalised word is not a brand by itself. Only the text is kept (tokens joined by
single spaces, as ``bench/wnut.py`` reads them); ids are ``wnut17-train-NNNNN``.

The same posts **with** their brands (WNUT-17's ``corporation`` and ``product`` entities as
``BRAND``, as ``bench/wnut.py`` maps them) go to ``other_gold_export.json``, a Label Studio
JSON export (:func:`ner.labelstudio.export.annotations_to_export`): the demo's rehearsal set
(``train.rehearsal_uri``, :func:`ner.rehearsal.rehearsal_set`), trained beside the beauty
labels so the champion keeps what a brand looks like in other posts.

Source: WNUT-17 Emerging Entities, ``wnut17train.conll`` (Derczynski et al. 2017),
CC-BY 4.0; see ``ner/resources/ATTRIBUTION.md``. WNUT-17 dev, on which the benchmark scores
the demo champion, is not used.

Usage::

    python scripts/export_other_posts.py [DATA_DIR] [--out FILE] [--export EXPORT]

``DATA_DIR`` defaults to ``../shared/data``; ``FILE`` to
``ner/resources/demo/other_posts.jsonl``, ``EXPORT`` (``--export``) to
``ner/resources/demo/other_gold_export.json``. The output is deterministic.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.wnut import load_split  # noqa: E402
from ner.labelstudio.config import LabelConfig  # noqa: E402
from ner.labelstudio.export import annotations_to_export  # noqa: E402

DEMO = ROOT / "ner" / "resources" / "demo"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=DEMO / "other_posts.jsonl")
    parser.add_argument("--export", type=Path, default=DEMO / "other_gold_export.json")
    args = parser.parse_args(argv)
    posts = load_split(args.data_dir, "train")
    with args.out.open("w", encoding="utf-8", newline="\n") as handle:
        for post in posts:
            record = {"id": post.post_id, "text": post.text, "source": "wnut17"}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"{len(posts)} posts -> {args.out}")
    tasks = annotations_to_export(posts, LabelConfig.for_labels(["BRAND"]))
    for task in tasks:  # no annotator, no time: the file depends on the data alone
        for annotation in task["annotations"]:
            annotation.pop("completed_by", None)
            annotation.pop("updated_at", None)
    text = json.dumps(tasks, ensure_ascii=False, separators=(",", ":"))
    args.export.write_text(text + "\n", encoding="utf-8", newline="\n")
    spans = sum(len(t["annotations"][0]["result"]) for t in tasks)
    print(f"{len(tasks)} posts, {spans} brand spans -> {args.export}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
