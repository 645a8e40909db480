import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnngen import api
from rnngen.generate.memorisation import CopyIndex
from rnngen.generate.sample import DecodeOptions, draw, filter_top_k, filter_top_p, inverse_cdf, penalise_repeats
from tests.conftest import run_cli, tiny_config, train_char_and_word

README = Path(__file__).parent.parent / "README.md"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One char model and one word model, trained once for the whole module."""
    return train_char_and_word(tmp_path_factory.mktemp("models"), hidden_size=64, max_steps=120)


def sample(run, *args, input=None):
    return run_cli("sample", "--run", run, *args, input=input)


def test_repeatable_with_random_seed(trained):
    a = sample(trained["char"], "--seed", "the ", "--length", "40", "--random-seed", "3", "--temperature", "1")
    b = sample(trained["char"], "--seed", "the ", "--length", "40", "--random-seed", "3", "--temperature", "1")
    c = sample(trained["char"], "--seed", "the ", "--length", "40", "--random-seed", "4", "--temperature", "1")
    assert a.exit_code == 0, a.stderr
    assert a.stdout == b.stdout != c.stdout
    assert a.stdout.startswith("the ") and len(a.stdout) == len("the ") + 40 + 1


def test_greedy_is_deterministic_and_top_k_1_equals_greedy(trained):
    greedy = [
        sample(trained["char"], "--seed", "the", "--length", "30", "--temperature", "0", "--random-seed", str(s)).stdout
        for s in (1, 2)
    ]
    top1 = sample(trained["char"], "--seed", "the", "--length", "30", "--temperature", "1.5", "--top-k", "1").stdout
    assert greedy[0] == greedy[1] == top1


def test_top_p_keeps_only_the_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    kept = torch.isfinite(filter_top_p(logits, 0.7))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_top_p(logits, 0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_top_k(logits, 3)).tolist() == [[True, True, True, False]]
    generators = [torch.Generator().manual_seed(0)]
    drawn = {int(draw(logits, DecodeOptions(temperature=1.0, top_p=0.7), generators)) for _ in range(300)}
    assert drawn == {0, 1}


def test_num_samples_batch_matches_single_runs(trained):
    args = ("--seed", "the ", "--length", "25", "--temperature", "1.0")
    batch = sample(trained["char"], *args, "--num-samples", "3", "--random-seed", "10", "--format", "jsonl")
    texts = [json.loads(line)["text"] for line in batch.stdout.splitlines()]
    assert len(texts) == 3 and len(set(texts)) == 3
    singles = [json.loads(sample(trained["char"], *args, "--random-seed", str(10 + i), "--format", "jsonl").stdout)["text"]
               for i in range(3)]  # fmt: skip
    assert texts == singles
    plain = sample(trained["char"], *args, "--num-samples", "2", "--random-seed", "1", "--separator", "---\n")
    assert plain.stdout.count("---\n") == 1


def test_jsonl_fields(trained):
    out = sample(trained["word"], "--seed", "the cat", "--length", "12", "--format", "jsonl", "--random-seed", "0")
    record = json.loads(out.stdout)
    assert record["seed"] == "the cat" and record["tokens"] == 12
    assert record["mean_logprob"] < 0 and record["settings"]["length"] == 12


def test_stop_text_ends_the_sample(trained):
    out = sample(trained["char"], "--seed", "the ", "--length", "300", "--stop", ".", "--temperature", "0")
    assert out.exit_code == 0
    text = out.stdout.rstrip("\n")
    assert "." not in text and len(text) < 60


def test_seed_from_stdin_and_no_include_seed(trained):
    out = sample(trained["word"], "--seed", "-", "--length", "5", "--temperature", "0", input="the dog\n")
    assert out.stdout.startswith("the dog ")
    bare = sample(trained["word"], "--seed", "the dog", "--length", "5", "--temperature", "0", "--no-include-seed")
    assert out.stdout.endswith(bare.stdout.lstrip(" ")) and not bare.stdout.startswith("the dog")


def test_unknown_seed_word(trained):
    out = sample(trained["word"], "--seed", "the Cat zebra", "--length", "5")
    assert out.exit_code == 2 and "Traceback" not in out.stderr
    assert "'Cat'" in out.stderr and "'zebra'" in out.stderr and "'cat'" in out.stderr  # lowercase suggested
    for mode, note in (("unk", "to <unk>"), ("skip", "skipped"), ("nearest", "replaced 'Cat' with 'cat'")):
        out = sample(trained["word"], "--seed", "the Cat zebra", "--length", "5", "--on-unknown", mode)
        assert out.exit_code == 0, out.stderr
        assert note in out.stderr


def test_report_copying_finds_a_memorised_span(trained):
    out = sample(trained["char"], "--seed", "the cat sat", "--length", "60", "--temperature", "0", "--report-copying")
    assert out.exit_code == 0, out.stderr
    span = int(re.search(r"longest span copied from the training text: (\d+) tokens", out.stderr).group(1))
    assert span >= 10  # the model has learned the corpus, so greedy text is largely copied
    record = json.loads(sample(trained["char"], "--length", "60", "--temperature", "0", "--report-copying",
                               "--format", "jsonl").stdout)  # fmt: skip
    assert record["copying"]["window_share"] > 0.5


def test_copy_index_planted_span(tmp_path):
    train = torch.randint(0, 50, (5000,)).numpy()
    index = CopyIndex.open(tmp_path, train)
    planted = [60] * 5 + train[1234 : 1234 + 30].tolist() + [61] * 5
    copying = index.measure(planted)
    assert copying.longest_span == 30
    assert copying.window_share == pytest.approx(23 / 33)
    assert (tmp_path / "copy_index.npz").exists()
    assert CopyIndex.open(tmp_path, train).measure(planted).longest_span == 30  # from the cache


def test_head_closes_the_pipe_quietly(trained):
    cmd = f"{sys.executable} -m rnngen sample --run {trained['char']} --length 100000 | head -c 20"
    proc = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
    assert len(proc.stdout) == 20


def test_head_1_ends_quietly(trained):
    cmd = f"{sys.executable} -m rnngen sample --run {trained['word']} --length 100000 | head -1"
    proc = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" or "Traceback" not in proc.stderr
    assert proc.stdout.count("\n") == 1


def test_latest_run_is_the_default(tmp_path, corpus):
    none = run_cli("sample")
    assert none.exit_code == 2 and "rnngen train" in none.stderr
    config = tiny_config(tmp_path, corpus, train={"out_dir": "runs/mine", "max_steps": 5})
    assert run_cli("train", "--config", config).exit_code == 0
    assert run_cli("sample", "--length", "5").exit_code == 0
    by_config = run_cli("sample", "--config", config, "--length", "5")
    assert by_config.exit_code == 0, by_config.stderr


def test_evaluate_bpc_equals_hand_computation(trained, tmp_path):
    text = "the dog ran to the mat.\nthe cat sat in the tree.\n"
    (tmp_path / "held.txt").write_text(text)
    out = run_cli("evaluate", "--checkpoint", trained["char"], "--data", tmp_path / "held.txt", "--json")
    assert out.exit_code == 0, out.stderr
    scores = json.loads(out.stdout)
    model = api.load(trained["char"])
    ids = torch.tensor([model.vocab.index[c] for c in text])
    with torch.no_grad():
        logits, _ = model.module(ids[None, :-1])
        nats = -torch.log_softmax(logits[0], -1).gather(1, ids[1:, None]).sum().item()
    assert scores["bpc"] == pytest.approx(nats / math.log(2) / (len(text) - 1), rel=1e-5)
    assert scores["tokens"] == len(text) - 1 and scores["oov_rate"] == 0
    own = json.loads(run_cli("evaluate", "--checkpoint", trained["char"], "--json").stdout)
    assert own["tokens"] > 0 and own["loss"] > 0


def test_evaluate_table_best_first_and_oov(trained, tmp_path):
    (tmp_path / "held.txt").write_text("the zebra sat on the mat.\n" * 3)
    out = run_cli(
        "evaluate", "--checkpoint", trained["char"], "--checkpoint", trained["word"], "--data", tmp_path / "held.txt"
    )
    assert out.exit_code == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["checkpoint", "tokens", "loss"] and len(lines) == 3
    bpcs = [float(line.split()[4]) for line in lines[1:]]
    assert bpcs == sorted(bpcs)
    word = json.loads(
        run_cli("evaluate", "--checkpoint", trained["word"], "--data", "-", "--json", input="the zebra sat\n").stdout
    )
    assert word["unk_tokens"] == 1


def test_info(trained):
    out = run_cli("info", trained["word"], "--json")
    info = json.loads(out.stdout)
    assert info["level"] == "word" and info["cell"] == "lstm" and info["hidden_size"] == 64
    assert info["step"] == 120 and info["parameters"] > 0 and info["best_val_loss"] > 0
    assert info["config"]["model"]["hidden_size"] == 64
    text = run_cli("info", trained["word"] / "last.pt").stdout
    assert "vocab_size" in text and "config:" in text


def test_readme_python_api_example_runs(trained, monkeypatch, capsys):
    block = re.search(r"## Python API.*?```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README must have a Python API example"
    code = block.group(1).replace("runs/demo", str(trained["word"]))
    exec(compile(code, "README", "exec"), {})
    assert capsys.readouterr().out


def test_max_time_guard(trained):
    out = sample(trained["char"], "--length", "1000000", "--max-time", "0.3", "--format", "jsonl")
    record = json.loads(out.stdout)
    assert out.exit_code == 0 and record["stopped_by"] == "max_time" and 0 < record["tokens"] < 1000000


def test_config_sample_section_gives_defaults(trained, tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text(
        f"train:\n  out_dir: {trained['word']}\nsample:\n  seed: the dog\n  length: 7\n  temperature: 0\n"
    )
    out = run_cli("sample", "--config", config, "--format", "jsonl")
    record = json.loads(out.stdout)
    assert record["seed"] == "the dog" and record["tokens"] == 7 and record["settings"]["temperature"] == 0


def test_draw_survives_non_finite_scores():
    logits = torch.tensor([[float("nan"), 1.0, float("inf")], [float("nan")] * 3])
    for options in (DecodeOptions(temperature=0), DecodeOptions(temperature=0.7, top_p=0.9, top_k=2)):
        drawn = draw(logits, options, [torch.Generator().manual_seed(0)] * 2)
        assert drawn.shape == (2,) and drawn[0] == 2 and 0 <= drawn[1] < 3


def test_draws_follow_the_distribution_and_never_pick_an_impossible_token():
    probs = torch.tensor([0.0, 0.1, 0.0, 0.6, 0.3, 0.0])
    uniforms = torch.rand(60_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    drawn = inverse_cdf(probs.expand(60_000, -1), uniforms)
    counts = torch.bincount(drawn, minlength=6) / 60_000
    assert counts[[0, 2, 5]].sum() == 0
    assert torch.allclose(counts, probs, atol=0.01)
    edges = torch.tensor([0.0, 1 - 2**-53], dtype=torch.float64)  # the smallest and largest uniforms
    assert inverse_cdf(probs.expand(2, -1), edges).tolist() == [1, 4]


def test_per_sample_generators_make_each_row_its_own_stream():
    logits = torch.randn(3, 50)
    options = DecodeOptions(temperature=1.0)
    together = draw(logits, options, [torch.Generator().manual_seed(s) for s in (7, 8, 9)])
    alone = [draw(logits[i : i + 1], options, [torch.Generator().manual_seed(7 + i)]).item() for i in range(3)]
    assert together.tolist() == alone


def test_cpu_stepper_matches_the_fused_modules():
    from rnngen.models.cpu_single_step import CPUStepper
    from rnngen.models.recurrent import RNNLM
    from rnngen.models.state import state_tensors

    for cell, nonlinearity in (("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu")):
        model = RNNLM(40, cell, 8, 16, 2, 0.0, False, nonlinearity=nonlinearity).eval()
        x = torch.randint(0, 40, (3, 6))
        with torch.no_grad():
            expected, expected_state = model(x)
            logits, state = CPUStepper(model)(x)
            one_logits, _ = CPUStepper(model)(x[:1])  # one row: the matrix-vector path
        assert torch.allclose(logits, expected, atol=1e-5)
        assert torch.allclose(one_logits, expected[:1], atol=1e-5)
        for a, b in zip(state_tensors(state), state_tensors(expected_state)):
            assert torch.allclose(a, b, atol=1e-6)


def test_unk_is_never_sampled_unless_allowed(tmp_path):
    """A word model trained on text that is half <unk> (every name occurs once, min_freq 2)."""
    lines = [f"w{i}a w{i}b and w{i}c ." for i in range(400)]
    corpus = tmp_path / "names.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = tiny_config(tmp_path, corpus, data={"level": "word", "min_freq": 2},
                         train={"max_steps": 60, "eval_every": 60, "lr": 0.01, "sample_length": 0})  # fmt: skip
    assert run_cli("train", "--config", config).exit_code == 0
    run = tmp_path / "run"
    args = ("--length", "500", "--num-samples", "4", "--temperature", "1", "--random-seed", "1", "--format", "jsonl")
    default = [json.loads(line) for line in sample(run, *args).stdout.splitlines()]
    assert sum(r["tokens"] for r in default) == 2000
    assert not any("<unk>" in r["text"] for r in default)
    allowed = [json.loads(line) for line in sample(run, *args, "--allow-unk").stdout.splitlines()]
    assert sum(r["text"].count("<unk>") for r in allowed) > 200  # the model favours it: 3 of 6 tokens
    info = run_cli("info", run)
    assert re.search(r"unk_rate\s+50\.00% \(1,200 <unk> tokens", info.stdout), info.stdout
    assert json.loads(run_cli("info", run, "--json").stdout)["unk_rate"] == 0.5


def test_info_of_a_checkpoint_without_unk_counts(trained, tmp_path):
    from rnngen import checkpoint

    payload = checkpoint.load(trained["word"] / "best.pt")
    del payload[checkpoint.SUMMARY]["prepared"]  # as written before the counts were recorded
    checkpoint.save(tmp_path / "old.pt", payload)
    out = run_cli("info", tmp_path / "old.pt")
    assert out.exit_code == 0 and re.search(r"unk_rate\s+unknown", out.stdout), out.stdout
    assert json.loads(run_cli("info", tmp_path / "old.pt", "--json").stdout)["unk_rate"] is None


def test_repetition_penalty_divides_positive_and_multiplies_negative_scores_of_seen_tokens_only():
    logits = torch.tensor([[2.0, -1.0, 3.0, 0.5]])
    seen = torch.tensor([[True, True, False, False]])
    assert torch.equal(penalise_repeats(logits, seen, 2.0), torch.tensor([[1.0, -2.0, 3.0, 0.5]]))
    assert penalise_repeats(logits, seen, 1.0) is logits  # 1 = off


def test_decode_options_defaults_are_the_sample_sections():
    from rnngen.config import SampleConfig

    defaults = SampleConfig()
    for name, value in vars(DecodeOptions()).items():
        assert value == getattr(defaults, name), name
