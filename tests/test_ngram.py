"""The n-gram (Markov chain) baseline: Kneser-Ney probabilities, back-off, and the same commands as neural models."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections import Counter
from fractions import Fraction

import pytest
import torch

from rnngen import api, checkpoint
from rnngen.models.ngram import NgramLM, count_ngrams
from rnngen.models.registry import build_model
from rnngen.models.state import detach_state, select_streams
from tests.conftest import run_cli, tiny_config

START = "<start>"


def next_token_probs(model: NgramLM, contexts: list[tuple[int, ...]]) -> torch.Tensor:
    """p(. | context) (N, V) for contexts of order-1 ids each (start markers allowed before the last one)."""
    state = torch.tensor([c[:-1] for c in contexts], dtype=torch.long).view(1, len(contexts), model.history)
    logits, _ = model(torch.tensor([[c[-1]] for c in contexts]), state)  # (N, 1, V)
    return logits[:, -1].double().exp()


# --------------------------------------------------------------------------- the maths


def test_hand_computed_bigram_probabilities():
    # vocabulary 0 = <unk>, 1 = a, 2 = b; training text "a b a b a a", preceded by one start marker S.
    # bigrams: S a, a b, b a, a b, b a, a a -> c(a b) = 2, c(b a) = 2, c(a a) = 1, c(S a) = 1
    #   D2 = n1 / (n1 + 2 n2) = 2 / (2 + 2*2) = 1/3
    # unigram continuation counts: a follows S, b and a -> 3; b follows a -> 1; <unk> -> 0
    #   D1 = 1 / (1 + 0) = 1;  p1(a) = (3-1)/4 + 1*2/4 * 1/3 = 2/3;  p1(b) = p1(<unk>) = 1/6
    # after a: c(a .) = 3 over 2 types, back-off weight (1/3)*2/3 = 2/9
    #   p(b|a) = (2-1/3)/3 + 2/9 * 1/6 = 16/27;  p(a|a) = (1-1/3)/3 + 2/9 * 2/3 = 10/27;  p(<unk>|a) = 1/27
    # after b: c(b .) = 2 over 1 type, back-off weight (1/3)*1/2 = 1/6
    #   p(a|b) = (2-1/3)/2 + 1/6 * 2/3 = 17/18;  p(b|b) = p(<unk>|b) = 1/36
    # after <unk> (never seen): the unigram distribution
    model = NgramLM.fit([1, 2, 1, 2, 1, 1], vocab_size=3, order=2)
    expected = {
        1: [Fraction(1, 27), Fraction(10, 27), Fraction(16, 27)],
        2: [Fraction(1, 36), Fraction(17, 18), Fraction(1, 36)],
        0: [Fraction(1, 6), Fraction(2, 3), Fraction(1, 6)],
    }
    for context, probs in expected.items():
        assert next_token_probs(model, [(context,)])[0].tolist() == pytest.approx([float(p) for p in probs], abs=1e-7)


def reference_kneser_ney(train: list[int], order: int, vocab_size: int):
    """Interpolated Kneser-Ney written straight from its definition with tuples and Counters.

    Independent of rnngen.models.ngram's tensors: it counts n-grams of the text padded with order-1
    start markers and recurses over the formula p_m(w|h) = max(c - D, 0)/c(h.) + D N(h.)/c(h.) p_{m-1}.
    """
    stream = [START] * (order - 1) + train
    grams = Counter(tuple(stream[i : i + n]) for n in range(1, order + 1) for i in range(len(stream) - n + 1))

    def kn_count(gram):
        if gram[-1] == START:
            return 0
        if len(gram) == order:
            return grams[gram]
        return sum(1 for g in grams if len(g) == len(gram) + 1 and g[1:] == gram)

    discounts = {}
    for n in range(1, order + 1):
        counts = [kn_count(g) for g in grams if len(g) == n]
        n1, n2 = counts.count(1), counts.count(2)
        discounts[n] = n1 / (n1 + 2 * n2) if n1 else 0.5

    def prob(word, context):
        lower = prob(word, context[1:]) if context else 1 / vocab_size
        followers = [kn_count(context + (w,)) for w in range(vocab_size)]
        total = sum(followers)
        if total == 0:
            return lower
        d = discounts[len(context) + 1]
        types = sum(1 for c in followers if c > 0)
        return max(followers[word] - d, 0) / total + d * types / total * lower

    return prob


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_perplexity_matches_an_independent_kneser_ney(order):
    rng = random.Random(order)
    vocab_size = 6  # id 5 never occurs in training: it lives on the uniform share alone
    train = [rng.choice([0, 1, 1, 2, 2, 2, 3, 4]) for _ in range(120)]
    test = [rng.choice(range(vocab_size)) for _ in range(40)]
    reference = reference_kneser_ney(train, order, vocab_size)
    # with no state the model puts order-2 start markers before the first input; test[i] is then
    # predicted from the order-1 tokens ending at test[i-1]
    padded = [START] * max(order - 2, 0) + test
    nats = [-math.log(reference(test[i], tuple(padded[i - 1 : i + order - 2]))) for i in range(1, len(test))]
    model = NgramLM.fit(train, vocab_size, order)
    ids = torch.tensor([test])
    loss, _ = model.loss(ids[:, :-1], ids[:, 1:], None, reduction="mean")
    assert math.exp(loss.item()) == pytest.approx(math.exp(sum(nats) / len(nats)), rel=1e-9)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_next_token_probabilities_sum_to_one_for_every_context(order):
    vocab_size = 5  # token 4 never occurs in training
    model = NgramLM.fit([1, 2, 3, 1, 2, 1, 1, 3, 2, 2, 1, 3, 0], vocab_size, order)
    earlier = [*range(vocab_size), model.start_id]  # tokens before the newest input may be start markers
    contexts = [
        (*before, last) for before in itertools.product(earlier, repeat=model.history) for last in range(vocab_size)
    ]
    probs = next_token_probs(model, contexts)  # (N, V)
    assert len(contexts) == 6 ** max(order - 2, 0) * 5
    assert probs.sum(-1).tolist() == pytest.approx([1.0] * len(contexts), abs=1e-6)
    assert (probs > 0).all(), "a token has no probability in some context"


def test_loss_and_logits_agree_and_state_carries_the_context():
    rng = random.Random(0)
    model = NgramLM.fit([rng.randrange(7) for _ in range(300)], vocab_size=8, order=4)
    x = torch.tensor([[rng.randrange(8) for _ in range(41)] for _ in range(3)])  # (3, 41)
    logits, _ = model(x[:, :-1], None)
    from_logits = -torch.log_softmax(logits.double(), -1).gather(-1, x[:, 1:, None]).sum()
    whole, _ = model.loss(x[:, :-1], x[:, 1:], None, reduction="sum")
    first, state = model.loss(x[:, :17], x[:, 1:18], None, reduction="sum")
    state = detach_state(state)
    second, _ = model.loss(x[:, 17:-1], x[:, 18:], state, reduction="sum")
    assert from_logits.item() == pytest.approx(whole.item(), rel=1e-6)
    assert (first + second).item() == pytest.approx(whole.item(), rel=1e-12)
    assert state.shape == (1, 3, 2)  # (1, B, order-2): the inputs before the newest one
    assert select_streams(state, slice(-1, None)).shape == (1, 1, 2)


def test_unseen_contexts_back_off_to_shorter_ones():
    # tokens 1..3 are seen; 4 never is
    model = NgramLM.fit([1, 2, 3, 1, 2, 3, 1, 3, 2], vocab_size=5, order=3)
    after_2_3, after_3_3, after_4_3, after_4_4, after_1_4 = next_token_probs(
        model, [(2, 3), (3, 3), (4, 3), (4, 4), (1, 4)]
    )
    # "3 3" and "4 3" never occurred: only "3" counts, so both give p(. | 3), unlike the seen "2 3"
    assert torch.allclose(after_3_3, after_4_3)
    assert not torch.allclose(after_2_3, after_3_3)
    # nothing ending in 4 occurred: the unigram distribution, whatever came before
    assert torch.allclose(after_4_4, after_1_4)
    assert after_4_4.sum().item() == pytest.approx(1.0)
    ids = torch.tensor([[4, 4, 4, 1, 4, 0, 4]])
    loss, _ = model.loss(ids[:, :-1], ids[:, 1:], None)
    assert math.isfinite(loss.item())


def test_counts_are_exact_integer_ids_per_level():
    vocab_size = 3
    tables = count_ngrams(torch.tensor([1, 2, 1, 2]), vocab_size, order=2)
    (unigram_keys, unigram_counts), (bigram_keys, bigram_counts) = tables
    # unigrams: a (1) follows S and b; b (2) follows a; the start marker (3) predicts nothing
    assert dict(zip(unigram_keys.tolist(), unigram_counts.tolist())) == {1: 2, 2: 1, 3: 0}
    # bigram key = id of its first token among the unigrams * 4 + second token: "S a", "a b", "b a"
    decoded = {(unigram_keys[k // 4].item(), k % 4): c for k, c in zip(bigram_keys.tolist(), bigram_counts.tolist())}
    assert decoded == {(3, 1): 1, (1, 2): 2, (2, 1): 1}


# --------------------------------------------------------------------------- the same commands as neural models


@pytest.fixture
def ngram_run(tmp_path, corpus):
    config = tiny_config(tmp_path, corpus, model={"cell": "ngram", "order": 4})
    result = run_cli("train", "--config", config)
    assert result.exit_code == 0, result.stderr
    return tmp_path / "run"


def test_train_writes_a_run_like_a_neural_one(ngram_run):
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.csv"):
        assert (ngram_run / name).exists(), name
    assert list((ngram_run / "samples").glob("step-*.txt"))
    payload = torch.load(ngram_run / "best.pt", weights_only=True)
    assert payload[checkpoint.MODEL_ARGS]["cell"] == "ngram"
    assert payload[checkpoint.MODEL_ARGS]["order"] == 4
    assert payload[checkpoint.SUMMARY]["val"]["loss"] > 0
    model = build_model(payload[checkpoint.MODEL_ARGS])
    model.load_state_dict(payload[checkpoint.MODEL_STATE])
    metrics = (ngram_run / "metrics.csv").read_text().splitlines()
    assert metrics[0].startswith("step,") and len(metrics) == 2


def test_sample_evaluate_and_info_work_on_an_ngram_checkpoint(ngram_run):
    args = ["sample", "--run", ngram_run, "--seed", "the", "--length", "40", "--random-seed", "5", "--top-k", "4"]
    first, again = run_cli(*args), run_cli(*args)
    assert first.exit_code == 0, first.stderr
    assert first.stdout == again.stdout and first.stdout.startswith("the")
    greedy = run_cli("sample", "--run", ngram_run, "--seed", "the c", "--length", "30", "--temperature", "0")
    assert greedy.stdout.startswith("the cat")  # every "the c" in the corpus is "the cat"
    stopped = run_cli("sample", "--run", ngram_run, "--seed", "the", "--length", "200", "--stop", ".", "--top-p", "0.9", "--random-seed", "1")  # fmt: skip
    assert stopped.exit_code == 0 and "." not in stopped.stdout
    several = run_cli(
        "sample", "--run", ngram_run, "--num-samples", "3", "--length", "20", "--format", "jsonl", "--random-seed", "2"
    )
    assert [json.loads(line)["tokens"] for line in several.stdout.splitlines()] == [20, 20, 20]

    evaluated = run_cli("evaluate", "--checkpoint", ngram_run, "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    scores = json.loads(evaluated.stdout)
    assert scores["loss"] == pytest.approx(api.load(ngram_run).evaluate().loss)
    assert 0 < scores["bpc"] < 2  # the corpus is highly regular

    info = run_cli("info", ngram_run)
    assert info.exit_code == 0 and "ngram" in info.stdout


def test_order_is_validated(tmp_path, corpus):
    config = tiny_config(tmp_path, corpus, model={"cell": "ngram", "order": 0})
    result = run_cli("train", "--config", config)
    assert result.exit_code == 2
    assert "model.order" in result.stderr
