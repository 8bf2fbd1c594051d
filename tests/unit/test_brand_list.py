"""A team's own brand list (NER_BRAND_LIST, NER_BRAND_LIST_EXACT_CASE) instead of the shipped
ones: read from files, used by the cold start, after trained models, and carried to worker
processes (a trial had to overwrite ner/resources/brands.txt, and the shipped case-sensitive
list kept matching Boots and Lush)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from ner.errors import ConfigError, ModelError
from ner.models import BrandList, build_gazetteer, load_model
from ner.parallel import ModelRef
from ner.settings import TrainSettings, load_settings
from ner.training import _finish
from ner.training_worker import TrainRequest

POST = "New Boots from Lush, a Lumiora serum and mac and cheese, then MAC lipstick"


def own_lists(tmp_path: Path) -> tuple[Path, Path]:
    names = tmp_path / "brands.txt"
    names.write_text("# our brands\nLumiora\nFenty Beauty\n\n", encoding="utf-8")
    exact = tmp_path / "exact.txt"
    exact.write_text("MAC\n", encoding="utf-8")
    return names, exact


def test_own_lists_replace_the_shipped_ones_in_the_cold_start(tmp_path: Path) -> None:
    names, exact = own_lists(tmp_path)
    brands = BrandList.from_files(names, exact)
    assert brands == BrandList(("Lumiora", "Fenty Beauty"), ("MAC",))
    own = build_gazetteer(brands=brands)
    shipped = build_gazetteer()
    # only our names, the exact-case one only as written; the shipped lists find Boots, Lush
    assert [e.text for e in own.nlp(POST).ents] == ["Lumiora", "MAC"]
    assert {"Boots", "Lush"} <= {e.text for e in shipped.nlp(POST).ents}
    assert own.version != shipped.version  # another list is another model
    # and a spec resolved for a worker process carries them (pickled with the reference)
    ref = pickle.loads(pickle.dumps(ModelRef.of("gazetteer", brands=brands)))
    assert ref.load().version == own.version
    assert load_model("gazetteer", brands=brands).version == own.version


def test_a_trained_model_keeps_the_list_it_was_trained_with(tmp_path: Path) -> None:
    import spacy

    names, exact = own_lists(tmp_path)
    brands = BrandList.from_files(names, exact)
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler", name="ner").add_patterns(  # type: ignore[attr-defined]
        [{"label": "PERSON", "pattern": "Lumiora"}]  # a model that calls our brand a person
    )
    final = _finish(nlp, tmp_path / "none", TrainSettings(checkpoint="last"), ["BRAND"], brands)
    assert [e.text for e in final(POST).ents] == ["Lumiora", "MAC"]
    # and the worker's request carries the list across the process boundary as JSON
    request = TrainRequest.model_validate_json(
        TrainRequest(
            annotations=[], start_from="x", output_dir="o", labels=["BRAND"],
            recipe=TrainSettings(), seed=1, brands=list(brands.names),  # type: ignore[union-attr]
            brands_exact_case=list(brands.exact_case),  # type: ignore[union-attr]
        ).model_dump_json()
    )  # fmt: skip
    assert (request.brands, request.brands_exact_case) == (["Lumiora", "Fenty Beauty"], ["MAC"])


def test_a_missing_or_empty_list_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.txt is not a file"):
        load_settings(brand_list=str(tmp_path / "nope.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n", encoding="utf-8")
    assert load_settings(brand_list=str(empty)).brand_list == empty
    with pytest.raises(ModelError, match=r"empty\.txt holds no name"):
        BrandList.from_files(empty)
    assert BrandList.from_files(None) is None  # the shipped lists serve
    # the exact-case list alone is a whole list (a trial's was silently ignored)
    _, exact = own_lists(tmp_path)
    alone = BrandList.from_files(None, exact)
    assert alone == BrandList((), ("MAC",))
    assert [e.text for e in build_gazetteer(brands=alone).nlp(POST).ents] == ["MAC"]
    with pytest.raises(ModelError, match=r"empty\.txt and .*empty\.txt holds no name"):
        BrandList.from_files(empty, empty)
    # an empty value is unset: the shipped lists (a trial was told ". is not a file")
    assert load_settings(brand_list="", brand_list_exact_case=" ").brand_list is None
    assert load_settings(brand_list_exact_case="").brand_list_exact_case is None


def test_a_name_in_both_lists_is_named_not_matched_in_any_case(tmp_path: Path) -> None:
    # Given a name in both files, once in another case (trial BE: "Beats" in both lists
    # tagged "my heart beats")
    names, exact = tmp_path / "any.txt", tmp_path / "exact.txt"
    names.write_text("Anker\nbeats\nVans\n", encoding="utf-8")
    exact.write_text("Beats\nOn\nVans\n", encoding="utf-8")
    # Then the list is refused, naming the names and both files
    with pytest.raises(ModelError) as raised:
        BrandList.from_files(names, exact)
    said = str(raised.value)
    assert "2 names in both" in said and "'Beats', 'Vans'; keep each in one file" in said
    assert str(names) in said and str(exact) in said
    # as a setting to fix: never retried, no --debug hint (trial BH: apply retried it 3 times)
    from flows.context import PERMANENT_ERRORS

    assert isinstance(raised.value, PERMANENT_ERRORS)
    # and doctor says so before any run (trial BH: "✓ settings valid", exit 0)
    from apps.doctor import CheckStatus, check_brand_list

    check = check_brand_list(load_settings(brand_list=str(names), brand_list_exact_case=str(exact)))
    assert (check.name, check.status) == ("brand list", CheckStatus.FAIL)
    assert "keep each in one file" in check.detail
    exact.write_text("On\n", encoding="utf-8")
    fine = check_brand_list(load_settings(brand_list=str(names), brand_list_exact_case=str(exact)))
    said = "your lists: 3 names in any case, 1 only as written"
    assert (fine.status, fine.detail) == (CheckStatus.OK, said)
    shipped = BrandList.shipped()
    said = f"the shipped lists: {len(shipped.names)} names in any case, "
    assert (
        check_brand_list(load_settings()).detail
        == f"{said}{len(shipped.exact_case)} only as written"
    )


def test_names_added_to_the_shipped_lists_keep_them_and_are_matched_in_any_case(
    tmp_path: Path,
) -> None:
    # Given a file of names the shipped lists lack (one twice, in two cases) and one they
    # hold already (trial BS copied both shipped files to add two names)
    extra = tmp_path / "extra.txt"
    extra.write_text("# ours\nLumiora\nAldi\nglossier\nLUMIORA\nAlbumin\n", encoding="utf-8")
    shipped = BrandList.shipped()
    assert "glossier" in {n.lower() for n in shipped.names} and "Boots" in shipped.exact_case
    # When the settings add it (NER_BRAND_LIST_EXTRA)
    settings = load_settings(brand_list_extra=str(extra))
    from ner.models import configured_brands

    brands = configured_brands(settings)
    # Then the shipped lists stay whole, and the new names are added once each
    assert brands is not None and brands.exact_case == shipped.exact_case
    assert brands.names == (*shipped.names, "Lumiora", "Aldi", "Albumin")
    post = "Aldi had Lumiora serum, and new Boots; boots, too"
    found = [e.text for e in build_gazetteer(brands=brands).nlp(post).ents]
    assert found == ["Aldi", "Lumiora", "Boots"]
    # And added to a team's own lists, the same; an empty file is named
    names, exact = own_lists(tmp_path)
    own = load_settings(
        brand_list=str(names), brand_list_exact_case=str(exact), brand_list_extra=str(extra)
    )
    assert configured_brands(own) == BrandList(
        ("Lumiora", "Fenty Beauty", "Aldi", "glossier", "Albumin"), ("MAC",)
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("# none\n", encoding="utf-8")
    with pytest.raises(ModelError, match=r"empty\.txt \(NER_BRAND_LIST_EXTRA\) holds no name"):
        configured_brands(load_settings(brand_list_extra=str(empty)))
    # And a name the list matches only as written is refused, not matched as the word
    # (trial BT: "Boots" added tagged "new boots")
    words = tmp_path / "words.txt"
    words.write_text("Beanery Co\nboots\nMAC\n", encoding="utf-8")
    with pytest.raises(ModelError) as raised:
        configured_brands(load_settings(brand_list_extra=str(words)))
    said = str(raised.value)
    assert "(NER_BRAND_LIST_EXTRA) adds 2 names that the list matches only as written" in said
    assert "'MAC', 'boots'" in said
    assert said.endswith(f"leave them out of {words}")
    # And doctor names the file, what it added and the size, and a fix names the one
    # setting at fault (trial BT: all three); another addition is another model
    from apps.doctor import CheckStatus, check_brand_list
    from flows.train_ner import _brands_digest

    detail = check_brand_list(settings).detail
    head = f"the shipped lists and 3 names added from {extra} (1 already on them): "
    assert detail.startswith(f"{head}{len(shipped.names) + 3} names in any case")
    refused = check_brand_list(load_settings(brand_list_extra=str(words)))
    fix = "fix the file as the line says, or unset NER_BRAND_LIST_EXTRA (the shipped lists serve)"
    assert (refused.status, refused.fix) == (CheckStatus.FAIL, fix)
    # And a file saved with a byte order mark (Notepad, Excel) keeps its first name
    # (trial BU: "Beanery Co" on line 1 never matched)
    marked = tmp_path / "marked.txt"
    marked.write_bytes("Beanery Co\r\nCrumbly\r\n".encode("utf-8-sig"))
    brands = configured_brands(load_settings(brand_list_extra=str(marked)))
    assert brands is not None and brands.names[-2:] == ("Beanery Co", "Crumbly")
    assert _brands_digest(settings) not in (None, _brands_digest(load_settings()))


def test_names_added_only_as_written_match_the_brand_not_the_word(tmp_path: Path) -> None:
    # Given a brand that is also an everyday word (trial BU: "Crumbly" tagged "too crumbly"),
    # given twice, and a name added in any case
    from apps.doctor import CheckStatus, check_brand_list
    from flows.train_ner import _brands_digest
    from ner.models import brand_list_summary, configured_brands

    exact = tmp_path / "exact.txt"
    exact.write_text("# ours\nCrumbly\nCrumbly\nBoots\n", encoding="utf-8")
    extra = tmp_path / "extra.txt"
    extra.write_text("Beanery Co\n", encoding="utf-8")
    settings = load_settings(brand_list_extra=str(extra), brand_list_extra_exact_case=str(exact))
    # When the list is built
    brands = configured_brands(settings)
    shipped = BrandList.shipped()
    # Then Crumbly is matched only as written, once; Boots, shipped so, is not repeated
    assert brands is not None and brands.names == (*shipped.names, "Beanery Co")
    assert brands.exact_case == (*shipped.exact_case, "Crumbly")
    post = "Crumbly bars from Beanery Co: too crumbly, and new boots"
    assert [e.text for e in build_gazetteer(brands=brands).nlp(post).ents] == [
        "Crumbly",
        "Beanery Co",
    ]
    said = brand_list_summary(settings)
    assert said.startswith(
        f"the shipped lists and 1 name added from {extra} and 1 name added only as written "
        f"from {exact} (1 already on them): {len(shipped.names) + 1} names in any case, "
        f"{len(shipped.exact_case) + 1} only as written"
    )
    assert _brands_digest(settings) != _brands_digest(load_settings(brand_list_extra=str(extra)))
    # And a name the list matches in any case is refused (it would still match the word),
    # the doctor's fix naming the setting; an empty file is named
    exact.write_text("Crumbly\nglossier\n", encoding="utf-8")
    with pytest.raises(ModelError) as raised:
        configured_brands(settings)
    assert "(NER_BRAND_LIST_EXTRA_EXACT_CASE) adds 1 name that the list already matches in" in (
        str(raised.value)
    )
    assert str(raised.value).endswith(f"'glossier'; leave it out of {exact}")
    check = check_brand_list(settings)
    assert check.status is CheckStatus.FAIL and check.fix is not None
    assert "unset NER_BRAND_LIST_EXTRA / NER_BRAND_LIST_EXTRA_EXACT_CASE" in check.fix
    # And a name in both additions files names both, and which one to keep it in (trial
    # BV was told to leave it out of the exact-case file: "too crumbly" would then match)
    exact.write_text("Crumbly\n", encoding="utf-8")
    extra.write_text("Beanery Co\ncrumbly\n", encoding="utf-8")
    with pytest.raises(ModelError) as raised:
        configured_brands(settings)
    assert str(raised.value) == (
        f"brand list: 1 name in both {extra} (NER_BRAND_LIST_EXTRA, any case) and {exact} "
        f"(NER_BRAND_LIST_EXTRA_EXACT_CASE, only as written): 'Crumbly'; keep a brand that is "
        f"also a word only in {exact}"
    )
    exact.write_text("# none\n", encoding="utf-8")
    with pytest.raises(ModelError, match=r"\(NER_BRAND_LIST_EXTRA_EXACT_CASE\) holds no name"):
        configured_brands(settings)


def test_another_list_is_another_training_fingerprint(tmp_path: Path) -> None:
    from flows.train_ner import _brands_digest

    names, exact = own_lists(tmp_path)
    assert _brands_digest(load_settings()) is None  # the shipped lists
    ours = _brands_digest(load_settings(brand_list=str(names)))
    both = _brands_digest(load_settings(brand_list=str(names), brand_list_exact_case=str(exact)))
    assert ours is not None and both is not None and ours != both


def test_the_readme_export_example_is_a_labelled_set_evaluate_reads() -> None:
    import re

    from ner.labelstudio.export import load_export, read_labelled
    from tests.support.readme import ROOT

    # Given the README's hand-written export (trial BS pieced its format together)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```json\n(.*?)```", text, flags=re.S)
    # When it is read as evaluate --on reads a file
    parsed = read_labelled(load_export(block.encode(), "README.md"), ("BRAND",))
    # Then both posts are labelled, one with its brand and one without any, none rejected
    assert [(a.post_id, [s.text for s in a.spans]) for a in parsed.records] == [
        ("p1", ["iphone"]),
        ("p2", []),
    ]
    assert not parsed.rejected and not parsed.unlabelled
    found = [e.text for a in parsed.records for e in build_gazetteer().nlp(a.text).ents]
    assert found == ["iphone"]  # the shipped list: "apple" as a word is no brand
