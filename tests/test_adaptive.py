"""Adaptive softmax output: an exact distribution, the exact loss, and sampling that honours every option."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnngen.config import resolve
from rnngen.errors import ConfigError
from rnngen.generate.evaluate import total_loss
from rnngen.generate.sample import DecodeOptions, draw, filter_top_p
from rnngen.models.adaptive import AdaptiveSoftmax, default_cutoffs
from rnngen.models.recurrent import model_args
from rnngen.models.registry import build_model
from tests.conftest import run_cli, tiny_config

VOCAB = 60


def adaptive_model(tie_weights=False, cutoffs=(6, 20, 45), seed=0):
    torch.manual_seed(seed)
    config = resolve(
        None,
        [
            "model.output=adaptive",
            f"model.adaptive_cutoffs={list(cutoffs)}",
            "model.embedding_dim=16",
            "model.hidden_size=16",
            "model.num_layers=1",
            "model.dropout=0",
            f"model.tie_weights={str(tie_weights).lower()}",
        ],
    )
    return build_model(model_args(config.model, VOCAB)).eval()


def test_default_cutoffs_follow_the_vocabulary_size():
    assert default_cutoffs(20_000) == [2000, 10000]
    assert default_cutoffs(12_000) == [1200, 6000]
    for size in (2, 3, 10, 57, 999):
        cutoffs = default_cutoffs(size)
        assert cutoffs and cutoffs[0] >= 1 and cutoffs[-1] < size and cutoffs == sorted(set(cutoffs))


def test_auto_output_switches_to_adaptive_at_five_thousand_tokens():
    model_config = resolve().model
    assert model_args(model_config, 4_999)["output"] == "full"
    args = model_args(model_config, 5_000)
    assert args["output"] == "adaptive" and args["cutoffs"] == [500, 2500]


@pytest.mark.parametrize("cutoffs", [(1,), (6, 20, 45), (30,)])
def test_log_probabilities_sum_to_one_over_the_vocabulary(cutoffs):
    layer = AdaptiveSoftmax(16, VOCAB, list(cutoffs))
    hidden = torch.randn(4, 5, 16) * 3  # (B, T, H)
    log_probs = layer(hidden)  # (B, T, V)
    assert log_probs.shape == (4, 5, VOCAB)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(4, 5), atol=1e-5)
    assert torch.allclose(F.log_softmax(log_probs, dim=-1), log_probs, atol=1e-5)  # logits in all but name


def test_training_loss_is_the_full_softmax_evaluation_of_the_same_log_probs():
    """model.loss (head + target clusters only) equals cross-entropy over the (B, T, V) forward output."""
    model = adaptive_model()
    x = torch.randint(0, VOCAB, (3, 11))
    y = torch.randint(0, VOCAB, (3, 11))
    y[0, :4] = torch.tensor([0, 6, 20, 59])  # the edges of every cluster
    log_probs, _ = model(x)
    flat = log_probs.reshape(-1, VOCAB), y.reshape(-1)
    for reduction in ("sum", "mean", "none"):
        loss, _ = model.loss(x, y, reduction=reduction)
        assert torch.allclose(loss, F.cross_entropy(*flat, reduction=reduction), atol=1e-4)


def test_evaluator_total_is_the_exact_negative_log_likelihood():
    model = adaptive_model()
    ids = np.random.default_rng(0).integers(0, VOCAB, 203)
    total, count = total_loss(model, ids, batch_size=4, device=torch.device("cpu"), window=7)
    with torch.no_grad():
        log_probs, _ = model(torch.tensor(ids[None, :-1]))  # one stream, state carried through
    expected = -log_probs[0].gather(1, torch.tensor(ids[1:, None])).sum().item()
    assert count == len(ids) - 1
    assert total == pytest.approx(expected, rel=1e-4)  # streams and windows carry the state exactly


@pytest.mark.parametrize("target", [3, 30, 50], ids=["head", "tail 2", "tail 3"])
def test_tied_adaptive_output_shares_the_embedding_row_of_every_word(target):
    model = adaptive_model(tie_weights=True)
    assert model.head.word_weight is model.embedding.weight
    assert len(model.head.tails) == 0  # no separate tail projections: the embedding rows score the tails too
    x = torch.randint(0, VOCAB, (2, 5))
    x[x == target] = target + 1  # the target is never an input ...
    y = torch.full((2, 5), target)  # ... only a target, so its embedding row learns through the output side alone
    loss, _ = model.loss(x, y)
    loss.backward()
    assert model.embedding.weight.grad[target].abs().sum() > 0  # the output side reached the embedding row
    assert len(list(model.parameters())) == len({id(p) for p in model.parameters()})


def test_tied_tail_cluster_is_a_full_softmax_over_its_words_times_the_cluster_probability():
    """log p(w) = log p_head(cluster c) + log softmax_{v in c}(h . e_v + b_v), by hand for cluster 2 (ids 20..44)."""
    model = adaptive_model(tie_weights=True)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(torch.randn_like(p))  # biases away from zero, so that they are checked too
        hidden = torch.randn(3, 16)
        log_probs = model.head(hidden)  # (3, V)
        scores = hidden @ model.embedding.weight[20:45].T + model.head.tail_bias[20 - 6 : 45 - 6]  # (3, 25)
        in_cluster = model.head.head_log_probs(hidden)[:, 6 + 1]  # head entry of cluster 2, after 6 head words
    expected = in_cluster[:, None] + scores.log_softmax(-1)
    torch.testing.assert_close(log_probs[:, 20:45], expected, rtol=1e-5, atol=1e-5)


def test_checkpoints_from_before_tied_tails_keep_their_projected_tails():
    """A tied adaptive model saved before tied tails existed has no tied_tails argument: it rebuilds as it was."""
    overrides = ["model.output=adaptive", "model.adaptive_cutoffs=[6,20]", "model.tie_weights=true"]
    config = resolve(None, [*overrides, "model.embedding_dim=32", "model.hidden_size=32"])
    args = model_args(config.model, VOCAB)
    assert args.pop("tied_tails") is True
    old = build_model(args)
    assert [tail[0].out_features for tail in old.head.tails] == [8, 2]  # hidden 32 / 4, then / 16
    assert old.head.word_weight is old.embedding.weight
    assert not hasattr(old.head, "tail_bias")


def test_sampling_from_adaptive_keeps_to_top_k_and_top_p():
    model = adaptive_model(seed=3)
    with torch.no_grad():
        log_probs, _ = model(torch.tensor([[1, 2, 3]]))
    scores = log_probs[:, -1].expand(4000, -1)  # (N, V): one distribution, drawn 4000 times
    torch.manual_seed(0)

    top3 = set(torch.topk(scores[0], 3).indices.tolist())
    drawn = draw(scores, DecodeOptions(temperature=1.0, top_k=3), None)
    assert set(drawn.tolist()) == top3  # all of the top 3 and nothing else

    nucleus = set(torch.isfinite(filter_top_p(scores[:1], 0.5))[0].nonzero().flatten().tolist())
    probs = scores[0].exp()
    assert probs[list(nucleus)].sum() >= 0.5 and len(nucleus) < VOCAB
    drawn = draw(scores, DecodeOptions(temperature=1.0, top_p=0.5), None)
    assert set(drawn.tolist()) <= nucleus


def test_config_refuses_cutoffs_out_of_order_or_beyond_the_vocabulary():
    with pytest.raises(ConfigError, match=r"model.adaptive_cutoffs must be increasing.*got \[50, 10\]"):
        resolve(None, ["model.output=adaptive", "model.adaptive_cutoffs=[50, 10]"])
    with pytest.raises(ConfigError, match=r"model.adaptive_cutoffs: must be a whole number or a list of them"):
        resolve(None, ["model.adaptive_cutoffs=[a, b]"])
    model_config = resolve(None, ["model.output=adaptive", "model.adaptive_cutoffs=[100]"]).model
    with pytest.raises(ConfigError, match=r"below the vocabulary size \(60 tokens\)"):
        model_args(model_config, VOCAB)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_cli_trains_samples_and_evaluates_a_tiny_adaptive_word_model(tmp_path, corpus, tied):
    model = {"output": "adaptive", "tie_weights": tied, "embedding_dim": 32}
    config = tiny_config(tmp_path, corpus, data={"level": "word"}, model=model, train={"lr": 0.01, "max_steps": 40})
    trained = run_cli("train", "--config", config)
    assert trained.exit_code == 0, trained.stderr
    run = tmp_path / "run"

    info = json.loads(run_cli("info", run, "--json").stdout)
    assert info["output"] == "adaptive" and info["adaptive_cutoffs"] == default_cutoffs(info["vocab_size"])
    assert info["tie_weights"] is tied and info["adaptive_tails"] == ("tied" if tied else "projected")
    assert info["val_loss"] < 2.5  # it learned: an untrained model scores about ln(19 tokens) = 2.9 or worse

    def sample(*options):
        result = run_cli("sample", "--run", run, "--seed", "the", "--length", "12", "--random-seed", "5", *options)
        assert result.exit_code == 0, result.stderr
        return result.stdout

    assert sample("--top-k", "1") == sample("--temperature", "0")  # top-1 is greedy
    assert sample("--top-p", "0.9", "--temperature", "0.7").startswith("the ")

    evaluated = run_cli("evaluate", "--checkpoint", run / "best.pt", "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert evaluated.stdout.strip()
