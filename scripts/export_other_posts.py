#!/usr/bin/env python3
"""Write the demo's posts of other topics: the WNUT-17 train texts, without their labels.

``brandloop demo`` trains its champion on synthetic beauty posts, in which nearly every
capitalised word is a brand. These 3,394 real posts (tweets of 2010-2017: people, places,
events, products) are the pool its recipe draws **hard negatives** from
(``train.negatives_uri``, :func:`ner.rehearsal.hard_negatives`), so that the champion learns
that a capitalised word is not a brand by itself. Only the text is kept (tokens joined by
single spaces, as ``bench/wnut.py`` reads them); ids are ``wnut17-train-NNNNN``.

Source: WNUT-17 Emerging Entities, ``wnut17train.conll`` (Derczynski et al. 2017),
CC-BY 4.0; see ``ner/resources/ATTRIBUTION.md``. WNUT-17 dev, on which the benchmark scores
the demo champion, is not used.

Usage::

    python scripts/export_other_posts.py [DATA_DIR] [--out FILE]

``DATA_DIR`` defaults to ``../shared/data``; ``FILE`` to
``ner/resources/demo/other_posts.jsonl``. The output is deterministic.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.wnut import load_split  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "ner" / "resources" / "demo" / "other_posts.jsonl"
    )
    args = parser.parse_args(argv)
    posts = load_split(args.data_dir, "train")
    with args.out.open("w", encoding="utf-8", newline="\n") as handle:
        for post in posts:
            record = {"id": post.post_id, "text": post.text, "source": "wnut17"}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"{len(posts)} posts -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
