"""The Hidden Markov Model: the forward algorithm and Viterbi against brute force, sampling, and every command."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from rnngen import api, checkpoint
from rnngen.config import HMM_DEFAULTS, resolve
from rnngen.data.vocab import Vocab
from rnngen.generate.sample import DecodeOptions, generate
from rnngen.models.hmm import HiddenMarkovLM
from rnngen.models.registry import build_model
from rnngen.models.state import detach_state, select_streams
from rnngen.training import finetune
from tests.conftest import run_cli, tiny_config
from tests.test_serve import Server, sse


def path_probability(tables, tokens: list[int], path: tuple[int, ...]) -> float:
    """p(tokens, path) written straight from the generative story, in float64."""
    start, transition, emission = (t.double() for t in (tables.start, tables.transition, tables.emission))
    p = start[path[0]] * emission[tokens[0], path[0]]
    for t in range(1, len(tokens)):
        p = p * transition[path[t - 1], path[t]] * emission[tokens[t], path[t]]
    return p.item()


def every_path(states: int, length: int):
    return itertools.product(range(states), repeat=length)


def random_hmm(states: int, vocab_size: int, seed: int) -> HiddenMarkovLM:
    torch.manual_seed(seed)
    return HiddenMarkovLM(vocab_size, states)


# --------------------------------------------------------------------------- the maths


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_likelihood_equals_the_sum_over_all_state_paths(seed):
    model = random_hmm(states=3, vocab_size=4, seed=seed)
    texts = torch.randint(0, 4, (2, 5), generator=torch.Generator().manual_seed(seed))  # B = 2, T = 5
    tables = model.tables()
    for row, tokens in zip(model.log_likelihood(texts), texts.tolist()):
        brute = sum(path_probability(tables, tokens, path) for path in every_path(3, 5))  # 3^5 = 243 paths
        assert row.item() == pytest.approx(math.log(brute), abs=1e-5)
    # the loss predicts every token after the first: log p(x_2..x_5 | x_1) = log p(x_1..x_5) - log p(x_1)
    loss, _ = model.loss(texts[:, :-1], texts[:, 1:], None, reduction="none")
    first = model.log_likelihood(texts[:, :1])
    assert (-loss.view(2, 4).sum(1)).tolist() == pytest.approx((model.log_likelihood(texts) - first).tolist(), abs=1e-5)


def test_carried_state_gives_the_likelihood_of_one_pass_and_forward_agrees_with_loss():
    model = random_hmm(states=5, vocab_size=7, seed=3)
    x = torch.randint(0, 7, (3, 41), generator=torch.Generator().manual_seed(3))  # (B, T + 1)
    whole, _ = model.loss(x[:, :-1], x[:, 1:], None, reduction="sum")
    total, state = 0.0, None
    for start in range(0, 40, 7):  # windows of 7 (the last of 5), the state detached between them as in training
        window = slice(start, min(start + 7, 40))
        loss, state = model.loss(x[:, window], x[:, window.start + 1 : window.stop + 1], state, reduction="sum")
        state = detach_state(state)
        total += loss.item()
    assert total == pytest.approx(whole.item(), rel=1e-6)
    assert state.shape == (1, 3, 5) and torch.allclose(state.sum(-1), torch.ones(1, 3))  # (1, B, K), distributions
    assert select_streams(state, slice(-1, None)).shape == (1, 1, 5)
    logits, forward_state = model(x[:, :-1], None)  # (B, T, V) exact log-probabilities
    assert torch.allclose(logits.exp().sum(-1), torch.ones(3, 40), atol=1e-5)
    assert -logits.gather(-1, x[:, 1:, None]).sum().item() == pytest.approx(whole.item(), rel=1e-5)
    assert torch.allclose(forward_state, model.loss(x[:, :-1], x[:, 1:])[1], atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_viterbi_finds_the_most_likely_path_of_all(seed):
    model = random_hmm(states=3, vocab_size=4, seed=seed)
    tokens = torch.randint(0, 4, (6,), generator=torch.Generator().manual_seed(seed + 10))
    tables = model.tables()
    best = max(every_path(3, 6), key=lambda path: path_probability(tables, tokens.tolist(), path))
    path, logprob = model.viterbi(tokens)
    assert tuple(path) == best
    assert logprob == pytest.approx(math.log(path_probability(tables, tokens.tolist(), best)), abs=1e-5)


def test_the_recursion_stays_float32_under_mixed_precision():
    model = random_hmm(states=6, vocab_size=9, seed=4)
    x = torch.randint(0, 9, (2, 30), generator=torch.Generator().manual_seed(4))
    plain, _ = model.loss(x[:, :-1], x[:, 1:])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, state = model.loss(x[:, :-1], x[:, 1:])
    assert mixed.dtype == state.dtype == torch.float32 and mixed.item() == plain.item()


def hand_set_hmm() -> HiddenMarkovLM:
    """Two states that mostly stay put, with clearly different emissions over tokens 1-3 (0 is <unk>)."""
    model = HiddenMarkovLM(vocab_size=4, hmm_states=2)
    transition = torch.tensor([[0.9, 0.1], [0.3, 0.7]])
    emission = torch.tensor([[0.05, 0.05], [0.7, 0.1], [0.2, 0.2], [0.05, 0.65]])  # (V, K), columns sum to 1
    with torch.no_grad():
        model.start_logits.copy_(torch.tensor([0.5, 0.5]).log())
        model.transition_logits.copy_(transition.log())
        model.emission_logits.copy_(emission.log())
    return model


def test_sampled_tokens_follow_the_stationary_emission_distribution():
    model = hand_set_hmm()
    stationary = torch.tensor([0.75, 0.25])  # s A = s for the transition above
    expected = model.tables().emission.double() @ stationary.double()  # (V,) p(token) in the long run
    vocab = Vocab(["<unk>", "a", "b", "c"], "char")
    options = DecodeOptions(length=20_000, temperature=1.0, random_seed=0, allow_unk=True)
    (sample,) = generate(model, vocab, [1], options, torch.device("cpu"))
    counts = torch.bincount(torch.tensor(sample.ids), minlength=4).double()
    assert counts.sum() == 20_000
    # the draws are correlated through the state (it stays put ~80% of the time), so allow ~4 standard errors of
    # an effective sample several times smaller than 20,000
    assert (counts / counts.sum()).tolist() == pytest.approx(expected.tolist(), abs=0.02)


def test_tables_follow_the_weights_after_an_update():
    model = random_hmm(states=4, vocab_size=6, seed=5)
    x = torch.randint(0, 6, (2, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before, _ = model(x)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.5)
    model.loss(x[:, :-1], x[:, 1:])[0].backward()
    optimizer.step()
    fresh = build_model({"cell": "hmm", "vocab_size": 6, "hmm_states": 4})
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        after, _ = model(x)
        assert not torch.allclose(before, after)  # the tables kept while scoring were made again
        assert torch.allclose(after, fresh(x)[0])


# --------------------------------------------------------------------------- the commands


def hmm_config(tmp_path, corpus, **train):
    return tiny_config(
        tmp_path, corpus, model={"cell": "hmm", "hmm_states": 12},
        train={"max_steps": 40, "eval_every": 20, "save_every": 20, "recipe": "hmm", **train},
    )  # fmt: skip


@pytest.fixture
def hmm_run(tmp_path, corpus):
    result = run_cli("train", "--config", hmm_config(tmp_path, corpus))
    assert result.exit_code == 0, result.stderr
    assert "training hmm with 12 states" in result.stderr
    return tmp_path / "run"


def test_train_sample_evaluate_and_info(hmm_run):
    payload = torch.load(hmm_run / "best.pt", weights_only=True)
    assert payload[checkpoint.MODEL_ARGS] == {"cell": "hmm", "vocab_size": 21, "hmm_states": 12}
    best = payload[checkpoint.SUMMARY]["best_val_loss"]
    assert best < 0.8 * math.log(21), best  # it learned something in 40 steps
    args = ["sample", "--run", hmm_run, "--seed", "the", "--length", "40", "--random-seed", "5", "--top-k", "5"]
    first, again = run_cli(*args), run_cli(*args)
    assert first.exit_code == 0, first.stderr
    assert first.stdout == again.stdout and first.stdout.startswith("the")
    for extra in (["--temperature", "0"], ["--top-p", "0.8", "--repetition-penalty", "1.3"], ["--stop", " "]):
        assert run_cli("sample", "--run", hmm_run, "--length", "20", "--random-seed", "1", *extra).exit_code == 0
    several = run_cli("sample", "--run", hmm_run, "--num-samples", "3", "--length", "15", "--format", "jsonl")
    assert [json.loads(line)["tokens"] for line in several.stdout.splitlines()] == [15, 15, 15]

    evaluated = run_cli("evaluate", "--checkpoint", hmm_run, "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["loss"] == pytest.approx(api.load(hmm_run).evaluate().loss, rel=1e-6)
    as_in_training = run_cli("evaluate", "--checkpoint", hmm_run, "--json", "--batch-size", "16")  # eval_batch_size
    assert json.loads(as_in_training.stdout)["loss"] == pytest.approx(best, rel=1e-6)
    info = json.loads(run_cli("info", "--json", hmm_run).stdout)
    assert info["cell"] == "hmm" and info["hmm_states"] == 12 and info["parameters"] == 12 + 12 * 12 + 21 * 12


def test_resume_is_bit_exact(tmp_path, corpus):
    straight = hmm_config(tmp_path / "a", corpus, max_steps=40, decay_steps=40, out_dir=str(tmp_path / "a/run"))
    halves = hmm_config(tmp_path / "b", corpus, max_steps=20, decay_steps=40, out_dir=str(tmp_path / "b/run"))
    assert run_cli("train", "--config", straight).exit_code == 0
    assert run_cli("train", "--config", halves).exit_code == 0
    resumed = run_cli("train", "--config", halves, "--resume", "--set", "train.max_steps=40")
    assert resumed.exit_code == 0 and "at step 20" in resumed.stderr, resumed.stderr
    a, b = (checkpoint.load(tmp_path / f"{run}/run/last.pt") for run in "ab")
    for key, tensor in a[checkpoint.MODEL_STATE].items():
        assert torch.equal(tensor, b[checkpoint.MODEL_STATE][key]), key
    hidden_a, hidden_b = (c[checkpoint.TRAINER_STATE]["hidden"][0] for c in (a, b))
    assert hidden_a.shape == (1, 4, 12) and torch.equal(hidden_a, hidden_b)  # the carried forward vector, (1, B, K)
    assert a[checkpoint.SUMMARY]["val"] == b[checkpoint.SUMMARY]["val"]


def test_states_shows_the_viterbi_path_and_each_states_tokens(hmm_run):
    result = run_cli("states", hmm_run, "--text", "the cat sat", "--top", "3", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [t["token"] for t in report["tokens"]] == list("the cat sat")
    model = api.load(hmm_run)
    ids = torch.tensor(model.vocab.encode(list("the cat sat")))
    assert [t["state"] for t in report["tokens"]] == model.module.viterbi(ids)[0]
    assert 0 < report["path_share"] <= 1 and report["path_logprob"] <= report["text_logprob"]
    assert sum(row["count"] for row in report["by_state"]) == 11 and all(len(r["top"]) == 3 for r in report["by_state"])
    text = run_cli("states", hmm_run, "--text", "the cat")
    assert text.exit_code == 0 and "'t'" in text.stdout and "Viterbi path" in text.stdout
    every = json.loads(run_cli("states", hmm_run, "--json").stdout)
    assert [row["state"] for row in every["by_state"]] == list(range(12)) and "tokens" not in every


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text", ""], "the text has no tokens"),
        (["--text", "the QUEEN"], "not in the model's vocabulary: 'Q', 'U', 'E', 'N'"),
        (["--text", "a", "--data", "x.txt"], "only one of --text and --data"),
    ],
)
def test_states_refuses_what_it_cannot_label(hmm_run, args, message):
    result = run_cli("states", hmm_run, *args)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_diagnose_points_an_hmm_to_states(hmm_run):
    result = run_cli("diagnose", hmm_run)
    assert result.exit_code == 2 and "is an HMM (`rnngen states` shows its hidden states)" in result.stderr


def test_states_refuses_a_recurrent_checkpoint(tmp_path, corpus):
    assert run_cli("train", "--config", tiny_config(tmp_path, corpus, train={"max_steps": 2})).exit_code == 0
    result = run_cli("states", tmp_path / "run", "--text", "the")
    assert result.exit_code == 2 and "is a lstm model" in result.stderr and "model.cell: hmm" in result.stderr


def test_serve_streams_the_hmms_next_token_probabilities(hmm_run):
    server = Server("--run", hmm_run)
    try:
        reply = server.post({"seed": "the ", "length": 10, "random_seed": 3, "stream": True, "explain": True})
        events = sse(reply.text)
        assert [kind for kind, _ in events] == ["token"] * 10 + ["done"]
        assert all(sum(c["raw"] for c in data["candidates"]) <= 1 + 1e-5 for _, data in events[:-1])
        same = run_cli("sample", "--run", hmm_run, "--seed", "the ", "--length", "10", "--random-seed", "3")
        assert events[-1][1]["samples"][0]["seed"] + events[-1][1]["samples"][0]["text"] + "\n" == same.stdout
        assert server.client.get("/v1/model").json()["hmm_states"] == 12
    finally:
        server.stop()


def test_compare_takes_hmm_specs_with_cost_and_time_per_epoch(tmp_path, corpus):
    config = tiny_config(tmp_path, corpus, model={"cache_size": 20}, train={"max_steps": 10, "lr": 0.05})
    result = run_cli("compare", "--config", config, "--models", "hmm:4,hmm:16,ngram:3", "--format", "json")
    assert result.exit_code == 0, result.stderr
    small, large, ngram = json.loads(result.stdout)
    assert [small["model"], large["model"]] == ["hmm-4", "hmm-16"]
    assert small["cost_per_token"] == 4 * 4 + 4 and large["cost_per_token"] == 16 * 16 + 16
    assert ngram["cost_per_token"] == 3
    for row in (small, large, ngram):
        assert row["epoch_s"] > 0 and math.isfinite(row["bpc"]) and row["sample"]
    assert checkpoint.load(tmp_path / "run/compare/hmm-16/best.pt")[checkpoint.CONFIG]["model"]["cache_size"] == 0
    table = run_cli("compare", "--config", config, "--models", tmp_path / "run/compare/hmm-4").stdout
    assert "| 20 |" in table  # cost per token of a checkpoint measured as it is


def test_config_refuses_recurrent_only_settings_for_hmm(tmp_path, corpus):
    config = tiny_config(tmp_path, corpus, model={"cell": "hmm", "cache_size": 50, "spelling": True},
                         train={"ar_alpha": 2.0})  # fmt: skip
    result = run_cli("train", "--config", config)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "model.cell hmm: model.spelling (true), model.cache_size (50), train.ar_alpha (2.0)" in result.stderr
    result = run_cli("train", "--config", config, "--set", "model.hmm_states=0")
    assert result.exit_code == 2 and "model.hmm_states: must be at least 1" in result.stderr


def test_hmm_has_its_own_learning_rate_unless_one_is_set():
    assert resolve(None, ["model.cell=hmm"]).train.lr == HMM_DEFAULTS["lr"]
    assert resolve(None, ["model.cell=hmm"]).train.weight_decay == 0.0
    assert resolve(None, ["model.cell=hmm", "train.lr=0.01"]).train.lr == 0.01
    assert resolve(None, []).train.lr != HMM_DEFAULTS["lr"]


def test_fine_tuning_grows_the_emissions_and_keeps_the_old_tokens_odds(hmm_run, tmp_path):
    new = tmp_path / "new.txt"
    new.write_text("the zebra sat on the quay.\n" * 40, encoding="utf-8")  # z, q, u, y are new characters
    config = tiny_config(tmp_path / "ft", new, model={"cell": "hmm"}, train={"max_steps": 4, "eval_every": 4})
    result = run_cli("train", "--config", config, "--init-from", hmm_run, "--set", "train.lr=0.1")
    assert result.exit_code == 0, result.stderr
    assert "fine-tuning from" in result.stderr and "hmm with 12 states, vocabulary 21 -> 25" in result.stderr
    source = checkpoint.load(hmm_run / "best.pt")
    args = {**source[checkpoint.MODEL_ARGS], "vocab_size": 25}
    grown = build_model(args)
    grown.load_state_dict(finetune.grown_state(source, args, seed=0))
    before = torch.softmax(source[checkpoint.MODEL_STATE]["emission_logits"], dim=0)  # (21, K)
    after = grown.tables().emission.detach()  # (25, K)
    assert torch.allclose(after[1:21] / after[1:2], before[1:] / before[1:2], rtol=1e-4)  # old odds kept
    assert torch.allclose(after[21:].sum(0), after[0], rtol=1e-4)  # the new ones share what <unk> has


@pytest.mark.parametrize("level, extra", [("word", {}), ("subword", {"vocab_size": 300})])
def test_word_and_subword_levels_train_sample_and_label(tmp_path, corpus, level, extra):
    config = tiny_config(tmp_path, corpus, data={"level": level, **extra}, model={"cell": "hmm", "hmm_states": 8},
                         train={"max_steps": 10, "eval_every": 10})  # fmt: skip
    assert run_cli("train", "--config", config).exit_code == 0
    sample = run_cli("sample", "--run", tmp_path / "run", "--seed", "the cat", "--length", "12", "--random-seed", "0")
    assert sample.exit_code == 0 and sample.stdout.startswith("the cat")
    states = json.loads(run_cli("states", tmp_path / "run", "--text", "the dog sat", "--json").stdout)
    assert "".join(t["token"] for t in states["tokens"]).replace(" ", "").replace("Ġ", "") == "thedogsat"
