"""Property-based tests: arbitrary text, bytes and configs never end in a crash or a traceback.

The tokenizer round trips over arbitrary Unicode live in tests/test_tokens.py
(test_char_round_trip_any_unicode, test_word_round_trip_any_unicode); these add lowercasing, the
vocabulary, the chunked UTF-8 reader, checkpoint loading and random config mappings.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import rnngen.data.sources
from rnngen import checkpoint
from rnngen.config import SECTIONS, Config, resolve, valid_keys
from rnngen.data.sources import Source, read_text
from rnngen.data.tokens import join, split
from rnngen.data.vocab import Vocab
from rnngen.errors import CheckpointError, ConfigError, DataError
from tests.conftest import run_cli

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# --------------------------------------------------------------------------- tokens and vocabulary


@FUZZ
@given(TEXT, st.sampled_from(["char", "word"]))
def test_lowercase_split_and_vocab_round_trip(text, level):
    tokens = split(text, level, lowercase=True)
    if level == "char":
        assert join(tokens, "char") == text.lower()
    vocab = Vocab.build(Counter(tokens), level, lowercase=True)
    assert vocab.decode(vocab.encode(tokens)) == tokens  # every token seen in training has an id


# --------------------------------------------------------------------------- reading text in chunks


def _read(path: Path, chunk_bytes: int) -> str:
    saved = rnngen.data.sources.CHUNK_BYTES
    rnngen.data.sources.CHUNK_BYTES = chunk_bytes  # tiny chunks put a boundary inside every character and CRLF
    try:
        return "".join(read_text(Source(str(path))))
    finally:
        rnngen.data.sources.CHUNK_BYTES = saved


@FUZZ
@given(st.text(alphabet=st.sampled_from("ab\r\n\ufeffé中😀"), max_size=40) | TEXT, st.integers(1, 9))
@example("\ufeffabc", 1)  # found by this test: a BOM split over several reads was kept
def test_chunked_reader_decodes_any_text(scratch, text, chunk_bytes):
    path = scratch / "text.txt"
    path.write_bytes(text.encode("utf-8"))
    expected = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    assert _read(path, chunk_bytes) == expected


@FUZZ
@given(TEXT, TEXT, st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xe4\xb8"]), st.integers(1, 9))
def test_invalid_utf8_is_reported_at_its_byte_offset(scratch, before, after, bad, chunk_bytes):
    path = scratch / "bad.txt"
    head = before.encode("utf-8")
    path.write_bytes(head + bad + ("x" + after).encode("utf-8"))
    with pytest.raises(DataError, match=f"not valid UTF-8 at byte offset {len(head)};"):
        _read(path, chunk_bytes)


# --------------------------------------------------------------------------- checkpoint files


@pytest.fixture(scope="module")
def small_checkpoint(scratch) -> bytes:
    path = scratch / "small.pt"
    payload = {
        "config": Config().to_dict(),
        "model_args": {"vocab_size": 2},
        "model_state": torch.nn.Linear(3, 2).state_dict(),
        "vocab": {"tokens": ["<unk>", "a"], "level": "char"},
    }
    checkpoint.save(path, payload)
    return path.read_bytes()


@FUZZ
@given(st.data())
def test_any_damage_to_a_checkpoint_is_a_clean_error(scratch, small_checkpoint, data):
    """Truncated anywhere, bytes overwritten anywhere, or arbitrary bytes: a dict or a CheckpointError."""
    damage = data.draw(st.sampled_from(["truncate", "overwrite", "random"]))
    blob = bytearray(small_checkpoint)
    if damage == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif damage == "overwrite":
        at = data.draw(st.integers(0, len(blob) - 1))
        patch = data.draw(st.binary(min_size=1, max_size=16))
        blob[at : at + len(patch)] = patch
    else:
        blob = bytearray(data.draw(st.binary(max_size=300)))
    path = scratch / "damaged.pt"
    path.write_bytes(bytes(blob))
    try:
        payload = checkpoint.load(path)
    except CheckpointError as e:
        assert str(path) in str(e)
    else:
        assert payload["format"] == checkpoint.FORMAT


# --------------------------------------------------------------------------- random configs

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**400), 10**400), st.integers(-3, 300), st.floats(), st.text(max_size=12)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=5,
)
RANDOM_KEY = st.builds("{}.{}".format, st.sampled_from(SECTIONS) | st.text(max_size=8), st.text(max_size=10))


@st.composite
def config_mappings(draw):
    """Mostly real keys with arbitrary values, some invented keys and sections, now and then no mapping."""
    if draw(st.integers(0, 19)) == 0:
        return draw(VALUES)
    mapping: dict = {}
    for _ in range(draw(st.integers(0, 8))):
        section, name = draw(st.sampled_from(valid_keys()) | RANDOM_KEY).split(".", 1)
        if draw(st.integers(0, 19)) == 0:
            mapping[section] = draw(VALUES)
        elif isinstance(mapping.setdefault(section, {}), dict):
            mapping[section][name] = draw(VALUES)
    return mapping


def assert_clean_cli_failure(config_path: Path) -> None:
    """The CLI exits 0, or 2 with exactly one `Error:` line; never 1, never a traceback."""
    result = run_cli("sample", "--config", config_path)  # resolves the config, then looks for the run's model
    assert result.exit_code in (0, 2), result.stderr
    assert "Traceback" not in result.stderr
    if result.exit_code == 2:
        assert sum(line.startswith("Error:") for line in result.stderr.splitlines()) == 1, result.stderr


def assert_resolves_or_refuses(config_path: Path) -> None:
    """resolve() succeeds or raises ConfigError (nothing else), and the CLI fails cleanly."""
    try:
        resolve(config_path)
    except ConfigError:
        pass
    assert_clean_cli_failure(config_path)


@FUZZ
@given(config_mappings())
@example({"model": {"dropout": 10**400}})  # found by this test: OverflowError for an int beyond float range
def test_random_config_mapping_resolves_or_is_a_config_error(scratch, mapping):
    path = scratch / "random.yaml"
    path.write_text(yaml.safe_dump(mapping, allow_unicode=True), encoding="utf-8")
    assert_resolves_or_refuses(path)


@FUZZ
@given(st.text(alphabet=st.sampled_from(":- \n\t[]{}!&*#'\",|>%@`?=.01aez"), max_size=60))
@example(".:")  # found by this test: a section named "." crashed the did-you-mean
def test_random_yaml_text_resolves_or_is_a_config_error(scratch, text):
    path = scratch / "raw.yaml"
    path.write_text(text, encoding="utf-8")
    assert_resolves_or_refuses(path)


@FUZZ
@given(st.sampled_from(valid_keys()) | RANDOM_KEY | st.text(max_size=10), st.text(max_size=20))
def test_random_set_item_resolves_or_is_a_config_error(key, value):
    try:
        resolve(None, [f"{key}={value}"])
    except ConfigError:
        pass
