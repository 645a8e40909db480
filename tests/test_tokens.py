from hypothesis import given, settings
from hypothesis import strategies as st

from rnngen.data.tokens import join, split

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)


def test_char_level_round_trip_is_exact():
    text = "Hello,\n  wörld!\t中文 \r\n"
    assert join(split(text, "char"), "char") == text


def test_word_level_tokens():
    assert split("Don't stop, well-known 3.14 dogs' (tails)!\n", "word") == [
        "Don't", "stop", ",", "well-known", "3.14", "dogs", "'", "(", "tails", ")", "!", "\n",
    ]  # fmt: skip


def test_word_level_cjk_one_token_per_character():
    assert split("我们去北京。", "word") == ["我", "们", "去", "北", "京", "。"]


def test_word_level_detokenizer_spacing():
    text = 'He said, "Hello (friend)!" Then: it\'s 1,000 miles.\n\nNext我们去北京。'
    tokens = split(text, "word")
    assert join(tokens, "word") == text


def test_newlines_survive_word_level():
    tokens = split("one\n\ntwo\nthree", "word")
    assert tokens.count("\n") == 3
    assert join(tokens, "word") == "one\n\ntwo\nthree"


def test_lowercase():
    assert split("The CAT", "word", lowercase=True) == ["the", "cat"]


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_char_round_trip_any_unicode(text):
    assert join(split(text, "char"), "char") == text


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_word_round_trip_any_unicode(text):
    """Joining never glues two tokens together: splitting the joined text gives the same tokens."""
    tokens = split(text, "word")
    assert split(join(tokens, "word"), "word") == tokens
    assert "".join(t for t in tokens if not t.isspace()) == "".join(c for c in text if not c.isspace())
