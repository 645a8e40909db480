"""The cache pointer (rnngen.models.cache): its mixture by hand, in evaluation and the CLI; sampling leaves it out."""

from __future__ import annotations

import math

import pytest
import torch

from rnngen import api
from rnngen.config import ModelConfig
from rnngen.models import cache
from rnngen.models.recurrent import model_args
from rnngen.models.registry import build_model
from tests.conftest import run_cli, tiny_config

CACHE = {"cache_size": 12, "cache_theta": 0.5, "cache_lambda": 0.3}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny word model with a cache, trained once for the module."""
    root = tmp_path_factory.mktemp("cache")
    words = "anna met bob . bob met carl . carl saw anna . dora saw bob .\n" * 40
    (root / "corpus.txt").write_text(words, encoding="utf-8")
    config = tiny_config(root, root / "corpus.txt", data={"level": "word"}, model=CACHE,
                         train={"max_steps": 30, "lr": 0.01})  # fmt: skip
    result = run_cli("train", "--config", config)
    assert result.exit_code == 0, result.stderr
    return root / "run"


def test_mixture_equals_a_hand_computation():
    pointer = cache.Pointer(size=2, theta=0.5, lam=0.25)
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])  # (B=1, T=3, H=2)
    targets = torch.tensor([[4, 7, 4]])
    model_logprobs = torch.log(torch.tensor([[0.5, 0.2, 0.1]]))
    memory = cache.Memory.empty(1, pointer, 2, hidden)
    mixed, after = cache.target_logprobs(pointer, memory, model_logprobs, hidden, targets)
    # step 0: empty cache -> p_model; step 1: one pair (h0, 4), target 7 -> p_cache 0;
    # step 2: pairs (h0, 4), (h1, 7), target 4 -> softmax(0.5 * [1, 2])[0]
    share = math.exp(0.5) / (math.exp(0.5) + math.exp(1.0))
    expected = [0.5, 0.75 * 0.2, 0.75 * 0.1 + 0.25 * share]
    assert torch.allclose(mixed.exp()[0], torch.tensor(expected))
    assert after.values.tolist() == [[7, 4]] and torch.equal(after.keys[0], hidden[0, 1:])  # the newest two pairs


def _nats_token_by_token(net, ids) -> float:
    """-sum log p of a stream with the cache, computed one token at a time from the definition."""
    pointer = net.pointer
    with torch.no_grad():
        outputs, _ = net.features(torch.tensor(ids[None, :-1]))  # (1, N-1, H): the whole stream in one pass
        logprobs = torch.log_softmax(net.head(outputs), dim=-1)[0]
    total = 0.0
    for t, target in enumerate(ids[1:]):
        p = logprobs[t, target].exp().item()
        recent = range(max(0, t - pointer.size), t)
        if recent:
            scores_t = torch.tensor([pointer.theta * outputs[0, t].dot(outputs[0, j]).item() for j in recent])
            weights = torch.softmax(scores_t, 0)
            p_cache = sum(w.item() for w, j in zip(weights, recent) if ids[j + 1] == target)
            p = (1 - pointer.lam) * p + pointer.lam * p_cache
        total -= math.log(p)
    return total


def test_evaluation_with_the_cache_equals_a_token_by_token_computation(run):
    model = api.load(run / "best.pt")
    text = "anna met carl . dora saw anna . bob met dora . carl saw bob . anna met bob ." * 3
    ids, chars, _ = model.encode_text(text)
    net = model.module.eval()
    one_row = model.evaluate_ids(ids, chars, batch_size=1)  # 3 windows of seq_len 16, one cache carried
    assert one_row.tokens == len(ids) - 1
    assert one_row.loss * one_row.tokens == pytest.approx(_nats_token_by_token(net, ids), rel=1e-5)
    # three rows of 19 predictions, the last continued by a tail of 2: each row has its own cache, the tail
    # keeps the last row's
    length = (len(ids) - 1) // 3
    assert (length, len(ids) - 1 - 3 * length) == (19, 2)
    rows = [ids[0 : length + 1], ids[length : 2 * length + 1], ids[2 * length :]]
    three_rows = model.evaluate_ids(ids, chars, batch_size=3)
    expected = sum(_nats_token_by_token(net, row) for row in rows)
    assert three_rows.loss * three_rows.tokens == pytest.approx(expected, rel=1e-5)


def test_cache_lowers_the_loss_on_repeated_text_and_no_cache_scores_the_network(run):
    model = api.load(run / "best.pt")
    text = "dora saw carl . " * 8  # pairs the training text never had, repeated
    ids, chars, _ = model.encode_text(text)
    with_cache = model.evaluate_ids(ids, chars)
    without = model.evaluate_ids(ids, chars, use_cache=False)
    assert with_cache.loss < without.loss
    args = {k: v for k, v in model.model_args.items() if k != "pointer"}  # the same weights, built without a cache
    plain = build_model(args)
    plain.load_state_dict(model.module.state_dict())
    model.module = plain
    assert model.evaluate_ids(ids, chars).loss == without.loss


def test_checkpoints_without_a_cache_keep_their_model_args():
    assert "pointer" not in model_args(ModelConfig(), 50)
    assert model_args(ModelConfig(cache_size=9), 50)["pointer"] == {"size": 9, "theta": 1.0, "lam": 0.1}


def test_sampling_draws_from_the_network_alone(run):
    model = api.load(run / "best.pt")
    with_cache = model.sample("dora saw bob", length=40, random_seed=3, temperature=1.2, num_samples=2)
    model.module.pointer = None
    without = model.sample("dora saw bob", length=40, random_seed=3, temperature=1.2, num_samples=2)
    assert [s.text for s in with_cache] == [s.text for s in without]


def test_cli_evaluate_with_and_without_cache_and_info(run):
    with_cache = run_cli("evaluate", "--checkpoint", run / "best.pt", "--json")
    without = run_cli("evaluate", "--checkpoint", run / "best.pt", "--json", "--no-cache")
    assert with_cache.exit_code == 0 and without.exit_code == 0, with_cache.stderr + without.stderr
    assert with_cache.stdout != without.stdout
    info = run_cli("info", run, "--json")
    assert '"cache": {\n    "size": 12' in info.stdout


@pytest.mark.parametrize(
    "model, message",
    [
        ({"cache_size": 10, "cache_lambda": 1.0}, "model.cache_lambda"),
        ({"cache_size": -1}, "model.cache_size"),
        ({"cell": "ngram", "cache_size": 10}, "model.cache_size needs a recurrent cell"),
    ],
)
def test_bad_cache_settings_are_refused_with_exit_code_2(tmp_path, corpus, model, message):
    config = tiny_config(tmp_path, corpus, model=model)
    result = run_cli("train", "--config", config)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.stderr
