#!/usr/bin/env python3
"""Generate the bundled demo data: synthetic English beauty posts and their gold brand spans.

Everything here is written by the project: templates and vocabulary below, filled by a seeded
``random.Random``. No text comes from real posts or from a published corpus. Real brand names
appear as facts; the opinions attached to them are invented.

Outputs (in ``--out``, default ``ner/resources/demo``):

* ``posts.jsonl``: one post a line, ``{"id", "text", "created_at", "author_id", "lang",
  "source", "query"}`` with X-style 19-digit ids (snowflakes built from ``created_at``);
* ``gold_export.json``: the gold ``BRAND`` spans as a Label Studio JSON export (one task per
  post, one completed annotation per task; posts without a brand have an empty result);
* ``README.md``: what the data is and its counts.

Labelling convention (the gold follows it everywhere):

* a brand (maker, sub-brand or retailer brand) is labelled wherever it is written out, in any
  casing, with its typos and with the words of its own name ("Maybelline New York",
  "Dior Beauty", "Fenty Skin"); product names ("Pillow Talk", "Fit Me") are not brands;
* in a hashtag that is a brand name, written as one word or not ("#Maybelline",
  "#fentybeauty"), the part after ``#`` is labelled;
* @handles are never labelled, even when they are a brand's account;
* common words that are also brand names ("benefit", "milk", "dove" the bird, "ordinary",
  "glossy", "lush") are labelled only when they name the brand.

The data is tuned so that the cold-start gazetteer (``ner/resources/brands.txt``) misses a
good part of the mentions: about a quarter name brands no list contains (invented indie
brands, learnable only from context), and others are written in ways a list cannot match
(hashtags, typos, lower-cased case-sensitive names).

Usage::

    python scripts/generate_demo_posts.py [--out DIR] [--seed N] [--resources DIR]

The output is a pure function of the seed and of this file (and, for the README counts, of
the brand lists in ``--resources``): running it twice gives identical bytes.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESOURCES = PROJECT_ROOT / "ner" / "resources"
DEFAULT_OUT = DEFAULT_RESOURCES / "demo"
DEFAULT_SEED = 20261122

LABEL = "BRAND"
QUERY = "beauty"
NO_BRAND_SHARE = 0.30  # share of posts without any brand
TWITTER_EPOCH_MS = 1288834974657
FIRST_POST = datetime(2026, 9, 1, 6, 0, tzinfo=UTC)
LAST_POST = datetime(2026, 11, 14, 23, 0, tzinfo=UTC)
ANNOTATION_START = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

PRODUCTS: dict[str, tuple[str, ...]] = {
    "makeup": (
        "concealer",
        "foundation",
        "eyeshadow palette",
        "palette",
        "mascara",
        "lip liner",
        "lip oil",
        "lip gloss",
        "lipstick",
        "liquid blush",
        "cream blush",
        "bronzer",
        "highlighter",
        "setting spray",
        "setting powder",
        "brow gel",
        "primer",
        "skin tint",
        "contour stick",
        "eyeliner",
        "lip tint",
    ),
    "skin": (
        "cleanser",
        "moisturizer",
        "serum",
        "vitamin c serum",
        "retinol",
        "spf",
        "sunscreen",
        "toner",
        "eye cream",
        "clay mask",
        "exfoliant",
        "lip mask",
        "barrier cream",
        "cleansing balm",
        "night cream",
    ),
    "hair": ("shampoo", "hair mask", "hair oil", "bond repair treatment", "leave-in"),
    "body": ("body wash", "body lotion", "body scrub", "hand cream", "bath bomb", "body oil"),
    "fragrance": ("perfume", "eau de parfum", "body mist", "rollerball", "candle"),
}
PRODUCTS["retail"] = PRODUCTS["makeup"][:8] + PRODUCTS["skin"][:6]

SHADES = (
    "soft mauve",
    "warm honey",
    "deep espresso",
    "fair neutral",
    "rosewood",
    "peach fizz",
    "cinnamon",
    "toasted almond",
    "berry crush",
    "light 2W",
    "medium tan",
    "cocoa 510",
    "dusty rose",
    "golden hour",
    "plum wine",
    "nude 03",
)

EMOJI = (
    "💄",
    "😍",
    "✨",
    "💅🏽",
    "🥹",
    "🫶🏻",
    "🔥",
    "💋",
    "🌸",
    "🧴",
    "🪞",
    "😭",
    "🤍",
    "💕",
    "🙌🏾",
    "👀",
    "🤩",
    "😩",
    "🫠",
    "💀",
    "🥲",
    "😅",
    "🌿",
    "🍯",
    "🧼",
    "🛁",
    "💦",
    "☀️",
    "❤️",
    "👩🏽‍🦰",
    "🧖🏻‍♀️",
    "🙋‍♀️",
    "🤷🏼‍♀️",
    "💁🏻‍♀️",
    "❤️‍🔥",
    "😮‍💨",
    "🇬🇧",
    "🇺🇸",
    "🇰🇷",
    "🇫🇷",
    "🇧🇷",
    "🇳🇬",
    "✌🏿",
    "😂",
    "🙄",
    "💯",
)
# Emoji written right before a brand, without a space. Only ones that spaCy's English tokenizer
# splits from the following word are used ("🫶Dior" or "💅🏽Dior" would give one token and a
# gold span that no token-based model can reproduce).
LEAD_EMOJI = ("💄", "✨", "🔥", "💋", "🌸", "👀", "🧴", "🇰🇷", "❤️‍🔥", "😍", "🌿", "👩🏽‍🦰")

GENERIC_TAGS = (
    "skincare",
    "makeup",
    "grwm",
    "beautytok",
    "makeuplover",
    "skincareroutine",
    "motd",
    "dewyskin",
    "glowup",
    "sundayreset",
    "nomakeup",
    "crueltyfree",
    "swatches",
    "newin",
    "dupe",
    "beautyhaul",
    "selfcare",
    "kbeauty",
    "SPF",
    "MakeupTips",
)

HANDLE_HEADS = (
    "glow",
    "skin",
    "mua",
    "lash",
    "brow",
    "dewy",
    "blush",
    "jess",
    "amara",
    "kiki",
    "dani",
    "noor",
    "priya",
    "mel",
    "zoe",
    "tash",
    "bea",
    "lola",
)
HANDLE_TAILS = ("_diaries", "byme", "_mua", "xo", "daily", "notes", "97", "_", "beauty", "faces")

DAYS = ("monday", "tuesday", "friday", "sunday", "saturday")

OPENERS = (
    "ok so",
    "update:",
    "PSA:",
    "not sponsored but",
    "honestly",
    "y'all",
    "be honest,",
    "quick one:",
    "lol",
    "hot take:",
)
CLOSERS = (
    "10/10 would repurchase",
    "rant over",
    "thoughts?",
    "link below",
    "anyway",
    "not sponsored btw",
    "that's it that's the post",
    "wish me luck",
    "ok bye",
    "will report back",
    "my wallet is crying",
    "definately recommend",
)
FILLERS = (
    "my skin has been so dry lately",
    "went to the mall after work",
    "long day but my makeup held up",
    "I recieved so many compliments today",
    "weather is so humid rn",
    "doing a full face for the first time in weeks",
    "my routine is finally simple",
    "the lighting in my bathroom lies",
    "trying to build a capsule makeup bag",
    "I have combination skin fyi",
    "my budget is tiny this month",
)


@dataclass(frozen=True)
class Brand:
    """A brand the posts mention.

    ``forms`` are its surface spellings in running text, repeated to weight them;
    ``tags`` the bodies of hashtags that name it; ``count`` how many template slots it fills.
    """

    name: str
    kind: str  # "listed" (in brands.txt), "exact" (case-sensitive list), "unlisted", "invented"
    category: str
    count: int
    forms: tuple[str, ...]
    tags: tuple[str, ...] = ()


def _b(
    name: str,
    kind: str,
    category: str,
    count: int,
    forms: Sequence[str] = (),
    tags: Sequence[str] = (),
) -> Brand:
    # The canonical spelling is listed twice: it is the most common way to write a brand.
    return Brand(name, kind, category, count, (name, name, *forms), tuple(tags))


BRANDS: tuple[Brand, ...] = (
    # --- in brands.txt (matched case-insensitively by the cold-start gazetteer) ---
    _b(
        "Maybelline",
        "listed",
        "makeup",
        14,
        ["maybelline", "Maybelline New York", "maybeline"],
        ["Maybelline", "maybelline"],
    ),
    _b(
        "Fenty Beauty",
        "listed",
        "makeup",
        13,
        ["Fenty", "fenty beauty", "fenty", "FENTY BEAUTY"],
        ["fentybeauty", "FentyBeauty"],
    ),
    _b(
        "Charlotte Tilbury",
        "listed",
        "makeup",
        12,
        ["charlotte tilbury", "Charlotte Tillbury", "Charlotte Tilbury"],
        ["charlottetilbury"],
    ),
    _b("NARS", "listed", "makeup", 11, ["Nars", "nars", "NARS Cosmetics"], ["NARS", "narsissist"]),
    _b("Rare Beauty", "listed", "makeup", 10, ["rare beauty", "Rare Beauty"], ["rarebeauty"]),
    _b("Dior", "listed", "makeup", 9, ["dior", "Dior Beauty", "DIOR"], ["Dior"]),
    _b(
        "e.l.f.",
        "listed",
        "makeup",
        8,
        ["elf", "e.l.f. Cosmetics", "ELF", "e.l.f."],
        ["elfcosmetics"],
    ),
    _b("Sephora", "listed", "retail", 10, ["sephora", "SEPHORA"], ["Sephora", "sephorahaul"]),
    _b("Ulta", "listed", "retail", 6, ["ulta", "Ulta Beauty"], ["ulta"]),
    _b("Too Faced", "listed", "makeup", 6, ["too faced", "Toofaced"], ["toofaced"]),
    _b(
        "Urban Decay",
        "listed",
        "makeup",
        6,
        ["urban decay", "Urban Decay Cosmetics"],
        ["urbandecay"],
    ),
    _b("Huda Beauty", "listed", "makeup", 6, ["huda beauty", "Huda", "HUDA BEAUTY"]),
    _b("Tarte", "listed", "makeup", 6, ["tarte", "Tarte Cosmetics"], ["tarte"]),
    _b("Clinique", "listed", "skin", 6, ["clinique"]),
    _b("Kiehl's", "listed", "skin", 5, ["Kiehls", "kiehl's"]),
    _b("NYX", "listed", "makeup", 6, ["nyx", "NYX Professional Makeup", "NYX Cosmetics"]),
    _b("ColourPop", "listed", "makeup", 5, ["colourpop", "Colourpop", "Colorpop"]),
    _b("Morphe", "listed", "makeup", 4, ["morphe"]),
    _b("Milani", "listed", "makeup", 4, ["Milani Cosmetics", "milani"]),
    _b("Anastasia Beverly Hills", "listed", "makeup", 5, ["ABH", "Anastasia", "anastasia"]),
    _b("Pat McGrath Labs", "listed", "makeup", 4, ["Pat McGrath", "pat mcgrath"]),
    _b("Laura Mercier", "listed", "makeup", 4, ["laura mercier"]),
    _b("Estée Lauder", "listed", "skin", 5, ["Estee Lauder", "estee lauder"]),
    _b("Lancôme", "listed", "makeup", 4, ["Lancome", "lancome"]),
    _b("L'Oréal", "listed", "makeup", 5, ["L'Oreal", "loreal", "L'Oréal Paris"]),
    _b("Yves Saint Laurent", "listed", "makeup", 4, ["YSL", "ysl"]),
    _b("Bobbi Brown", "listed", "makeup", 4, ["bobbi brown"]),
    _b("bareMinerals", "listed", "makeup", 3, ["bare minerals"]),
    _b("Smashbox", "listed", "makeup", 3, ["smashbox"]),
    _b("KIKO Milano", "listed", "makeup", 3, ["Kiko", "kiko milano"]),
    _b("Makeup Revolution", "listed", "makeup", 4, ["Revolution", "makeup revolution"]),
    _b("Milk Makeup", "listed", "makeup", 3, ["milk makeup", "MILK MAKEUP"], ["milkmakeup"]),
    _b("Kosas", "listed", "makeup", 4, ["kosas"]),
    _b("ILIA", "listed", "makeup", 3, ["Ilia"]),
    _b("Natasha Denona", "listed", "makeup", 3, ["natasha denona"]),
    _b("Tom Ford", "listed", "fragrance", 3, ["TOM FORD"]),
    _b(
        "Bath & Body Works",
        "listed",
        "body",
        5,
        ["bath and body works", "BBW"],
        ["bathandbodyworks"],
    ),
    _b("The Body Shop", "listed", "body", 4, ["the body shop"]),
    _b("Innisfree", "listed", "skin", 4, ["innisfree"]),
    _b("Aesop", "listed", "body", 3, ["aesop"]),
    _b("Jo Malone", "listed", "fragrance", 3, ["Jo Malone London", "jo malone"]),
    _b("Givenchy", "listed", "makeup", 3, ["givenchy"]),
    _b("Shiseido", "listed", "skin", 3, ["shiseido"]),
    _b("Superdrug", "listed", "retail", 4, ["superdrug"]),
    _b("Catrice", "listed", "makeup", 3, ["catrice"]),
    _b("Physicians Formula", "listed", "makeup", 2, ["physicians formula"]),
    _b("Armani Beauty", "listed", "makeup", 3, ["Armani", "armani beauty"]),
    # --- brands whose names are everyday words: only in brands_case_sensitive.txt ---
    _b(
        "The Ordinary",
        "exact",
        "skin",
        7,
        ["the ordinary", "The Ordinary", "THE ORDINARY"],
        ["theordinary"],
    ),
    _b("Benefit", "exact", "makeup", 5, ["benefit", "Benefit Cosmetics"], ["benefitcosmetics"]),
    _b("MAC", "exact", "makeup", 5, ["mac", "MAC Cosmetics", "M.A.C"], ["maccosmetics"]),
    _b("Lush", "exact", "body", 4, ["LUSH", "lush"]),
    _b("Boots", "exact", "retail", 3, ["boots"]),
    _b("Hourglass", "exact", "makeup", 3, ["hourglass", "HOURGLASS"]),
    _b("Origins", "exact", "skin", 2, ["origins"]),
    _b("Essence", "exact", "makeup", 3, ["essence"]),
    # --- real brands the two licensed sources lack, in the project's own list
    # (scripts/well_known_brands.txt): "Dove" only as written ("dove" is also the bird);
    # "Rhode" is on neither list ("Rhode Skin" is listed, "rhode" alone is not) ---
    _b("CeraVe", "listed", "skin", 5, ["cerave", "Cerave", "CERAVE"], ["cerave"]),
    _b("Glossier", "listed", "makeup", 4, ["glossier"], ["glossier"]),
    _b("La Roche-Posay", "listed", "skin", 3, ["la roche posay", "La Roche Posay", "LRP"]),
    _b("Drunk Elephant", "listed", "skin", 2, ["drunk elephant"], ["drunkelephant"]),
    _b("Paula's Choice", "listed", "skin", 2, ["paulas choice", "Paula\u2019s Choice"]),
    _b("Olaplex", "listed", "hair", 2, ["olaplex"]),
    _b("Neutrogena", "listed", "skin", 2, ["neutrogena"]),
    _b("Garnier", "listed", "hair", 2, ["garnier"]),
    _b("Summer Fridays", "listed", "skin", 2, ["summer fridays"]),
    _b("Laneige", "listed", "skin", 3, ["laneige", "LANEIGE"], ["laneige"]),
    _b("COSRX", "listed", "skin", 2, ["cosrx", "Cosrx"]),
    _b("Tatcha", "listed", "skin", 2, ["tatcha"]),
    _b("Supergoop", "listed", "skin", 2, ["supergoop", "Supergoop"]),
    _b("Bioderma", "listed", "skin", 2, ["bioderma"]),
    _b("Glow Recipe", "listed", "skin", 2, ["glow recipe"], ["glowrecipe"]),
    _b("Dove", "exact", "body", 3, ["dove", "DOVE"]),
    _b("Nivea", "listed", "body", 2, ["nivea", "NIVEA"]),
    _b("Rhode", "unlisted", "skin", 3, ["rhode"], ["rhode"]),
    _b("Tower 28", "listed", "makeup", 2, ["tower 28", "Tower28"]),
    _b("Makeup by Mario", "listed", "makeup", 2, ["makeup by mario", "MAKEUP BY MARIO"]),
    _b("Fenty Skin", "listed", "skin", 3, ["fenty skin"], ["fentyskin"]),
    _b("Sol de Janeiro", "listed", "fragrance", 2, ["sol de janeiro", "SDJ"]),
    _b("Beauty of Joseon", "listed", "skin", 2, ["beauty of joseon", "BOJ"]),
    # --- invented indie brands: unknown to any list, learnable only from context ---
    _b("Lumiora", "invented", "skin", 8, ["lumiora", "LUMIORA"], ["lumiora", "Lumiora"]),
    _b("Petal & Pine", "invented", "body", 5, ["petal & pine", "Petal and Pine"], ["petalandpine"]),
    _b(
        "Velvetine Lab",
        "invented",
        "makeup",
        7,
        ["Velvetine", "velvetine lab", "VELVETINE LAB"],
        ["velvetinelab"],
    ),
    _b("GlowHaus", "invented", "makeup", 6, ["Glowhaus", "glowhaus", "Glow Haus"], ["glowhaus"]),
    _b("Saltmoss", "invented", "skin", 4, ["saltmoss", "SALTMOSS"], ["saltmoss"]),
    _b("Nuvé Skin", "invented", "skin", 5, ["Nuve Skin", "nuvé skin", "Nuvé"], ["nuveskin"]),
    _b("Kindred Clay", "invented", "skin", 3, ["kindred clay"]),
    _b(
        "Brightwell & Co",
        "invented",
        "makeup",
        4,
        ["Brightwell", "brightwell & co", "Brightwell and Co"],
    ),
    _b("Juniper Vale", "invented", "fragrance", 3, ["juniper vale"], ["junipervale"]),
    _b("Halcyon Hue", "invented", "makeup", 5, ["halcyon hue", "Halcyon"], ["halcyonhue"]),
    _b("Dewlight", "invented", "skin", 6, ["dewlight", "DEWLIGHT", "Dew Light"], ["dewlight"]),
    _b("Sablé Studio", "invented", "makeup", 3, ["Sable Studio", "sablé studio"]),
    _b("Auralis", "invented", "fragrance", 3, ["auralis"]),
    _b("Cinder & Sage", "invented", "body", 3, ["cinder & sage", "Cinder and Sage"]),
    _b("Fernleaf Apothecary", "invented", "skin", 3, ["Fernleaf", "fernleaf apothecary"]),
    _b("Pomelo Beauty", "invented", "makeup", 5, ["Pomelo", "pomelo beauty"], ["pomelobeauty"]),
    _b("Rosalind Rae", "invented", "makeup", 4, ["rosalind rae", "Rosalind Rae Beauty"]),
    _b("Koralune", "invented", "skin", 4, ["koralune", "KORALUNE"], ["koralune"]),
    _b("Honeyglaze", "invented", "makeup", 6, ["honeyglaze", "Honey Glaze"], ["honeyglaze"]),
    _b("Verdant Veil", "invented", "skin", 3, ["verdant veil"]),
    _b("Opaline Cosmetics", "invented", "makeup", 4, ["Opaline", "opaline cosmetics"]),
    _b("Lune Atelier", "invented", "makeup", 4, ["lune atelier", "LUNE ATELIER"], ["luneatelier"]),
    _b("Maison Clairé", "invented", "fragrance", 3, ["Maison Claire", "maison clairé"]),
    _b("Tidepool Skincare", "invented", "skin", 3, ["Tidepool", "tidepool"], ["tidepoolskin"]),
    _b("Quill & Quartz", "invented", "makeup", 3, ["quill & quartz", "Quill and Quartz"]),
    _b("Blushbird", "invented", "makeup", 5, ["blushbird", "BLUSHBIRD"], ["blushbird"]),
    _b("Noa Noir", "invented", "makeup", 3, ["noa noir", "NOA NOIR"], ["noanoir"]),
    _b("Mirra Beauty", "invented", "skin", 3, ["Mirra", "mirra beauty"], ["mirrabeauty"]),
)

# --------------------------------------------------------------------------------------------
# Templates. Slots: {B} {B2} {B3} brands; {P} {P2} {P3} a product of that brand's category;
# {S} shade, {E} emoji, {L} an emoji that may touch the next word, {U} URL, {H} @handle,
# {N} price, {D} day, {X} person's name.
# --------------------------------------------------------------------------------------------

ONE_BRAND = (
    "just bought the new {B} {P} and wow {E}",
    "{B}'s new {P} is everything",
    "obsessed with {B} rn",
    "anyone tried {B}? thinking about getting their {P}",
    "has anyone tried the {B} {P}?? need honest reviews",
    "restocked my {B} {P} for the 4th time {E}",
    "{B} never misses {E}",
    "ok the {B} {P} lives up to the hype",
    "wearing {B} {P} in {S} today {E}",
    "my holy grail {P} is from {B} and I will not be taking questions",
    "the {B} sale is on!! {U}",
    "PR package from {B} came today, thank u {H} {E}",
    "{B} just dropped a new {P} and I need it immediately",
    "is {B} cruelty free? asking before I buy the {P}",
    "grwm ft. my fave {B} {P} {U}",
    "3 weeks using the {B} {P} - skin is clearer and texture is better {E}",
    "if {B} discontinues the {P} I will riot",
    "{B} {P} in {S} is the prettiest shade ever made",
    "found the {B} {P} on sale for ${N} and screamed {E}",
    "my sister stole my {B} {P} again 🙄",
    "who else is waiting for {B} to restock the {P}",
    "first impressions of {B}: packaging 10/10, formula 8/10 {E}",
    "I was not prepared for how good the {B} {P} smells",
    "my derm recommended {B} and my skin finally calmed down",
    "{B} {P} review: blends like a dream, lasts all day, zero creasing {E}",
    "can't believe I slept on {B} for so long",
    "the lady at the {B} counter talked me into the {P} and she was right",
    "adding the {B} {P} to my wishlist {E}",
    "{B} pls bring back the old formula of the {P} 😭",
    "swatches of the new {B} {P} {U}",
    "small brand rec: {B}! their {P} is so good for the price",
    "told myself no more {P}s... then {B} launched a new one {E}",
    "shoutout to {B} for the shade range 🫶🏾",
    "my current fave: {B} {P}. that's it that's the tweet",
    "{B} {P} or nothing",
    "using up my {B} {P} before I buy anything new, project pan day {N}",
    "love that the {B} {P} is refillable {E}",
    "can someone explain why the {B} {P} is sold out everywhere {E}",
    "ordered from {B} on {D}, arrived today, already in love",
    "{L}{B} {P} {E}",
    "new in from ({B}): the {P} in {S} {U}",
    "in my {B} era {E}",
    "{B} is the only {P} that doesn't break me out",
    "{B} really ate with the {P} {E}",
    "finished my first {B} {P}!! empties post coming soon",
    "the {B} launch event looked so fun {E}",
    "spent way too much at {B} today oops {E}",
    "the {P} from {B} is a 10/10 dupe for something 3x the price",
    "{X} got me the {B} {P} for my birthday and I'm crying {E}",
    "why is nobody talking about {B}?? the {P} is insane",
    "{B} {P} on the left, no makeup on the right {E} {U}",
    "drugstore gem: {B} {P}, ${N} and better than my luxury one",
    "the way {B} packs their orders 😍 so cute",
    "applied the {B} {P} at 7am and it's still perfect at 6pm",
    "back on my {B} bs {E}",
    "teh {B} {P} is giving glass skin",
    "not the {B} {P} making me look 5 years younger {E}",
    "{B} customer service replaced my broken {P} in 2 days, love them",
    "pls tell me the {B} {P} comes in more shades",
    "running to {B} after work to grab the {P} before it sells out",
    "three pumps of {B} {P} and I'm ready for the day",
    "saw {B} at the airport duty free and obviously bought the {P} {E}",
    "the real benefit of the {B} {P}? it survives a whole shift {E}",
    "{B} {P} for that glossy, lit-from-within look",
    "nothing ordinary about the {B} {P}, it's stunning",
    "ok story time: went to {B} for one {P}, walked out with a whole new routine, the staff "
    "were so sweet and now my skin looks better than it has in years {E}",
    "full review of the {B} {P} after a month: texture is lovely, scent is subtle, a little "
    "goes a long way and it sits nicely under makeup. only complaint is the packaging {E}",
    "my everyday makeup in order: primer, {B} {P}, a little concealer, cream blush, brow gel, "
    "mascara and whatever lip oil is in my bag. takes ten minutes and I feel like a person",
    "been testing the {B} {P} against my old favourite for two weeks, one side of my face "
    "each, and honestly I can't tell the difference except the price",
    "{H} you need to try {B}, trust me",
)

TWO_BRANDS = (
    "{B} > {B2} for {P}, fight me",
    "dupe alert: {B} {P} vs {B2} - basically identical {E}",
    "switched from {B} to {B2} and my skin is thanking me",
    "{B} and {B2} in one routine, who's stopping me",
    "haul: {B}, {B2} and a sneaky {P} {E}",
    "{B} {P} + {B2} {P2} = perfect combo",
    "is {B} better than {B2}? genuinely asking",
    "not me buying {B} when I have 3 {B2} {P2}s at home",
    "{B} x {B2} collab when?? 👀",
    "using {B} underneath and {B2} on top today, glowing {E}",
    "my {P} lineup: {B} for everyday, {B2} for events",
    "forget {B2}, the {B} {P} is where it's at",
    "{B}'s {P} reminds me of {B2} but cheaper",
    "went into {B} for one thing and left with {B2} {P2} too {E}",
    "{B} or {B2} for a first {P}? help",
    "the {B} {P} paired with {B2} {P2} is unreal {E}",
    "the shade matching struggle is real: {B} {P} was too pink, {B2} was too yellow, so now "
    "I mix them on the back of my hand every morning like a little chemist {E}",
)

# Complaints are only ever attached to invented brands.
ONE_INVENTED_BRAND = (
    "tbh the {B} {P} is overrated, sorry",
    "the {B} {P} made my skin feel wierd, anyone else?",
    "returned the {B} {P}, the shade range is tiny",
    "{B} {P} oxidised on me within an hour 😩",
    "not impressed with {B} tbh, the {P} pills under everything",
)

THREE_BRANDS = (
    "haul: {B}, {B2}, {B3} {E}",
    "today's face: {B} {P}, {B2} {P2}, {B3} {P3} {E}",
    "ranking my fave brands: 1. {B} 2. {B2} 3. {B3}",
    "empties this month: {B} {P}, {B2} {P2} and {B3} {P3}",
    "{B}, {B2} and {B3} all launching {P}s the same week?? my bank account",
)

# Posts without a brand. Several use brand-like words in their ordinary sense (or people's
# and places' names that a brand list happens to contain); none of them is labelled.
NO_BRAND = (
    "the benefit of wearing spf every single day is real, my skin has never looked better {E}",
    "Benefit of double cleansing: no more clogged pores",
    "glossy lips are back and I am not complaining {E}",
    "just an ordinary {D} doing my ordinary routine: cleanser, moisturizer, spf, done",
    "oat milk latte and a sheet mask, {D} reset {E}",
    "a dove just landed on my windowsill mid skincare routine 🕊️ nature is healing",
    "my lashes look so lush after a month of lash serum omg",
    "new boots + red lip = winter mode activated {E}",
    "Boots on, lipstick on, let's go {E}",
    "mac and cheese, face mask, early night. perfect {D}",
    "Essence or toner first?? k-beauty girlies help {E}",
    "hourglass timer for my 10 minute face mask, I'm a professional now",
    "Origins of the glazed donut skin trend, a thread 🧵",
    "my friend Douglas just learned what primer is and won't stop talking about it 😂",
    "Eva did my brows today and they are PERFECT {E}",
    "lilly and I tried the glass skin routine together lol",
    "avril lavigne eyeliner era is back and I'm so ready {E}",
    "weekend trip to stratford-upon-avon, packed my whole skincare fridge lol",
    "honestly a rare beauty moment when my winged liner matches on both sides",
    "does anyone else's foundation oxidise by lunch??",
    "what's the best concealer for dry under eyes? budget under ${N} {E}",
    "skin cycling night 2: retinol. pray for me {E}",
    "no makeup day and honestly? loving it {E}",
    "unpopular opinion: setting spray does nothing",
    "tried a milk bath for the first time, would soak again 🛁",
    "this glossy finish on my nails ✨",
    "my skin barrier is begging for mercy after that peel {E}",
    "Mila asked me to do her makeup for prom!! 😭💕",
    "Mahogany hair dye round 2 came out so rich {E}",
    "Sorbet pink nails for spring {E}",
    "Bonjour from Paris {E} my skin hates the water here tho",
    "ordinary people don't double cleanse, apparently",
    "Lush green eyeshadow look for spring 🌿",
    "essence, serum, moisturizer, spf. the four horsemen of my morning",
    "the glow is real ✨ #glowup",
    "my grwm videos get 12 views and I love every one of those people",
    "how do you guys get your brows to stay put all day",
    "slugging before bed changed my life, no notes",
    "someone explain niacinamide to me like I'm five",
    "lip liner one shade darker than your lipstick, trust {E}",
    "I'm begging brands to make mascara that doesn't flake",
    "blush on the nose, blush on the chin, blush everywhere {E}",
    "got my brows laminated and I look permanently surprised 😂",
    "sunscreen reapplication over makeup is a scam and I refuse to be gaslit",
    "my makeup bag is a crime scene rn {E}",
    "Eva and Lili keep stealing my lip oils, time for a lock",
    "the dove outside my window watches me do my skincare every morning lol",
    "glass skin? more like glazed ham. too much highlighter {E}",
    "does anyone know a good facialist in manchester?",
    "5 min face for work: tint, concealer, brow gel, balm. done",
    "Kicks, jeans and a bold lip {E}",
    "Douglas from work asked what a beauty blender is 😭",
    "retinol purge or breakout? I can't tell anymore {E}",
    "which lipstick shade for a first date? help {E}",
    "skincare fridge is full again oops",
    "a milk toner sounds fake but my skin loves it",
    "the benefit of a good primer cannot be overstated",
    "Hourglass figure who? I'm here for the eyeliner",
    "makeup tutorials at 2am instead of sleeping {E}",
    "going au naturale today, no makeup at all {E}",
    "started a proper skincare routine three months ago: gentle cleanser, a hydrating serum, "
    "moisturizer and sunscreen every single morning. my skin is calmer, the redness is going "
    "down and I actually enjoy it now {E}",
    "can we talk about how expensive makeup has gotten? a concealer used to be ten bucks and "
    "now it's thirty, and the tubes get smaller every year. rant over {E}",
    "asked my grandma what her skincare routine was and she said soap, water and minding her "
    "own business. she's eighty and glowing, I have 14 products and a breakout",
    "which is better for acne scars, retinol or vitamin c? asking for me",
    "anyone else do their makeup on the train? the bumps are not helping {E}",
    "lip balm in every bag, every pocket, every drawer",
    "my brows grew back after years of overplucking, there is hope {E}",
    "bought a new mirror and now I see every pore, regret",
    "red lip on a {D}? why not {E}",
    "how long do you keep mascara before tossing it?",
    "foundation shade matching in store lighting should be illegal",
    "pink eyeshadow era, no thoughts just vibes {E}",
    "sheet mask and a horror movie, ideal {D} night",
    "I only wear makeup on zoom calls now lol",
    "dewy or matte? choose wisely {E}",
    "my sunscreen left a white cast again, the search continues",
    "got caught in the rain with mascara on, a tragedy in three acts {E}",
    "ordinary moisturizer, extraordinary results lol",
    "dove grey eyeshadow is so underrated {E}",
    "Dove grey liner with a nude lip, trust me",
    "glossy hair after one hair mask? I'm sold {E}",
    "lush lashes without extensions, is it possible?",
    "milk and honey face mask at home, my kitchen smells amazing 🍯",
    "Boots season means moody lip season {E}",
    "my mac died mid tutorial so now I'm doing my makeup from memory 😭",
    "douglas fir candle, bath, face mask. perfect night {E}",
    "Eva and I went to the mall and tried every lipstick tester",
)

# Extra no-brand sentences to lengthen posts (both kinds).
NEUTRAL_EXTRA = (
    *FILLERS,
    "skin prep is everything",
    "my lids are so oily",
    "it's giving soft glam",
    "swatches in the replies",
    "lighting is natural, no filter",
    "not me doing my makeup in the car again",
)

STYLE_WEIGHTS = (
    ("plain", 66),
    ("hashtag", 9),
    ("emoji", 5),
    ("paren", 3),
    ("upper", 2),
    ("lower", 15),
)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


#: A gold span: start, end (code points) and the kind of the brand it names.
SpanKind = tuple[int, int, str]


@dataclass
class Draft:
    """Text under construction with the brand spans written into it so far."""

    parts: list[str] = field(default_factory=list)
    length: int = 0
    spans: list[SpanKind] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def add_brand(self, text: str, kind: str) -> None:
        self.spans.append((self.length, self.length + len(text), kind))
        self.add(text)

    def last_char(self) -> str:
        for part in reversed(self.parts):
            if part:
                return part[-1]
        return ""

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass(frozen=True)
class Rendered:
    text: str
    spans: tuple[SpanKind, ...]


SLOT = re.compile(r"\{([A-Z]\d?)\}")


URL_OR_WORD = re.compile(r"\S+")


def _lower_except_urls(text: str) -> str:
    """Lower-case a post as people type it, leaving links alone (offsets do not move)."""

    def lower(match: re.Match[str]) -> str:
        word = match.group()
        if word.startswith("http") or len(word.lower()) != len(word):
            return word
        return word.lower()

    return URL_OR_WORD.sub(lower, text)


class Generator:
    """Seeded generator of posts; every random choice goes through ``self.rng``."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    # -- small pickers -------------------------------------------------------------------

    def handle(self) -> str:
        head = self.rng.choice(HANDLE_HEADS)
        tail = self.rng.choice(HANDLE_TAILS)
        return f"@{head}{tail}"

    def url(self) -> str:
        alphabet = string.ascii_letters + string.digits
        return "https://t.co/" + "".join(self.rng.choice(alphabet) for _ in range(10))

    def emoji(self) -> str:
        return "".join(self.rng.choice(EMOJI) for _ in range(self.rng.choice((1, 1, 1, 2, 3))))

    def weighted(self, options: Sequence[tuple[str, int]]) -> str:
        names = [name for name, _ in options]
        weights = [weight for _, weight in options]
        return self.rng.choices(names, weights=weights, k=1)[0]

    def filler(self, slot: str) -> str:
        if slot == "S":
            return self.rng.choice(SHADES)
        if slot == "E":
            return self.emoji()
        if slot == "L":
            return self.rng.choice(LEAD_EMOJI)
        if slot == "U":
            return self.url()
        if slot == "H":
            return self.handle()
        if slot == "N":
            return str(self.rng.choice((6, 8, 9, 12, 14, 15, 18, 22, 24, 29, 32, 38, 45)))
        if slot == "D":
            return self.rng.choice(DAYS)
        if slot == "X":
            return self.rng.choice(("my mum", "my bf", "my bestie", "my sister", "my gf"))
        raise ValueError(f"unknown slot {slot!r}")

    # -- brand mentions ------------------------------------------------------------------

    def write_brand(self, draft: Draft, brand: Brand, next_char: str) -> None:
        """Append one mention of ``brand`` in a style the surrounding characters allow."""
        before = draft.last_char()
        free_left = before in ("", " ")
        free_right = next_char in ("", " ", ",", ".", "!", "?", ":")
        style = self.weighted(STYLE_WEIGHTS)
        if style == "hashtag" and not (free_left and free_right and brand.tags):
            style = "plain"
        if style in ("emoji", "paren") and not (free_left and free_right):
            style = "plain"
        form = self.rng.choice(brand.forms)
        if style == "hashtag":
            draft.add("#")
            draft.add_brand(self.rng.choice(brand.tags), brand.kind)
        elif style == "emoji":
            draft.add(self.rng.choice(LEAD_EMOJI))
            draft.add_brand(form, brand.kind)
        elif style == "paren":
            draft.add("(")
            draft.add_brand(form, brand.kind)
            draft.add(")")
        elif style == "upper" and form.upper() != form and len(form.upper()) == len(form):
            draft.add_brand(form.upper(), brand.kind)
        elif style == "lower" and len(form.lower()) == len(form):
            draft.add_brand(form.lower(), brand.kind)
        else:
            draft.add_brand(form, brand.kind)

    def render(self, draft: Draft, template: str, brands: Sequence[Brand]) -> None:
        """Append ``template`` with its slots filled; brand slots take ``brands`` in order."""
        pos = 0
        for match in SLOT.finditer(template):
            draft.add(template[pos : match.start()])
            slot = match.group(1)
            pos = match.end()
            if slot[0] == "B":
                index = int(slot[1:] or "1") - 1
                next_char = template[pos : pos + 1]
                self.write_brand(draft, brands[index], next_char)
            elif slot[0] == "P":
                index = int(slot[1:] or "1") - 1
                category = brands[index].category if index < len(brands) else "makeup"
                draft.add(self.rng.choice(PRODUCTS[category]))
            else:
                draft.add(self.filler(slot))
        draft.add(template[pos:])

    # -- posts ---------------------------------------------------------------------------

    def post(self, templates: Sequence[str], brands: Sequence[Brand]) -> Rendered:
        """One post: optional reply handle/opener, the template(s), decorations."""
        for _ in range(50):
            rendered = self._post_once(templates, brands)
            words = len(rendered.text.split())
            if 5 <= words <= 50:
                return rendered
        raise RuntimeError(f"cannot fit template(s) {templates!r} into 5-50 words")

    def _post_once(self, templates: Sequence[str], brands: Sequence[Brand]) -> Rendered:
        rng = self.rng
        draft = Draft()
        if rng.random() < 0.10:
            draft.add(self.handle() + " ")
        if rng.random() < 0.15:
            draft.add(rng.choice(OPENERS) + " ")
        if rng.random() < 0.12:
            draft.add(rng.choice(NEUTRAL_EXTRA) + ". ")
        for index, template in enumerate(templates):
            if index:
                ended = draft.last_char() in ".?!"
                draft.add(rng.choice((" ", "\n") if ended else (". ", " ", "! ", "\n")))
            self.render(draft, template, brands)
        extra = 3 if rng.random() < 0.1 else 1 if rng.random() < 0.18 else 0
        for sentence in rng.sample(NEUTRAL_EXTRA, extra):
            ended = draft.last_char() in ".?!"
            draft.add(rng.choice((" ", "\n") if ended else (". ", ", ", " - ", "\n", ". ")))
            draft.add(sentence)
        if rng.random() < 0.2:
            draft.add(" " + rng.choice(CLOSERS))
        if rng.random() < 0.3:
            draft.add(" " + self.emoji())
        if brands and rng.random() < 0.15:
            tagged = rng.choice(list(brands))
            if tagged.tags:
                draft.add(" #")
                draft.add_brand(rng.choice(tagged.tags), tagged.kind)
        if rng.random() < 0.35:
            for tag in rng.sample(GENERIC_TAGS, rng.choice((1, 1, 2, 3))):
                draft.add(" #" + tag)
        if rng.random() < 0.22:
            draft.add(" " + self.url())
        text = draft.text
        spans = list(draft.spans)
        if rng.random() < 0.12:
            text = _lower_except_urls(text)
        elif text[:1].islower() and rng.random() < 0.4:
            text = text[:1].upper() + text[1:]  # a brand at the start stays a brand
        if rng.random() < 0.16:
            text, spans = self._double_space(text, spans)
        return Rendered(text, tuple(spans))

    def _double_space(self, text: str, spans: list[SpanKind]) -> tuple[str, list[SpanKind]]:
        inside = {i for start, end, _ in spans for i in range(start, end)}
        gaps = [i for i, ch in enumerate(text) if ch == " " and i not in inside]
        if not gaps:
            return text, spans
        at = self.rng.choice(gaps)
        shifted = [(s + 1 if s > at else s, e + 1 if e > at else e, k) for s, e, k in spans]
        return text[:at] + " " + text[at:], shifted


# --------------------------------------------------------------------------------------------
# Data set assembly
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoPost:
    id: str
    text: str
    created_at: str
    author_id: str
    spans: tuple[SpanKind, ...]


def _mention_pool(rng: random.Random) -> list[Brand]:
    pool = [brand for brand in BRANDS for _ in range(brand.count)]
    rng.shuffle(pool)
    return pool


def _take(pool: list[Brand], k: int) -> list[Brand]:
    """Pop ``k`` distinct brands from the end of ``pool``."""
    chosen: list[Brand] = []
    index = len(pool) - 1
    while len(chosen) < k and index >= 0:
        if all(pool[index].name != other.name for other in chosen):
            chosen.append(pool.pop(index))
        index -= 1
    return chosen


def _iso(moment: datetime, *, micro: bool = False) -> str:
    if micro:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def generate(seed: int) -> list[DemoPost]:
    """All demo posts, in time order, with their gold spans."""
    gen = Generator(seed)
    rng = gen.rng
    pool = _mention_pool(rng)
    rendered: list[Rendered] = []
    while pool:
        roll = rng.random()
        k = 3 if roll < 0.07 else 2 if roll < 0.33 else 1
        brands = _take(pool, min(k, len(pool)))
        table = (ONE_BRAND, TWO_BRANDS, THREE_BRANDS)[len(brands) - 1]
        if brands[0].kind == "invented" and len(brands) == 1 and rng.random() < 0.15:
            table = ONE_INVENTED_BRAND
        templates = [rng.choice(table)]
        if len(brands) == 1 and rng.random() < 0.12:
            templates.append(rng.choice(NEUTRAL_EXTRA))
        rendered.append(gen.post(templates, brands))
    with_brand = len(rendered)
    no_brand = round(with_brand * NO_BRAND_SHARE / (1 - NO_BRAND_SHARE))
    no_brand_templates = list(NO_BRAND)
    for index in range(no_brand):
        if index % len(no_brand_templates) == 0:
            rng.shuffle(no_brand_templates)
        template = no_brand_templates[index % len(no_brand_templates)]
        rendered.append(gen.post([template], []))
    rng.shuffle(rendered)

    authors = [str(rng.randrange(10**7, 10**18)) for _ in range(160)]
    span_seconds = int((LAST_POST - FIRST_POST).total_seconds())
    offsets = sorted(rng.randrange(span_seconds) for _ in rendered)
    posts: list[DemoPost] = []
    for item, offset in zip(rendered, offsets, strict=True):
        moment = FIRST_POST + timedelta(seconds=offset, milliseconds=rng.randrange(1000))
        millis = int(moment.timestamp() * 1000)
        snowflake = ((millis - TWITTER_EPOCH_MS) << 22) | rng.randrange(1 << 22)
        posts.append(
            DemoPost(
                id=str(snowflake),
                text=item.text,
                created_at=_iso(moment.replace(microsecond=0)),
                author_id=rng.choice(authors),
                spans=item.spans,
            )
        )
    return posts


def _result_id(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + "_-"
    return "".join(rng.choice(alphabet) for _ in range(10))


def to_label_studio(posts: Sequence[DemoPost], seed: int) -> list[dict[str, object]]:
    """The gold spans as a Label Studio JSON export (one completed annotation per task)."""
    rng = random.Random(seed + 1)
    tasks: list[dict[str, object]] = []
    moment = ANNOTATION_START
    for number, post in enumerate(posts, start=1):
        moment += timedelta(seconds=rng.randrange(15, 140), microseconds=rng.randrange(10**6))
        updated = moment + timedelta(minutes=rng.randrange(20)) if rng.random() < 0.1 else moment
        result = [
            {
                "id": _result_id(rng),
                "from_name": "label",
                "to_name": "text",
                "type": "labels",
                "value": {
                    "start": start,
                    "end": end,
                    "text": post.text[start:end],
                    "labels": [LABEL],
                },
            }
            for start, end, _ in sorted(post.spans)
        ]
        tasks.append(
            {
                "id": number,
                "data": {"text": post.text, "post_id": post.id},
                "annotations": [
                    {
                        "id": number,
                        "completed_by": 1,
                        "result": result,
                        "was_cancelled": False,
                        "created_at": _iso(moment, micro=True),
                        "updated_at": _iso(updated, micro=True),
                    }
                ],
                "predictions": [],
            }
        )
    return tasks


def _post_json(post: DemoPost) -> str:
    record = {
        "id": post.id,
        "text": post.text,
        "created_at": post.created_at,
        "author_id": post.author_id,
        "lang": "en",
        "source": "demo",
        "query": QUERY,
    }
    return json.dumps(record, ensure_ascii=False)


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run scripts/build_brand_list.py first (or pass --resources)"
        )
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def readme(posts: Sequence[DemoPost], resources: Path, seed: int) -> str:
    """The README with counts computed from ``posts`` and the shipped brand lists."""
    listed = {name.casefold() for name in _read_list(resources / "brands.txt")}
    exact = set(_read_list(resources / "brands_case_sensitive.txt"))
    span_texts = [post.text[s:e] for post in posts for s, e, _ in post.spans]
    span_kinds = Counter(kind for post in posts for _, _, kind in post.spans)
    n_spans = len(span_texts)
    in_listed = sum(text.casefold() in listed for text in span_texts)
    in_exact = sum(text in exact for text in span_texts)
    unknown = span_kinds["unlisted"] + span_kinds["invented"]
    with_brand = sum(bool(post.spans) for post in posts)
    kinds = Counter(brand.kind for brand in BRANDS)
    invented = [brand for brand in BRANDS if brand.kind == "invented"]
    words = [len(post.text.split()) for post in posts]

    def share(part: int, whole: int) -> str:
        return f"{part} ({100 * part / whole:.1f} %)"

    n_posts = len(posts)
    rows = [
        ("posts", str(n_posts)),
        ("posts with at least one brand", share(with_brand, n_posts)),
        ("posts without a brand", share(n_posts - with_brand, n_posts)),
        ("brand spans", str(n_spans)),
        ("spans naming a brand that is in `brands.txt`", share(span_kinds["listed"], n_spans)),
        (
            "spans naming a brand of `brands_case_sensitive.txt`",
            share(span_kinds["exact"], n_spans),
        ),
        ("spans naming a brand on neither list (real or invented)", share(unknown, n_spans)),
        ("spans whose exact text is in `brands.txt` (any case)", share(in_listed, n_spans)),
        ("spans whose exact text is in `brands_case_sensitive.txt`", share(in_exact, n_spans)),
        (
            "spans whose exact text is in neither list",
            share(n_spans - in_listed - in_exact, n_spans),
        ),
        (
            "distinct brands",
            f"{len(BRANDS)}: {kinds['listed']} in `brands.txt`, {kinds['exact']} "
            f"case-sensitive, {kinds['unlisted']} real but unlisted, "
            f"{kinds['invented']} invented",
        ),
        ("words per post", f"{min(words)}-{max(words)} (mean {sum(words) / len(words):.1f})"),
    ]
    invented_note = (
        f"The {len(invented)} invented brands ({', '.join(b.name for b in invented[:6])}, "
        "...) exist only here, so no list knows them: a model has to learn them from context."
    )
    table = "\n".join(
        ["| what | count |", "|---|---|", *(f"| {what} | {value} |" for what, value in rows)]
    )

    return f"""# Demo posts (synthetic)

`posts.jsonl` and `gold_export.json` are a small, **synthetic** data set for demos, tests and
the cold-start feedback loop. They were generated by `scripts/generate_demo_posts.py`
(seed {seed}) from templates and vocabulary written for brandloop: no text comes from real
posts or from a published corpus. Real brand names appear as facts; every opinion in the posts
is invented. Regenerate with `python scripts/generate_demo_posts.py` (the output is
byte-for-byte deterministic).

## Files

- `posts.jsonl`: one post a line: `id` (19-digit X-style id), `text`, `created_at`
  (ISO 8601, UTC), `author_id`, `lang` (`en`), `source` (`demo`), `query` (`{QUERY}`).
- `gold_export.json`: the gold `{LABEL}` spans as a Label Studio JSON export: one task per
  post (`data.text`, `data.post_id`), one completed annotation per task. Offsets are Python
  code points and `text[start:end] == value.text` holds for every span. Posts without a brand
  have an annotation with an empty `result`.
- `other_posts.jsonl` (not generated here: `scripts/export_other_posts.py`): 3,394 real posts
  of other topics (WNUT-17 train texts, CC-BY 4.0, no labels; see `../ATTRIBUTION.md`), a
  pool for hard negatives (`--set train.hard_negatives=300 --set train.labelled_copies=2
  --set train.negatives_uri=ner/resources/demo/other_posts.jsonl`). Not used by default: the
  trade-off it buys is in `bench/README.md` ("Demo champion: hard negatives"). With it the
  demo's challengers scored 0.73-0.78 on the demo's gold set, under the 0.80 threshold, so
  that demo ends with the gazetteer still champion unless `--set threshold=0.7` is added too.
- `other_gold_export.json` (`scripts/export_other_posts.py` too): the same 3,394 posts with
  their brands (WNUT-17's corporations and products, 363 spans) as a Label Studio JSON
  export, a rehearsal set (`--set train.rehearsal_uri=ner/resources/demo/other_gold_export.json`):
  labelled posts of other topics trained beside the beauty labels. Not used by default: with
  the fast recipe and `train.labelled_copies=3`, a model trained on these beauty posts keeps
  WNUT-17 dev precision near 0.28-0.30 instead of 0.06 (`bench/README.md`, "Demo champion: a
  rehearsal set"), but on the demo's own gold set its challengers scored 0.70-0.77, under
  the 0.80 threshold. `brandloop demo --set train.rehearsal_uri=...` adds the set to the
  demo's own in-domain recipe (en_core_web_sm, lr 0.001, 20 epochs).

## Counts

{table}

{invented_note}

## Labelling convention

- A brand (maker, sub-brand or retailer brand) is labelled wherever it is written out, in any
  casing, with typos, and with the words of its own name ("Maybelline New York", "Dior
  Beauty", "Fenty Skin"). Product names ("Pillow Talk", "Fit Me") are not brands.
- In a hashtag that names a brand, in one word or not (`#Maybelline`, `#fentybeauty`), the
  part after `#` is labelled. @handles are never labelled.
- Words that are also brand names ("benefit", "milk", "dove" the bird, "ordinary", "glossy",
  "lush", "boots") are labelled only when they name the brand; several posts use them in their
  ordinary sense on purpose, and some posts mention people or places whose names are on the
  brand list ("Douglas", "Eva", "Avon").
- The posts contain what real posts contain: emoji (astral, ZWJ sequences, flags, skin tones),
  hashtags, @handles, t.co links, double spaces, line breaks, all-lower-case posts and typos.
"""


def write(out: Path, seed: int, resources: Path) -> tuple[int, int]:
    """Generate and write the three files; return (posts, spans)."""
    posts = generate(seed)
    text = readme(posts, resources, seed)  # fails early if the brand lists are missing
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "posts.jsonl": "".join(_post_json(post) + "\n" for post in posts),
        "gold_export.json": json.dumps(to_label_studio(posts, seed), ensure_ascii=False, indent=2)
        + "\n",
        "README.md": text,
    }
    for name, content in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(content, encoding="utf-8", newline="\n")
        tmp.replace(out / name)
    return len(posts), sum(len(post.spans) for post in posts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument(
        "--resources",
        type=Path,
        default=DEFAULT_RESOURCES,
        help="folder with brands.txt and brands_case_sensitive.txt (for the README counts)",
    )
    args = parser.parse_args(argv)
    try:
        n_posts, n_spans = write(args.out, args.seed, args.resources)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n_posts} posts with {n_spans} brand spans to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
