"""Reading WNUT-17 CoNLL into brand annotations (bench.wnut)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.wnut import BRAND_TYPES, load_split, read_wnut
from ner.errors import DataError


def write_conll(path: Path, posts: list[list[tuple[str, str]]], separator: str = "") -> Path:
    blocks = ["\n".join(f"{token}\t{tag}" for token, tag in post) for post in posts]
    path.write_text(f"\n{separator}\n".join(blocks) + "\n", encoding="utf-8")
    return path


POSTS = [
    [
        ("Loving", "O"),
        ("my", "O"),
        ("HTC", "B-product"),
        ("Desire", "I-product"),
        ("Z", "I-product"),
        ("from", "O"),
        ("Best", "B-corporation"),
        ("Buy", "I-corporation"),
        ("with", "O"),
        ("Anna", "B-person"),
    ],
    [("nothing", "O"), ("here", "O"), ("😀", "O")],
    [("#Vh1", "B-corporation"), ("rocks", "O")],
]


def test_brand_spans_get_exact_offsets_into_the_single_spaced_text(tmp_path: Path) -> None:
    # Given a CoNLL file with corporation, product and person entities
    path = write_conll(tmp_path / "tiny.conll", POSTS)

    # When it is read with the default types
    parsed = read_wnut(path)

    # Then the text is the tokens joined by one space and brands are exact spans
    first = parsed.records[0]
    assert first.text == " ".join(token for token, _ in POSTS[0])
    assert [(s.text, s.label) for s in first.spans] == [
        ("HTC Desire Z", "BRAND"),
        ("Best Buy", "BRAND"),
    ]
    assert all(first.text[s.start : s.end] == s.text for s in first.spans)
    assert parsed.records[1].spans == ()
    assert [s.text for s in parsed.records[2].spans] == ["#Vh1"]
    assert parsed.rejected == [] and parsed.repaired == 0


def test_other_types_can_be_kept_under_their_own_label(tmp_path: Path) -> None:
    # Given the same file
    path = write_conll(tmp_path / "tiny.conll", POSTS)

    # When person is mapped too
    parsed = read_wnut(path, types={**BRAND_TYPES, "person": "PERSON"})

    # Then the person span appears with its label
    assert ("Anna", "PERSON") in [(s.text, s.label) for s in parsed.records[0].spans]


def test_ids_follow_the_position_of_the_post_and_the_prefix(tmp_path: Path) -> None:
    # Given a file whose posts are separated by a line holding only a tab
    path = write_conll(tmp_path / "emerging.dev.conll", POSTS, separator="\t")

    # When it is read without and with a prefix
    default = read_wnut(path)
    named = read_wnut(path, id_prefix="wnut17-dev")

    # Then ids are numbered from 1 in file order
    assert [a.post_id for a in default.records] == [
        "emerging-00001",
        "emerging-00002",
        "emerging-00003",
    ]
    assert named.records[2].post_id == "wnut17-dev-00003"


def test_extra_blank_lines_do_not_make_empty_posts(tmp_path: Path) -> None:
    # Given posts separated by several blank lines and a file ending without a newline
    path = tmp_path / "gaps.conll"
    path.write_text("a\tO\nb\tB-product\n\n\t\n\nc\tO", encoding="utf-8")

    # When it is read
    parsed = read_wnut(path)

    # Then there are exactly two posts
    assert [a.text for a in parsed.records] == ["a b", "c"]
    assert [s.text for s in parsed.records[0].spans] == ["b"]


def test_a_dangling_inside_tag_starts_a_span_and_is_counted(tmp_path: Path) -> None:
    # Given an I- tag after O, and an I- tag of another type after a span
    posts = [
        [("buy", "O"), ("Galaxy", "I-product"), ("S8", "I-product")],
        [("Apple", "B-corporation"), ("Watch", "I-product")],
    ]
    path = write_conll(tmp_path / "dangling.conll", posts)

    # When it is read
    parsed = read_wnut(path)

    # Then each I- run starts its own span and both posts count as repaired
    assert [s.text for s in parsed.records[0].spans] == ["Galaxy S8"]
    assert [s.text for s in parsed.records[1].spans] == ["Apple", "Watch"]
    assert parsed.repaired == 2


def test_a_malformed_post_is_rejected_by_line_and_the_others_are_kept(tmp_path: Path) -> None:
    # Given a file whose second post has a line without a tag and third post a bad tag
    path = tmp_path / "bad.conll"
    path.write_text("ok\tO\n\nbroken line\n\nx\tB-\n\nfine\tB-corporation\n", encoding="utf-8")

    # When it is read
    parsed = read_wnut(path)

    # Then the good posts are kept with their own numbers and the bad ones named
    assert [a.post_id for a in parsed.records] == ["bad-00001", "bad-00004"]
    assert [r.record_id for r in parsed.rejected] == ["bad-00002", "bad-00003"]
    assert "line 3" in parsed.rejected[0].reason
    assert "unknown tag" in parsed.rejected[1].reason


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_wnut(tmp_path / "absent.conll")


def test_load_split_refuses_an_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown WNUT-17 split"):
        load_split(tmp_path, "test")


def test_load_split_raises_on_a_damaged_copy(tmp_path: Path) -> None:
    # Given a wnut17 folder whose train file has a malformed post
    folder = tmp_path / "wnut17"
    folder.mkdir()
    (folder / "wnut17train.conll").write_text("a\tO\n\nno-tab-here\n", encoding="utf-8")

    # When the split is loaded, then the damage is reported, not skipped
    with pytest.raises(DataError, match="1 malformed post"):
        load_split(tmp_path, "train")


def test_shared_wnut17_matches_its_readme(shared_data: Path) -> None:
    # Given the shared WNUT-17 copy (its README: 3,394 train tweets with 363 brand spans,
    # 1,009 dev posts with 148)
    # When both splits are loaded
    train = load_split(shared_data, "train")
    dev = load_split(shared_data, "dev")

    # Then the counts agree and ids are unique per split and distinct across splits
    assert (len(train), sum(len(a.spans) for a in train)) == (3394, 363)
    assert (len(dev), sum(len(a.spans) for a in dev)) == (1009, 148)
    train_ids = {a.post_id for a in train}
    dev_ids = {a.post_id for a in dev}
    assert len(train_ids) == len(train) and len(dev_ids) == len(dev)
    assert not train_ids & dev_ids
