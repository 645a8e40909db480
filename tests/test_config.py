from pathlib import Path

import pytest

from rnngen.config import Config, from_dict, resolve, valid_keys
from rnngen.data.demo import DEMO_CONFIG
from rnngen.errors import ConfigError
from tests.conftest import run_cli

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_for_every_key():
    config = resolve()
    assert config.model.cell == "lstm" and config.train.batch_size == 64 and config.sample.length == 300
    assert len(valid_keys()) > 40


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_resolves(path):
    resolve(path)


def test_demo_yaml_matches_the_built_in_demo():
    assert resolve(Path(__file__).parent.parent / "configs/demo.yaml") == resolve(None, defaults=DEMO_CONFIG)


def test_precedence_defaults_file_set_flags(tmp_path):
    path = write(tmp_path, "train:\n  lr: 0.01\n  batch_size: 8\n")
    config = resolve(path, ["train.lr=0.02", "train.batch_size=16"], {"train.batch_size": 32})
    assert config.train.lr == 0.02 and config.train.batch_size == 32


def test_yaml_1_1_float_without_dot(tmp_path):
    assert resolve(write(tmp_path, "train:\n  lr: 1e-3\n")).train.lr == 0.001


def test_round_trip_through_plain_dict():
    config = resolve(None, ["data.path=a.txt", "sample.stop=[x, y]"])
    assert from_dict(config.to_dict()) == config
    assert isinstance(config.to_dict()["sample"]["stop"], list)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("train:\n  learning_rate: 0.1\n", "unknown key `train.learning_rate`"),
        ("train:\n  learning_rate: 0.1\n", "did you mean `train.lr`?"),
        ("modle:\n  cell: lstm\n", "unknown section `modle`"),
        ("model:\n  cell: transformer\n", "model.cell: must be one of rnn, lstm, gru"),
        ("train:\n  batch_size: -4\n", "train.batch_size: must be at least 1 (got -4"),
        ("train:\n  batch_size: 0\n", "train.batch_size: must be at least 1"),
        ("train:\n  batch_size: big\n", "train.batch_size: must be a whole number"),
        ("data:\n  val_fraction: 1.5\n", "data.val_fraction: must be between 0 and 1"),
        ("data:\n  val_fraction: 0\n", "data.val_fraction: must be between 0 and 1"),
        ("model:\n  tie_weights: true\n  embedding_dim: 8\n  hidden_size: 16\n", "model.tie_weights needs"),
        ("- just\n- a list\n", "must be a mapping of sections"),
        ("train:\n  lr: 0.1\n  lr: 0.2\n", "duplicate key `lr`"),
        ("train:\n\tlr: 0.1\n", "line 2"),
        ("train: [unclosed\n", "invalid YAML"),
        ("sample:\n  seed: yes\n", "quote it"),
        ("train:\n  max_epochs: null\n", "no stop condition"),
    ],
)
def test_config_errors_name_the_key_and_exit_2(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=None) as info:
        resolve(path)
    assert expected in str(info.value)
    result = run_cli("prepare", "--config", path)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error:") and expected in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_missing_config_file(tmp_path):
    result = run_cli("train", "--config", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "nope.yaml does not exist" in result.stderr


def test_bad_set_items():
    result = run_cli("prepare", "--set", "train.lr")
    assert result.exit_code == 2 and "expected section.key=value" in result.stderr
    result = run_cli("prepare", "--set", "train.lrr=0.1")
    assert result.exit_code == 2 and "did you mean `train.lr`" in result.stderr


def test_several_problems_reported_together(tmp_path):
    path = write(tmp_path, "train:\n  batch_size: 0\n  seq_len: -1\n")
    with pytest.raises(ConfigError) as info:
        resolve(path)
    assert "2 problems" in str(info.value) and "batch_size" in str(info.value) and "seq_len" in str(info.value)


def test_set_text_values_stay_text():
    config = resolve(None, ["sample.seed=007", "data.path=notes.txt"])
    assert config.sample.seed == "007" and config.data.path == ("notes.txt",)


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        Config().train.lr = 1.0  # type: ignore[misc]
