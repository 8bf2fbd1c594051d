"""The data brandloop ships: the brand gazetteer and the synthetic demo set in ner/resources."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import spacy

from ner.labelstudio.export import parse_export

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = PROJECT_ROOT / "scripts"
RESOURCES = Path(str(resources.files("ner") / "resources"))
DEMO = RESOURCES / "demo"
DEMO_FILES = ("posts.jsonl", "gold_export.json", "README.md")
POST_FIELDS = ("id", "text", "created_at", "author_id", "lang", "source", "query")


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def load_script(name: str) -> Any:
    """A script of ``scripts/`` imported as a module (they are not a package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def run_script(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def brands() -> list[str]:
    return read_lines(RESOURCES / "brands.txt")


@pytest.fixture(scope="module")
def exact_brands() -> list[str]:
    return read_lines(RESOURCES / "brands_case_sensitive.txt")


@pytest.fixture(scope="module")
def posts() -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_lines(DEMO / "posts.jsonl")]


@pytest.fixture(scope="module")
def tasks() -> list[dict[str, Any]]:
    data = json.loads((DEMO / "gold_export.json").read_text(encoding="utf-8"))
    assert isinstance(data, list)
    return data


def results(task: dict[str, Any]) -> list[dict[str, Any]]:
    (annotation,) = task["annotations"]
    return list(annotation["result"])


def order(name: str) -> tuple[str, str]:
    return (name.casefold(), name)


# ------------------------------------------------------------------------------ brand lists


def test_brand_list_is_non_empty_sorted_and_unique_ignoring_case(brands: list[str]) -> None:
    # given the shipped brands.txt (read above)
    # when it is compared with its own sorted, case-folded form
    folded = [name.casefold() for name in brands]
    # then it has hundreds of clean names, in order, none repeated in another casing
    print(f"brands.txt: {len(brands)} names")
    assert len(brands) >= 300
    assert brands == sorted(brands, key=order)
    assert len(set(folded)) == len(folded)
    assert all(name == name.strip() and len(name) >= 2 for name in brands)


def test_brand_list_contains_well_known_brands_of_both_sources(brands: list[str]) -> None:
    # given brands listed by the name-suggestion-index and by The Pudding's foundations
    from_nsi = ["Sephora", "The Body Shop", "Kiehl's", "Yves Rocher", "Superdrug"]
    from_pudding = ["Maybelline", "NARS", "Too Faced", "Charlotte Tilbury", "Fenty Beauty"]
    derived = ["Urban Decay", "Estee Lauder", "Huda"]  # suffix-stripped / ASCII spellings
    # when they are looked up case-insensitively
    known = {name.casefold() for name in brands}
    # then all are there
    missing = [n for n in from_nsi + from_pudding + derived if n.casefold() not in known]
    assert not missing


def test_common_words_are_only_in_the_case_sensitive_list(
    brands: list[str], exact_brands: list[str]
) -> None:
    # given words that are brands but mostly everyday English
    ambiguous = {"Benefit": "benefit", "Boots": "boots", "Lush": "lush", "MAC": "mac"}
    ambiguous["The Ordinary"] = "the ordinary"
    dropped = ["normal", "dm", "it", "rare"]  # stoplisted outright
    # when both lists are read
    folded = {name.casefold() for name in brands}
    # then the brand casing is matched exactly, the word itself never case-insensitively
    assert all(exact in exact_brands for exact in ambiguous)
    assert not folded & set(ambiguous.values())
    assert not folded & set(dropped)
    assert not {name.casefold() for name in exact_brands} & folded
    assert exact_brands == sorted(exact_brands, key=order)


def test_mainstream_brands_the_sources_lack_come_from_the_projects_list(
    brands: list[str], exact_brands: list[str]
) -> None:
    # given mainstream beauty brands neither licensed source lists (trial AM looked for them)
    wanted = ["Glossier", "CeraVe", "Drunk Elephant", "Laneige", "Tatcha", "Summer Fridays"]
    wanted += ["Glow Recipe", "La Roche-Posay", "Avene", "TRESemme"]  # + ASCII spellings
    # when the shipped lists are read
    known = {name.casefold() for name in brands}
    # then each is matched in any case; brands that are also words only as written, and the
    # short forms that would be words or people ("Fresh Beauty" -> "fresh") are not kept
    assert not [name for name in wanted if name.casefold() not in known]
    assert {"Dove", "ELF", "Living Proof", "Topicals", "Then I Met You"} <= set(exact_brands)
    stripped = {"fresh", "hero", "bubble", "kylie", "sally", "cult", "elf", "r.e.m.", "haus"}
    assert not known & (stripped | {"dove", "living proof", "topicals", "first aid"})


def test_written_list_skips_comments_and_a_missing_one_is_named(tmp_path: Path) -> None:
    # given the build script's reader and a list with a comment and a blank line
    module = load_script("build_brand_list")
    listed = tmp_path / "brands.txt"
    listed.write_text("# a comment\n\nGlossier\n  CeraVe \n", encoding="utf-8")
    # when it reads that list and one that does not exist
    names = list(module.written_names(listed))
    # then the names come back stripped, and the missing file is a SourceError naming it
    assert names == ["Glossier", "CeraVe"]
    with pytest.raises(module.SourceError, match=r"no-such\.txt"):
        list(module.written_names(tmp_path / "no-such.txt"))


def test_gazetteer_finds_the_added_brands_in_a_post() -> None:
    # given the cold-start gazetteer over the shipped lists
    from ner.models import build_gazetteer

    nlp = build_gazetteer().nlp
    # when it reads a post naming listed brands, one of them also an everyday word
    text = "my cerave cleanser, e.l.f. primer, ELF haul and Dove soap; a dove and an elf flew by"
    doc = nlp(text + " the Glossier shop")
    # then it finds the brands, in the brand's casing only for the words
    assert [ent.text for ent in doc.ents] == ["cerave", "e.l.f.", "ELF", "Dove", "Glossier"]


def test_consumer_brands_outside_beauty_are_listed_words_only_as_written(
    brands: list[str], exact_brands: list[str]
) -> None:
    # given brands of other sectors (scripts/mainstream_brands.txt), some of them also words
    anywhere = ["iPhone", "YouTube", "Starbucks", "Nike", "Toyota", "PlayStation", "Coca-Cola"]
    as_written = ["Apple", "Target", "Windows", "Coke", "Uber", "Subway", "Tesla", "Intel"]
    left_out = ["guess", "coach", "shell", "ford", "dell", "zara", "wendy's"]
    # when the shipped lists are read
    known = {name.casefold() for name in brands}
    # then the first are matched in any case, the words only as written, the rest not at all
    assert not [name for name in anywhere if name.casefold() not in known]
    assert set(as_written) <= set(exact_brands)
    assert not known & {name.casefold() for name in as_written}
    everywhere = known | {name.casefold() for name in exact_brands}
    assert not everywhere & set(left_out)


def test_gazetteer_tells_a_brand_from_the_word_in_a_post_of_another_topic() -> None:
    # given the cold-start gazetteer over the shipped lists
    from ner.models import build_gazetteer

    nlp = build_gazetteer().nlp
    # when it reads posts naming phone, drink and car brands, and the same words as words
    doc = nlp("got the new iphone at Target, then an apple and a coke at the subway station")
    cars = nlp("Uber to the Tesla dealer, uber cute; Guess who bought Nike Air Max")
    # then only the brands are found
    assert [ent.text for ent in doc.ents] == ["iphone", "Target"]
    assert [ent.text for ent in cars.ents] == ["Uber", "Tesla", "Nike"]


def test_brand_list_build_reproduces_the_shipped_files(shared_data: Path, tmp_path: Path) -> None:
    # given the shared gazetteer data
    # when the build script runs into an empty folder
    done = run_script(SCRIPTS / "build_brand_list.py", shared_data, "--out", tmp_path)
    # then it succeeds and writes exactly the committed lists
    assert done.returncode == 0, done.stderr
    for name in ("brands.txt", "brands_case_sensitive.txt"):
        assert (tmp_path / name).read_bytes() == (RESOURCES / name).read_bytes(), name


def test_posts_of_other_topics_are_rebuilt_exactly(shared_data: Path, tmp_path: Path) -> None:
    # given WNUT-17 train in the shared data
    # when the export script writes the pool and the rehearsal set into an empty folder
    pool, export = tmp_path / "other_posts.jsonl", tmp_path / "other_gold_export.json"
    args = (shared_data, "--out", pool, "--export", export)
    done = run_script(SCRIPTS / "export_other_posts.py", *args)
    # then both are exactly the committed files
    assert done.returncode == 0, done.stderr
    for path in (pool, export):
        assert path.read_bytes() == (RESOURCES / "demo" / path.name).read_bytes(), path.name


def test_brand_list_build_fails_clearly_without_data(tmp_path: Path) -> None:
    # given a data folder that does not exist
    missing = tmp_path / "no-such-data"
    # when the build script is pointed at it
    done = run_script(SCRIPTS / "build_brand_list.py", missing, "--out", tmp_path / "out")
    # then it exits with status 2, names the folder and writes nothing
    assert done.returncode == 2
    assert str(missing) in done.stderr and "does not exist" in done.stderr
    assert not (tmp_path / "out").exists()


def test_attribution_names_both_sources_and_their_licences() -> None:
    # given the attribution file
    text = (RESOURCES / "ATTRIBUTION.md").read_text(encoding="utf-8")
    # then both sources, their licences and the derived file are named
    for needle in ("name-suggestion-index", "BSD 3-Clause", "The Pudding", "MIT License"):
        assert needle in text
    assert "brands.txt" in text and "Redistributions in binary form" in text


# -------------------------------------------------------------------------------- demo posts


def test_demo_posts_are_valid_and_complete(posts: list[dict[str, Any]]) -> None:
    # given the demo posts (each line parsed as JSON by the fixture)
    ids = [post["id"] for post in posts]
    # then there are enough, each has every field, ids are unique 19-digit strings
    assert len(posts) >= 360
    assert len(set(ids)) == len(ids)
    for post in posts:
        assert set(POST_FIELDS) <= post.keys(), post
        assert re.fullmatch(r"[1-9]\d{18}", post["id"]), post["id"]
        assert re.fullmatch(r"\d+", post["author_id"]), post["author_id"]
        assert (post["lang"], post["source"], post["query"]) == ("en", "demo", "beauty")
        assert post["created_at"].endswith("Z")
        datetime.fromisoformat(post["created_at"])
        assert 5 <= len(post["text"].split()) <= 50, post["text"]


def test_demo_posts_look_like_real_posts(posts: list[dict[str, Any]]) -> None:
    # given all demo texts
    texts = [post["text"] for post in posts]
    # when the features of real posts are counted
    features = {
        "astral emoji": sum(any(ord(ch) > 0xFFFF for ch in t) for t in texts),
        "ZWJ sequence": sum("\u200d" in t for t in texts),
        "flag": sum(bool(re.search("[\U0001f1e6-\U0001f1ff]{2}", t)) for t in texts),
        "double space": sum("  " in t for t in texts),
        "t.co URL": sum(bool(re.search(r"https://t\.co/\w{10}", t)) for t in texts),
        "@handle": sum(bool(re.search(r"(?<!\w)@\w+", t)) for t in texts),
        "hashtag": sum(bool(re.search(r"(?<!\w)#\w+", t)) for t in texts),
        "all lower case": sum(t == t.lower() and any(c.isalpha() for c in t) for t in texts),
    }
    # then each appears in several posts
    assert all(count >= 5 for count in features.values()), features


# ----------------------------------------------------------------------------- gold export


def test_every_gold_span_matches_its_text(tasks: list[dict[str, Any]]) -> None:
    # given the Label Studio export
    # then each span is a BRAND region whose code-point offsets cut out value.text exactly
    spans = 0
    for task in tasks:
        text = task["data"]["text"]
        assert task["predictions"] == []
        (annotation,) = task["annotations"]
        assert annotation["was_cancelled"] is False and annotation["completed_by"] == 1
        for result in annotation["result"]:
            value = result["value"]
            assert (result["from_name"], result["to_name"], result["type"]) == (
                "label",
                "text",
                "labels",
            )
            assert value["labels"] == ["BRAND"]
            assert text[value["start"] : value["end"]] == value["text"], (task["id"], value)
            assert value["text"] == value["text"].strip()
            spans += 1
    assert spans >= 300


def test_gold_tasks_cover_every_post_with_the_same_text(
    posts: list[dict[str, Any]], tasks: list[dict[str, Any]]
) -> None:
    # given posts and tasks
    by_id = {post["id"]: post["text"] for post in posts}
    # when tasks are matched to posts by data.post_id
    task_texts = {task["data"]["post_id"]: task["data"]["text"] for task in tasks}
    # then there is one task per post, with the post's exact text, and task ids are unique
    assert len(tasks) == len(posts)
    assert task_texts == by_id
    assert len({task["id"] for task in tasks}) == len(tasks)


def test_a_quarter_of_posts_or_more_have_no_brand(tasks: list[dict[str, Any]]) -> None:
    # given the gold annotations
    # when posts without any span are counted
    empty = sum(not results(task) for task in tasks)
    # then they are between 25 % and 35 % of the posts
    assert 0.25 <= empty / len(tasks) <= 0.35


def test_handles_are_never_labelled_and_hashtag_spans_exclude_the_hash(
    tasks: list[dict[str, Any]],
) -> None:
    # given every span and every @handle in the texts
    labelled_tags = 0
    for task in tasks:
        text = task["data"]["text"]
        handles = [m.span() for m in re.finditer(r"(?<!\w)@\w+", text)]
        for result in results(task):
            start, end = result["value"]["start"], result["value"]["end"]
            # then no span overlaps a handle, and none starts with '#' or '@'
            assert not any(hs < end and start < he for hs, he in handles), text
            assert text[start] not in "#@"
            labelled_tags += text[start - 1 : start] == "#"
    # and some hashtags are labelled (the part after '#')
    assert labelled_tags >= 10


def test_near_miss_words_appear_unlabelled(tasks: list[dict[str, Any]]) -> None:
    # given common words that are also brand names
    words = ["glossy", "ordinary", "benefit", "milk", "dove", "lush", "boots"]
    found = dict.fromkeys(words, 0)
    for task in tasks:
        text = task["data"]["text"]
        labelled = [(r["value"]["start"], r["value"]["end"]) for r in results(task)]
        for word in words:
            for match in re.finditer(rf"\b{word}\b", text, flags=re.IGNORECASE):
                # when an occurrence lies outside every gold span
                if not any(s <= match.start() < e for s, e in labelled):
                    found[word] += 1
    # then each word is used in its everyday sense somewhere, unlabelled
    assert all(found.values()), found


def test_gold_spans_align_with_spacy_tokens(tasks: list[dict[str, Any]]) -> None:
    # given spaCy's English tokenizer (the models are token-based)
    nlp = spacy.blank("en")
    # when every gold span is mapped onto tokens
    misaligned = []
    for task in tasks:
        doc = nlp.make_doc(task["data"]["text"])
        for result in results(task):
            value = result["value"]
            if doc.char_span(value["start"], value["end"]) is None:
                misaligned.append(value["text"])
    # then each one starts and ends on a token boundary
    assert not misaligned


def test_gazetteer_knows_only_part_of_the_demo_brands(
    tasks: list[dict[str, Any]], brands: list[str]
) -> None:
    # given the span texts of the gold set and the case-insensitive brand list
    known = {name.casefold() for name in brands}
    texts = [r["value"]["text"] for task in tasks for r in results(task)]
    # when the spans whose text is on the list are counted
    share = sum(text.casefold() in known for text in texts) / len(texts)
    # then the list covers a real part, but far from all (the model has things to learn)
    assert 0.3 <= share <= 0.7, share


def test_gold_export_is_read_by_the_label_studio_parser(tasks: list[dict[str, Any]]) -> None:
    # given the export
    # when brandloop's own export parser reads it
    parsed = parse_export(tasks, labels=["BRAND"])
    # then every task becomes an annotation, nothing is rejected or repaired
    assert len(parsed.records) == len(tasks)
    assert not parsed.rejected and parsed.repaired == 0
    assert sum(len(a.spans) for a in parsed.records) == sum(len(results(t)) for t in tasks)


def test_readme_counts_match_the_files(posts: list[dict[str, Any]]) -> None:
    # given the demo README
    text = (DEMO / "README.md").read_text(encoding="utf-8")
    # then it says the data is synthetic and states the real post count
    assert "synthetic" in text and "scripts/generate_demo_posts.py" in text
    assert f"| posts | {len(posts)} |" in text


def test_each_demo_brands_kind_is_what_the_shipped_lists_say(
    brands: list[str], exact_brands: list[str]
) -> None:
    # given the demo generator's brands, each with the kind its README counts by
    generator = load_script("generate_demo_posts")
    listed, exact = {name.casefold() for name in brands}, set(exact_brands)

    # when each kind is read off the shipped lists (a brand added to a list moves it)
    def kind(name: str) -> str:
        return "listed" if name.casefold() in listed else "exact" if name in exact else "unlisted"

    # then the generator agrees: its README's counts describe the lists that ship
    wrong = [
        (b.name, b.kind, kind(b.name))
        for b in generator.BRANDS
        if kind(b.name) != ("unlisted" if b.kind == "invented" else b.kind)
    ]
    assert not wrong


def test_demo_generation_is_deterministic(tmp_path: Path) -> None:
    # given the generator and the committed demo files
    # when it runs again into an empty folder
    done = run_script(SCRIPTS / "generate_demo_posts.py", "--out", tmp_path)
    # then it writes byte-identical files
    assert done.returncode == 0, done.stderr
    for name in DEMO_FILES:
        assert (tmp_path / name).read_bytes() == (DEMO / name).read_bytes(), name
