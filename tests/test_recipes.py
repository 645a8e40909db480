"""Recipes: what a run gets for the keys nobody set, by level and budget (rnngen.recipes)."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest
import yaml

from rnngen import recipes
from rnngen.config import TrainConfig, resolve
from tests.conftest import learnable_text, run_cli

CONFIGS = Path(__file__).parent.parent / "configs"
OWN = {"data": ("path",), "train": ("out_dir", "max_minutes", "max_epochs", "recipe")}  # not what a recipe sets


def quickstart(level: str, minutes: float, *extra: str):
    """The README's Quickstart: no config file, only the text, its level, a run directory and a budget."""
    sets = ["data.path=book.txt", f"data.level={level}", "train.out_dir=runs/book", f"train.max_minutes={minutes}"]
    return resolve(None, [*sets, *extra])


def recipe_part(config) -> dict:
    """What a recipe decides: every data, model and train key but the paths and the budget."""
    plain = config.to_dict()
    return {s: {k: v for k, v in plain[s].items() if k not in OWN.get(s, ())} for s in ("data", "model", "train")}


@pytest.mark.parametrize(
    "config_file, level, minutes",
    [("hunger.yaml", "word", 20), ("hunger_long.yaml", "word", 60), ("novel_subword.yaml", "subword", 20)],
)
def test_a_run_without_config_gets_the_shipped_config_of_its_level_and_budget(config_file, level, minutes):
    shipped = resolve(CONFIGS / config_file)
    got = quickstart(level, minutes, f"data.val_fraction={shipped.data.val_fraction}")
    assert recipe_part(got) == recipe_part(shipped)
    assert got.train.recipe == shipped.train.recipe == recipes.choose("auto", "lstm", level, minutes, None)
    written_out = resolve(CONFIGS / config_file, ["train.recipe=none"])  # the file states every key itself
    assert recipe_part(written_out) == recipe_part(shipped)


def test_the_budget_picks_the_recipe():
    assert quickstart("word", 20).train.recipe == "word"
    assert quickstart("word", recipes.LONG_MINUTES).train.recipe == "word-long"
    by_epochs = resolve(None, ["data.path=b.txt", "data.level=word", f"train.max_epochs={recipes.LONG_EPOCHS}"])
    assert by_epochs.train.recipe == "word-long"
    assert resolve(None, ["data.path=b.txt", "data.level=word"]).train.recipe == "word"  # the default 10 epochs


def test_characters_keep_the_field_defaults():
    config = quickstart("char", 20)
    assert config.train.recipe == "char" and config.recipe_keys == ()
    assert recipe_part(config) == recipe_part(quickstart("char", 20, "train.recipe=none"))


def test_every_key_the_user_sets_wins():
    config = quickstart("word", 20, "model.hidden_size=300", "model.embedding_dim=300", "train.lr=5")
    assert (config.model.hidden_size, config.model.embedding_dim, config.train.lr) == (300, 300, 5.0)
    assert config.model.spelling and config.train.optimizer == "sgd"  # the rest still from the word recipe
    assert "model.hidden_size" not in config.recipe_keys and "model.spelling" in config.recipe_keys
    plain = quickstart("word", 20, "train.recipe=none")
    assert recipe_part(plain)["model"] == dataclasses.asdict(plain.model) and not plain.model.spelling


def test_a_recipe_setting_that_clashes_with_the_users_is_named(tmp_path):
    result = run_cli(
        "train", "--set", "data.path=book.txt", "--set", "data.level=word", "--set", "model.hidden_size=64"
    )
    assert result.exit_code == 2
    assert "model.tie_weights needs model.embedding_dim == model.hidden_size" in result.stderr
    assert "model.embedding_dim, model.tie_weights came from the word recipe" in result.stderr
    assert "train.recipe: none" in result.stderr


def test_recipe_names_are_the_config_choices():
    assert typing.get_args(typing.get_type_hints(TrainConfig)["recipe"]) == recipes.NAMES
    valid = {
        s: {f.name for f in dataclasses.fields(cls)} for s, cls in resolve().__dict__.items() if s != "recipe_keys"
    }
    for name, sections in recipes.RECIPES.items():
        for section, values in sections.items():
            assert set(values) <= valid[section], (name, section)


def test_the_run_records_its_recipe_and_resume_keeps_it(tmp_path):
    (tmp_path / "book.txt").write_text(learnable_text(), encoding="utf-8")
    sets = ["--set", "data.path=book.txt", "--set", "data.level=word", "--set", "train.out_dir=runs/book"]
    quick = [*sets, "--set", "train.max_steps=4", "--set", "train.max_epochs=null", "--set", "train.eval_every=2"]
    result = run_cli("train", *quick)
    assert result.exit_code == 0, result.stderr
    assert "recipe word" in result.stderr
    saved = yaml.safe_load((tmp_path / "runs/book/config.yaml").read_text())
    assert saved["train"]["recipe"] == "word" and saved["model"]["spelling"] is True
    info = json.loads(run_cli("info", "runs/book", "--json").stdout)
    assert info["config"]["train"]["recipe"] == "word"
    result = run_cli("train", *sets, "--resume", "--set", "train.max_steps=6", "--set", "train.recipe=none")
    assert result.exit_code == 0, result.stderr
    resumed = yaml.safe_load((tmp_path / "runs/book/config.yaml").read_text())
    assert resumed["model"] == saved["model"]  # the architecture stays the checkpoint's
