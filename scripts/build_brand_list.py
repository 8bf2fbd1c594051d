#!/usr/bin/env python3
"""Derive the shipped brand gazetteer from the shared gazetteer data.

Reads, from ``DATA_DIR/gazetteers``:

* ``name_suggestion_index/*.json`` (OpenStreetMap name-suggestion-index, BSD-3-Clause):
  every item's name tags (``brand``, ``name``, their ``:en`` forms, ``alt_name``,
  ``short_name``, ``official_name``, ``full_name``) and its ``matchNames`` (variants the
  index itself treats as the same brand);
* ``pudding_foundation_names/allShades.csv`` (The Pudding, MIT): the ``brand`` column;

and, from this folder, two lists written by this project: ``well_known_brands.txt``
(mainstream beauty, hair and fragrance brands the two sources lack, such as Glossier, CeraVe
and Laneige) and ``mainstream_brands.txt`` (well-known consumer brands outside beauty:
phones, apps, drinks, restaurants, shops, clothes, cars). It writes two UTF-8 files, one
name a line, sorted by ``(casefold, name)``:

* ``brands.txt``: matched case-insensitively by the cold-start gazetteer; no two lines are
  equal after ``casefold()``;
* ``brands_case_sensitive.txt``: brands whose name is also an everyday English word or
  phrase ("Benefit", "Boots", "Lush", "The Ordinary", "MAC"). Lower-cased, these words are
  nearly always *not* the brand ("the benefit of SPF", "new boots", "mac n cheese"), so the
  gazetteer matches them only in the exact casings listed here.

Cleaning, in order: whitespace is normalised; derived variants are added (an ASCII spelling
of accented names, the name without a trailing " by <founder>" or a corporate suffix such as
"Cosmetics"/"Beauty"); names shorter than 2 characters and names in :data:`STOPLIST` are
dropped; names in :data:`CASE_SENSITIVE` move to the second file.

Usage::

    python scripts/build_brand_list.py [DATA_DIR] [--out DIR]

``DATA_DIR`` defaults to ``../shared/data`` relative to the project root (or ``data/``, its
copy in the repository, when that is absent); ``--out`` defaults to
``ner/resources``. A missing data folder or source file is a clear error (exit status 2).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_WORKPLACE_DATA = PROJECT_ROOT.parent / "shared" / "data"
#: ``../shared/data`` when present, else the repository's verbatim copy in ``data/``.
DEFAULT_DATA_DIR = _WORKPLACE_DATA if _WORKPLACE_DATA.is_dir() else PROJECT_ROOT / "data"
DEFAULT_OUT_DIR = PROJECT_ROOT / "ner" / "resources"

NSI_DIR = Path("gazetteers") / "name_suggestion_index"
PUDDING_CSV = Path("gazetteers") / "pudding_foundation_names" / "allShades.csv"
#: The project's own lists, read from the repository (not from ``DATA_DIR``).
WRITTEN_LIST = Path(__file__).resolve().parent / "well_known_brands.txt"
MAINSTREAM_LIST = Path(__file__).resolve().parent / "mainstream_brands.txt"

#: Name tags of a name-suggestion-index item that spell the brand (``operator`` and the
#: non-English scripts' ``:xx`` forms other than ``:en`` are left out on purpose).
NSI_NAME_TAGS = (
    "brand",
    "brand:en",
    "name",
    "name:en",
    "alt_name",
    "alt_name:en",
    "short_name",
    "short_name:en",
    "official_name",
    "official_name:en",
    "full_name",
)

#: Trailing words that name the kind of company, not the brand. "Urban Decay Cosmetics" is
#: called "Urban Decay", "HUDA BEAUTY" "Huda" and "Dr. Dennis Gross Skincare" "Dr. Dennis
#: Gross" in posts, so the shorter form is added as a variant (the full name stays).
CORPORATE_SUFFIXES = (
    "professional makeup",
    "vegan beauty",
    "beauty supply",
    "cosmetics",
    "skincare",
    "beauty",
    "labs",
    "co.",
    "md",
)

#: A short form may not end in one of these words (it would be half a name).
DANGLING_WORDS = frozenset({"&", "+", "and", "at", "by", "for", "of", "the"})

#: Names dropped outright, compared after ``casefold()``. Each would match ordinary text far
#: more often than the brand, even in its exact casing, so it does more harm than good:
STOPLIST = frozenset(
    {
        # two-letter shop names that are everyday tokens ("dm me", Italian "di", "DA").
        "da",
        "di",
        "dm",
        # generic words/phrases: "Normal skin", "longs for", "perfect brows", "japan medical".
        "normal",
        "longs",
        "perfect brows",
        "japan medical",
        # NSI match variants that are common abbreviations or words ("CAD", "sola").
        "cad",
        "sola",
        # short forms produced by stripping a corporate suffix that are plain words:
        # "It Cosmetics" -> "It", "Bite Beauty" -> "Bite", "Rare Beauty" -> "Rare", ...
        "it",
        "yes!",
        "bite",
        "juice",
        "wander",
        "flower",
        "rare",
        "saga",
        "rms",
        # the same from well_known_brands.txt: "Fresh Beauty" -> "Fresh", "Kylie Cosmetics"
        # -> "Kylie", "r.e.m. beauty" -> "r.e.m." (the band).
        "fresh",
        "hero",
        "bubble",
        "first aid",
        "peace out",
        "kylie",
        "sally",
        "cult",
        "haus",
        "r.e.m.",
    }
)

#: Real brands whose name is also an everyday word or phrase, mapped from ``casefold()`` to
#: the exact casings the gazetteer may match. They are kept (a brand list is facts) but only
#: in these spellings, so "the benefit of SPF" or "new boots" is not tagged.
CASE_SENSITIVE: dict[str, tuple[str, ...]] = {
    "adopt": ("Adopt",),
    "benefit": ("Benefit",),
    "bodycare": ("Bodycare",),
    "body details": ("Body Details",),
    "body minute": ("Body Minute",),
    "bonjour": ("Bonjour",),
    "boots": ("Boots",),
    "clean house": ("Clean House",),
    "banana boat": ("Banana Boat",),
    "dove": ("Dove",),
    "elf": ("ELF",),  # "elf cosmetics" -> "elf": the word, but "ELF haul" is the brand
    "living proof": ("Living Proof",),
    "merit": ("Merit",),
    "real techniques": ("Real Techniques",),
    "then i met you": ("Then I Met You",),
    "topicals": ("Topicals",),
    "au naturale": ("Au Naturale",),
    "beauty success": ("Beauty Success",),
    "beauty zone": ("Beauty Zone",),
    "esthetic center": ("Esthetic Center",),
    "essence": ("Essence",),
    "fraiche": ("Fraiche",),
    "gold apple": ("Gold Apple",),
    "gratis": ("Gratis",),
    "hourglass": ("HOURGLASS", "Hourglass"),
    "jasmin": ("Jasmin",),
    "kicks": ("Kicks",),
    "laser clinics": ("Laser Clinics",),
    "laser love": ("Laser Love",),
    "lawless": ("LAWLESS", "Lawless"),
    "lush": ("LUSH", "Lush"),
    "mac": ("MAC", "M.A.C"),
    "mahogany": ("Mahogany",),
    "me spa": ("Me Spa",),
    "mosaic": ("Mosaic",),
    "my salon suite": ("My Salon Suite",),
    "nails for you": ("Nails for You",),
    "naturals": ("Naturals",),
    "origins": ("Origins",),
    "persona": ("Persona",),
    "qipao": ("Qipao",),
    "rituals": ("Rituals",),
    "savers": ("Savers",),
    "sorbet": ("Sorbet",),
    "tanning shop": ("Tanning Shop",),
    "the fragrance shop": ("The Fragrance Shop",),
    "the lash lounge": ("The Lash Lounge",),
    "the ordinary": ("The Ordinary",),
    "the perfume garden": ("The Perfume Garden",),
    "the perfume shop": ("The Perfume Shop",),
    "voulez-vous": ("Voulez-Vous",),
    "wells": ("Wells",),
    # from mainstream_brands.txt: the brand capitalised; lower-cased, the word, the fruit, the
    # slang ("uber cute", "got some intel", "snickers", "cheerio") or the phrase ("best buy").
    "amazon": ("Amazon",),
    "american eagle": ("American Eagle",),
    "amd": ("AMD",),
    "apple": ("Apple",),
    "best buy": ("Best Buy",),
    "bing": ("Bing",),
    "blackberry": ("BlackBerry",),
    "canon": ("Canon",),
    "cheerios": ("Cheerios",),
    "chipotle": ("Chipotle",),
    "chrome": ("Chrome",),
    "coke": ("Coke",),
    "converse": ("Converse",),
    "crocs": ("Crocs",),
    "discord": ("Discord",),
    "forever 21": ("Forever 21",),
    "hot wheels": ("Hot Wheels",),
    "intel": ("Intel",),
    "kindle": ("Kindle",),
    "lg": ("LG",),
    "marvel": ("Marvel",),
    "nerf": ("Nerf", "NERF"),
    "new balance": ("New Balance",),
    "old navy": ("Old Navy",),
    "pampers": ("Pampers",),
    "puma": ("Puma", "PUMA"),
    "snickers": ("Snickers",),
    "sprite": ("Sprite",),
    "subway": ("Subway",),
    "target": ("Target",),
    "tesla": ("Tesla",),
    "the north face": ("The North Face", "North Face"),
    "twitch": ("Twitch",),
    "uber": ("Uber",),
    "ups": ("UPS",),
    "vans": ("Vans", "VANS"),
    "whole foods": ("Whole Foods",),
    "windows": ("Windows",),
    "yahoo": ("Yahoo", "Yahoo!"),
}

MIN_LENGTH = 2


class SourceError(Exception):
    """A source folder or file is missing or unreadable."""


def _clean(name: str) -> str:
    return " ".join(name.split())


def nsi_names(nsi_dir: Path) -> Iterator[str]:
    """Brand names of every name-suggestion-index file, name tags first, then matchNames."""
    files = sorted(nsi_dir.glob("*.json"))
    if not files:
        raise SourceError(f"no name-suggestion-index *.json files in {nsi_dir}")
    match_names: list[str] = []
    for path in files:
        try:
            items = json.loads(path.read_text(encoding="utf-8"))["items"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"{path}: not a name-suggestion-index file ({exc})") from exc
        for item in items:
            tags = item.get("tags", {})
            for key in NSI_NAME_TAGS:
                if isinstance(tags.get(key), str):
                    yield tags[key]
            match_names.extend(n for n in item.get("matchNames", []) if isinstance(n, str))
    # matchNames are lower-cased by the index: yield them last so a properly cased spelling
    # of the same brand wins the case-insensitive de-duplication.
    yield from match_names


def pudding_names(csv_path: Path) -> Iterator[str]:
    """Distinct values of the ``brand`` column, in file order."""
    if not csv_path.is_file():
        raise SourceError(f"missing {csv_path}")
    seen: set[str] = set()
    with csv_path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "brand" not in reader.fieldnames:
            raise SourceError(f"{csv_path}: no 'brand' column")
        for row in reader:
            brand = row["brand"]
            if brand and brand not in seen:
                seen.add(brand)
                yield brand


def written_names(path: Path) -> Iterator[str]:
    """Names of the project's own list: one a line, blank lines and ``#`` comments skipped."""
    if not path.is_file():
        raise SourceError(f"missing {path}")
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            yield line.strip()


def _ascii_fold(name: str) -> str | None:
    """``Estée Lauder`` -> ``Estee Lauder``; ``None`` unless the result is plain ASCII."""
    folded = "".join(
        ch for ch in unicodedata.normalize("NFKD", name) if not unicodedata.combining(ch)
    )
    if folded == name or not folded.isascii():
        return None
    return folded


def _strip_suffix(name: str) -> str | None:
    lowered = name.casefold()
    for suffix in CORPORATE_SUFFIXES:
        if lowered.endswith(" " + suffix):
            short = name[: -len(suffix) - 1].strip()
            # "Savers Health & Beauty" must not become "Savers Health &".
            if short.split()[-1].casefold() in DANGLING_WORDS:
                return None
            return short
    return None


def variants(name: str) -> list[str]:
    """The name and the spellings derived from it (see the module docstring)."""
    out = [name]
    words = name.split(" by ")
    if len(words) == 2 and len(words[0].split()) >= 2:
        out.append(words[0])  # "Rare Beauty by Selena Gomez" -> "Rare Beauty"
    for form in list(out):
        short = _strip_suffix(form)
        if short:
            out.append(short)
    for form in list(out):
        if form.endswith("'") and len(form) > 2:
            out.append(form.rstrip("'"))  # "Diptyque'" -> "Diptyque"
    for form in list(out):
        folded = _ascii_fold(form)
        if folded:
            out.append(folded)
    for form in list(out):
        if "'" in form.strip("'"):
            out.append(form.replace("'", "\u2019"))  # phones type U+2019
    return out


def build(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Clean ``names`` into (case-insensitive list, case-sensitive list), both sorted."""
    primary: list[str] = []
    derived: list[str] = []
    for raw in names:
        forms = [_clean(form) for form in variants(_clean(raw))]
        primary.append(forms[0])
        derived.extend(forms[1:])
    insensitive: dict[str, str] = {}
    sensitive: set[str] = set()
    for name in primary + derived:  # originals first: their casing wins de-duplication
        key = name.casefold()
        if len(name) < MIN_LENGTH or key in STOPLIST:
            continue
        if key in CASE_SENSITIVE:
            sensitive.update(CASE_SENSITIVE[key])
            continue
        insensitive.setdefault(key, name)

    def order(name: str) -> tuple[str, str]:
        return (name.casefold(), name)

    return sorted(insensitive.values(), key=order), sorted(sensitive, key=order)


def write_lines(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8", newline="\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "data_dir",
        nargs="?",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"shared data folder holding gazetteers/ (default: {DEFAULT_DATA_DIR})",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output folder")
    args = parser.parse_args(argv)
    data_dir: Path = args.data_dir
    if not data_dir.is_dir():
        print(
            f"error: shared data folder {data_dir} does not exist; pass the folder that "
            f"holds gazetteers/ (e.g. ../shared/data)",
            file=sys.stderr,
        )
        return 2
    try:
        names = [
            *nsi_names(data_dir / NSI_DIR),
            *pudding_names(data_dir / PUDDING_CSV),
            *written_names(WRITTEN_LIST),
            *written_names(MAINSTREAM_LIST),
        ]
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    insensitive, sensitive = build(names)
    write_lines(args.out / "brands.txt", insensitive)
    write_lines(args.out / "brands_case_sensitive.txt", sensitive)
    print(
        f"wrote {len(insensitive)} names to {args.out / 'brands.txt'} and "
        f"{len(sensitive)} to {args.out / 'brands_case_sensitive.txt'} "
        f"(from {len(names)} source names)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
