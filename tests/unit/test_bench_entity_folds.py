"""The brand-disjoint cross-validation folds of the recipe experiments (pure logic)."""

from __future__ import annotations

from bench.experiments.data import entity_folds
from ner.types import Annotation, Span


def _post(number: int, *brands: str) -> Annotation:
    text, spans = "", []
    for brand in brands:
        text += "love "
        spans.append(Span(len(text), len(text) + len(brand), "BRAND", brand))
        text += brand + " "
    return Annotation(post_id=f"p{number}", text=text or "no brand here", spans=tuple(spans))


def test_no_held_out_brand_is_trained_on_and_every_post_has_one_place_at_most() -> None:
    names = ["Nike", "nike", "Apple", "Sephora", "Glossier", "Fenty", "Dior", "Lenovo", "Xbox"]
    posts = [_post(i, names[i % 9], names[(i * 4) % 9]) for i in range(60)]
    posts += [_post(100 + i) for i in range(30)]  # brand-less
    held_total = 0
    for k in range(3):
        rest, held = entity_folds(posts, k)
        trained = {s.text.lower() for p in rest for s in p.spans}
        scored = {s.text.lower() for p in held for s in p.spans}
        assert trained and scored and not trained & scored  # "Nike" and "nike" are one brand
        assert len({p.post_id for p in rest} & {p.post_id for p in held}) == 0
        assert sum(1 for p in held if not p.spans) == 10  # brand-less posts by position
        held_total += len(held)
    # each post with brands is held out once at most (mixed posts are in no fold)
    assert held_total <= len(posts)
