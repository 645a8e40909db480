"""model.spelling (rnngen.models.spelling): case variants share a row, the output scores the composed rows, the CLI uses it."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from rnngen import api
from rnngen.config import ModelConfig
from rnngen.models import spelling
from rnngen.models.recurrent import model_args
from rnngen.models.registry import build_model
from tests.conftest import run_cli, tiny_config

TOKENS = ["<unk>", "and", "And", ",", "KING", "king", "King", "\n", "queen", "MacBeth"]
TEXT = "And the King said , and the king went .\nKING :\nAnd the queen said , and the king went .\n" * 30


def test_case_variants_share_their_lower_case_form_and_words_share_their_shape_and_endings():
    assert spelling.features("And") == ["L:and", "C:Title", "S:d"]
    assert spelling.features("lengthen'd") == ["L:lengthen'd", "C:lower", "S:d", "S:'d", "S:n'd"]
    assert spelling.features("KING")[:2] == ["L:king", "C:UPPER"]
    assert spelling.features("MacBeth")[:2] == ["L:macbeth", "C:mixed"]
    assert spelling.features(",") == [] and spelling.features("\n") == []
    args = spelling.model_args(TOKENS)
    assert args["words"] == sorted(args["words"])  # sorted by word, as SpelledEmbedding.rows needs
    names = {}  # shared row -> the words that have it
    for word, row in zip(args["words"], args["features"]):
        names.setdefault(row, set()).add(TOKENS[word])
    kings = {"KING", "king", "King"}
    # only features of at least two words get a row: "L:queen", "C:mixed", "S:eth" are one word's each
    assert sorted(map(sorted, names.values())) == sorted(
        map(sorted, [{"And", "and"}, kings, {"and", "king", "queen"}, {"And", "King"}, {"And", "and"}, kings, kings])
    )  # L:and, L:king, C:lower, C:Title, S:d, S:g, S:ng
    assert args["count"] == 7


def test_a_words_vector_is_its_own_row_plus_the_mean_of_its_shared_rows():
    args = spelling.model_args(TOKENS)
    table = spelling.SpelledEmbedding(len(TOKENS), 3, **args)
    counts = Counter(f for token in TOKENS[1:] for f in spelling.features(token))
    named = [f for w in sorted(set(args["words"])) for f in spelling.features(TOKENS[w]) if counts[f] >= 2]
    rows = dict(zip(named, args["features"]))  # the pairs follow each word's features in order
    king = TOKENS.index("King")
    shared = [table.shared[rows[f]] for f in ("L:king", "C:Title", "S:g", "S:ng")]
    assert torch.allclose(table.weight[king], table.own[king] + sum(shared) / 4)
    queen = TOKENS.index("queen")  # only its shape is shared
    assert torch.allclose(table.weight[queen], table.own[queen] + table.shared[rows["C:lower"]])
    comma = TOKENS.index(",")
    assert torch.equal(table.weight[comma], table.own[comma])
    assert torch.equal(table.rows(4, 7), table.weight[4:7])
    assert torch.equal(table(torch.tensor([[king, comma]])), table.weight[[king, comma]][None])


def test_the_table_kept_for_sampling_follows_every_change_of_the_weights():
    table = spelling.SpelledEmbedding(len(TOKENS), 3, **spelling.model_args(TOKENS))
    with torch.no_grad():
        before = table.weight.clone()
        assert table.weight.data_ptr() == table.weight.data_ptr()  # composed once while nothing changes
        table.shared.add_(1.0)  # an optimizer step, in place
        assert not torch.equal(table.weight, before)
        table.load_state_dict({"own": torch.zeros(len(TOKENS), 3), "shared": torch.zeros_like(table.shared)})
        assert torch.equal(table.weight, torch.zeros(len(TOKENS), 3))
    assert table.weight.requires_grad  # with gradients on, never the kept table


@pytest.mark.parametrize("output", ["full", "adaptive"])
def test_tied_output_scores_words_by_their_composed_rows_and_trains_the_shared_rows(output):
    config = ModelConfig(embedding_dim=8, hidden_size=8, num_layers=1, tie_weights=True, spelling=True,
                         output=output, adaptive_cutoffs=[4] if output == "adaptive" else None)  # fmt: skip
    torch.manual_seed(0)
    net = build_model(model_args(config, len(TOKENS), TOKENS))
    hidden = torch.randn(2, 8)
    table = net.embedding.weight.detach()
    if output == "full":
        expected = torch.log_softmax(hidden @ table.T + net.head.bias.detach(), -1)
    else:
        head = net.head  # head words 0-3 and one cluster for 4-9, every word scored by its composed row
        scores = hidden @ torch.cat([table[:4], head.cluster_weight.detach()]).T + head.bias.detach()
        top = torch.log_softmax(scores, -1)
        tail = torch.log_softmax(hidden @ table[4:].T + head.tail_bias.detach(), -1)
        expected = torch.cat([top[:, :4], top[:, 4:5] + tail], -1)
    assert torch.allclose(torch.log_softmax(net.head(hidden), -1), expected, atol=1e-6)
    loss = -torch.log_softmax(net.head(hidden), -1)[:, TOKENS.index("KING")].sum()  # output side only
    loss.backward()
    assert net.embedding.shared.grad.abs().sum() > 0 and net.embedding.own.grad.abs().sum() > 0
    assert "spelling" not in model_args(ModelConfig(), 50)  # off: the model_args of earlier checkpoints


def test_training_sampling_and_resuming_with_spelling(tmp_path):
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    model = {"tie_weights": True, "embedding_dim": 32, "spelling": True}
    config = tiny_config(tmp_path, tmp_path / "text.txt", data={"level": "word"}, model=model)
    result = run_cli("train", "--config", config)
    assert result.exit_code == 0, result.stderr
    run = tmp_path / "run"
    payload = torch.load(run / "last.pt", weights_only=True)  # the features are plain data
    assert payload["model_args"]["spelling"]["count"] > 0
    assert {"embedding.own", "embedding.shared"} <= set(payload["model_state"])
    loaded = api.load(run / "best.pt")
    (sample,) = loaded.sample("king", length=20, random_seed=0)
    assert sample.text.strip()
    assert run_cli("evaluate", "--checkpoint", run / "best.pt", "--data", tmp_path / "text.txt").exit_code == 0
    info = run_cli("info", run / "best.pt", "--json")
    assert json.loads(info.stdout)["spelling_rows"] == payload["model_args"]["spelling"]["count"]
    result = run_cli("train", "--config", config, "--set", "train.max_steps=30", "--resume")
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data": {"level": "char"}}, "model.spelling needs data.level: word"),
        ({"model": {"input": "onehot"}}, "model.spelling composes the embedding table"),
    ],
)
def test_spelling_where_it_cannot_apply_is_a_clear_error(tmp_path, overrides, message):
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    sections = {"data": {"level": "word"}, "model": {"spelling": True}}
    for section, values in overrides.items():
        sections[section] = {**sections[section], **values}
    result = run_cli("train", "--config", tiny_config(tmp_path, tmp_path / "text.txt", **sections))
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_spelled_source_cannot_grow_its_vocabulary_but_can_fine_tune_on_its_own(tmp_path):
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    source = tiny_config(tmp_path / "a", tmp_path / "text.txt", data={"level": "word"}, model={"spelling": True})
    assert run_cli("train", "--config", source).exit_code == 0
    (tmp_path / "new.txt").write_text(TEXT.replace("queen", "duchess"), encoding="utf-8")
    checkpoint = tmp_path / "a" / "run" / "best.pt"
    tuned = tiny_config(tmp_path / "b", tmp_path / "new.txt", data={"level": "word"},
                        train={"init_from": str(checkpoint)})  # fmt: skip
    result = run_cli("train", "--config", tuned)
    assert result.exit_code == 2 and "cannot grow yet" in result.stderr
    result = run_cli("train", "--config", tuned, "--set", f"data.vocab_from={checkpoint}")
    assert result.exit_code == 0, result.stderr
