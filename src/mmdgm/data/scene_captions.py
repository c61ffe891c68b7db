"""Captions of the synthetic scenes (`mmdgm.data.scenes`) and their exact parser.

A caption describes exactly the attributes of the scene's level, through one of several
templates and, for each attribute value, one of several synonyms, so one image has many
valid captions ("a big red circle at the top left on a black background", "there is a
large crimson disc in the upper left corner against a dark backdrop", ...). Every synonym
and position word belongs to one attribute value only, and no template word is one of
them, so `parse_caption` recovers every attribute from any generated caption exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmdgm.data.scenes import level_attributes

SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": {
        "circle": ("circle", "disc", "ball"),
        "square": ("square", "box", "block"),
        "triangle": ("triangle", "pyramid"),
        "star": ("star", "pentagram"),
    },
    "size": {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")},
    "colour": {
        "red": ("red", "crimson", "scarlet"),
        "green": ("green", "emerald", "lime"),
        "blue": ("blue", "azure", "navy"),
        "yellow": ("yellow", "golden", "lemon"),
    },
    "background": {"black": ("black", "dark"), "white": ("white", "snowy"), "grey": ("grey", "gray", "silver")},
}
VERTICAL = {"top": ("top", "upper"), "bottom": ("bottom", "lower")}
HORIZONTAL = {"left": ("left",), "right": ("right",)}
PLACES = ("at the {v} {h}", "in the {v} {h} corner", "in the {v} {h}")
BACKDROPS = ("on a {c} background", "against a {c} backdrop", "over a {c} background")
TEMPLATES = (
    "a {adj} {noun} {where} {bg}",
    "there is a {adj} {noun} {where} {bg}",
    "this image shows a {adj} {noun} {where} {bg}",
    "{where} there is a {adj} {noun} {bg}",
    "the {noun} {is} {where} {bg}",
    "a picture of a {adj} {noun} {where} {bg}",
)
VOWELS = tuple("aeiou")


def lexicon() -> dict[str, tuple[str, int]]:
    """word -> (slot, value index); slots are the attributes except position, plus its
    "vertical" (top 0, bottom 1) and "horizontal" (left 0, right 1) words."""
    words: dict[str, tuple[str, int]] = {}
    for attribute, table in SYNONYMS.items():
        for v, synonyms in enumerate(table.values()):
            words.update({w: (attribute, v) for w in synonyms})
    for slot, table in (("vertical", VERTICAL), ("horizontal", HORIZONTAL)):
        for v, synonyms in enumerate(table.values()):
            words.update({w: (slot, v) for w in synonyms})
    return words


def caption(values: dict[str, str], rng: np.random.Generator) -> str:
    """One caption of a scene whose described attributes are `values` (attribute -> value)."""

    def pick(options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    adjectives = [pick(SYNONYMS[a][values[a]]) for a in ("size", "colour") if a in values]
    where = ""
    if "position" in values:
        v, h = values["position"].split()
        where = pick(PLACES).format(v=pick(VERTICAL[v]), h=pick(HORIZONTAL[h]))
    bg = pick(BACKDROPS).format(c=pick(SYNONYMS["background"][values["background"]])) if "background" in values else ""
    text = pick(TEMPLATES).format(
        adj=" ".join(adjectives),
        noun=pick(SYNONYMS["shape"][values["shape"]]),
        where=where,
        bg=bg,
        **{"is": ("is " + " and ".join(adjectives)) if adjectives else ""},
    )
    words = text.split()
    return " ".join("an" if w == "a" and nxt.startswith(VOWELS) else w for w, nxt in zip(words, words[1:] + [""]))


def parse_caption(words: Sequence[str], level: int) -> list[int]:
    """The value index of each attribute of `level` that the caption's words state, or -1
    where they state none or contradicting values (position needs one vertical and one
    horizontal word: index 2 * vertical + horizontal)."""
    table = lexicon()
    found: dict[str, set[int]] = {}
    for w in words:
        if w in table:
            slot, v = table[w]
            found.setdefault(slot, set()).add(v)

    def one(slot: str) -> int:
        values = found.get(slot, set())
        return next(iter(values)) if len(values) == 1 else -1

    out = []
    for attribute in level_attributes(level):
        if attribute == "position":
            v, h = one("vertical"), one("horizontal")
            out.append(2 * v + h if v >= 0 and h >= 0 else -1)
        else:
            out.append(one(attribute))
    return out
