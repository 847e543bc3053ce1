"""Caption grammar, in one place: "a" becomes "an" before a vowel, as captions and prompts are written."""

from __future__ import annotations

import re

_A_BEFORE_VOWEL = re.compile(r"\ba (?=[aeiou])")
_AN = re.compile(r"\ban\b")


def with_articles(text: str) -> str:
    """'a orange circle' -> 'an orange circle'."""
    return _A_BEFORE_VOWEL.sub("an ", text)


def fix_articles(text: str) -> str:
    """"a"/"an" made right for the word that follows, whichever was written ("an red circle" ->
    "a red circle"): for text whose words were swapped after the articles were chosen."""
    return with_articles(_AN.sub("a", text))
