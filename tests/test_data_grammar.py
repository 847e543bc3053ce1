"""Caption grammar: "a" and "an" chosen by the word that follows, checked against a per-word rule."""

import pytest

from clipkit.data.grammar import fix_articles, with_articles
from clipkit.data.shapes import COLOURS, SHAPES


def test_articles_follow_the_next_word_whichever_was_written():
    assert with_articles("a orange star and a red circle") == "an orange star and a red circle"
    assert fix_articles("an red circle and a orange star") == "a red circle and an orange star"
    assert fix_articles("a banana") == with_articles("a banana") == "a banana"


@pytest.mark.parametrize("written", ["a", "an"])
def test_every_colour_and_shape_gets_the_article_a_person_writes(written):
    for word in list(COLOURS) + list(SHAPES):
        expected = ("an " if word[0] in "aeiou" else "a ") + word
        assert fix_articles(f"{written} {word}") == expected
        if written == "a":
            assert with_articles(f"a {word}") == expected
