"""Fine-tuning: train --init-from, vocabulary growth, data.vocab_from and train.freeze."""

import hashlib
import math
from pathlib import Path

import pytest
import torch
import yaml

from rnngen import checkpoint
from rnngen.config import FINE_TUNE_DEFAULTS, resolve
from rnngen.data.prepare import open_prepared
from rnngen.data.vocab import Vocab
from rnngen.models.registry import build_model
from rnngen.training import finetune
from rnngen.training.trainer import Trainer
from tests.conftest import learnable_text, run_cli, tiny_config
from tests.test_train import metrics

NEW_TEXT = "Zebras QUIZ the cat: jumping, yelling!\nthe dog sat on the log.\n" * 40  # new characters and words

# source models, trained once per module: (output, tied) -> run directory
SOURCES = {
    ("full", False): {},
    ("full", True): {"embedding_dim": 32, "tie_weights": True},
    ("adaptive", False): {"output": "adaptive", "adaptive_cutoffs": [4, 9]},
    ("adaptive", True): {"output": "adaptive", "adaptive_cutoffs": [4, 9], "embedding_dim": 32, "tie_weights": True},
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Train each kind of source model once (a few real steps on the learnable corpus)."""
    made = {}

    def get(output="full", tied=False, level="char", layers=1):
        key = (output, tied, level, layers)
        if key not in made:
            root = tmp_path_factory.mktemp(f"source-{output}-{tied}-{level}-{layers}")
            corpus = root / "corpus.txt"
            corpus.write_text(learnable_text(), encoding="utf-8")
            model = {**SOURCES[(output, tied)], "num_layers": layers}
            config = tiny_config(root, corpus, data={"level": level}, model=model, train={"max_steps": 10})
            result = run_cli("train", "--config", config)
            assert result.exit_code == 0, result.stderr
            made[key] = root / "run"
        return made[key]

    return get


def new_text(tmp_path, text=NEW_TEXT):
    path = tmp_path / "new.txt"
    path.write_text(text, encoding="utf-8")
    return path


def fine_tune_config(tmp_path, source=None, name="ft", level="char", **train):
    """A config for fine-tuning on NEW_TEXT; lr and warmup come from the fine-tuning defaults."""
    config = {
        "data": {"path": str(new_text(tmp_path)), "level": level, "val_fraction": 0.1},
        "train": {"out_dir": str(tmp_path / name), "batch_size": 4, "seq_len": 16, "max_epochs": None,
                  "max_steps": 10, "eval_every": 5, "save_every": 5, "sample_length": 10, "device": "cpu",
                  **({"init_from": str(source)} if source else {}), **train},
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def source_text_ids(source_payload) -> torch.Tensor:
    """The learnable corpus in the source's ids: text made only of tokens the source knows."""
    vocab = Vocab.from_dict(source_payload[checkpoint.VOCAB])
    text = learnable_text(2)
    pieces = list(text) if vocab.level == "char" else text.split()
    ids = vocab.encode(pieces)
    assert 0 not in ids
    return torch.tensor(ids[:64]).view(2, 32)


def grown_trainer(tmp_path, source):
    """The model a fine-tuning run starts from, before any training step (the real setup path)."""
    config, payload = finetune.load_source(resolve(fine_tune_config(tmp_path, source)))
    from rnngen.runs import RunPaths

    trainer = Trainer(config, RunPaths(config.train.out_dir), None, source=payload)
    return trainer.model.eval(), trainer.vocab


# --------------------------------------------------------------------------- vocabulary growth


def test_vocab_grow_appends_new_tokens_and_keeps_ids():
    base = Vocab.build({"a": 5, "b": 3}, "word")
    grown = base.grow({"b": 9, "c": 4, "d": 1, "e": 2}, min_freq=2)
    assert grown.tokens == ["<unk>", "a", "b", "c", "e"]  # d is rarer than min_freq; c more frequent than e
    assert grown.tokens[: len(base)] == base.tokens
    assert base.grow({"c": 4, "e": 2}, max_vocab=4).tokens == ["<unk>", "a", "b", "c"]
    assert base.grow({"c": 4}, max_vocab=2).tokens == base.tokens  # the source's tokens are never dropped


@pytest.mark.parametrize("level", ["char", "word"])
def test_fine_tuning_grows_the_vocabulary_keeping_ids(tmp_path, sources, level):
    source = sources(level=level)
    result = run_cli("train", "--config", fine_tune_config(tmp_path, level=level), "--init-from", source)
    assert result.exit_code == 0, result.stderr
    old = checkpoint.load(source / "best.pt")[checkpoint.VOCAB]["tokens"]
    new = checkpoint.load(tmp_path / "ft/last.pt")[checkpoint.VOCAB]["tokens"]
    assert new[: len(old)] == old and len(new) > len(old)
    assert "Z" in new[len(old) :] if level == "char" else "Zebras" in new[len(old) :]
    assert f"vocabulary {len(old)} -> {len(new)} (+{len(new) - len(old)} tokens" in result.stderr
    assert "kept:" in result.stderr and "reset: optimizer state, step counter" in result.stderr
    assert f"peak lr {FINE_TUNE_DEFAULTS['lr']:g} after {FINE_TUNE_DEFAULTS['warmup_steps']} warmup" in result.stderr
    assert open_prepared(tmp_path / "ft/prepared").vocab.tokens == new  # `prepare` made the grown vocabulary


def test_min_freq_applies_to_the_new_texts_counts(tmp_path, sources):
    source = sources(level="word")
    text = "the cat sat . rare1\n" + "the cat met a Zebra .\n" * 5
    config = fine_tune_config(tmp_path, source, level="word")
    new_text(tmp_path, text)
    result = run_cli("prepare", "--config", config, "--set", "data.min_freq=2")
    assert result.exit_code == 0, result.stderr
    tokens = open_prepared(tmp_path / "ft/prepared").vocab.tokens
    old = checkpoint.load(source / "best.pt")[checkpoint.VOCAB]["tokens"]
    assert tokens[len(old) :] == ["Zebra", "met"]  # 'rare1' is seen once; 'a' was known already


# --------------------------------------------------------------------------- the grown model keeps the source's scores


def source_model(source_dir: Path):
    """The source run's best.pt: its payload and its model, in eval mode."""
    payload = checkpoint.load(source_dir / "best.pt")
    source = build_model(payload[checkpoint.MODEL_ARGS])
    source.load_state_dict(payload[checkpoint.MODEL_STATE])
    return payload, source.eval()


def source_and_grown(tmp_path, source_dir: Path):
    """The source model, the model grown from it, the grown vocabulary, the source's vocabulary size, and
    token ids of the source's own text."""
    payload, source = source_model(source_dir)
    grown, vocab = grown_trainer(tmp_path, source_dir)
    return source, grown, vocab, len(payload[checkpoint.VOCAB]["tokens"]), source_text_ids(payload)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_full_output_keeps_old_logits_and_gives_new_tokens_p_over_1_plus_p(tmp_path, sources, tied):
    source, grown, vocab, old, ids = source_and_grown(tmp_path, sources("full", tied))
    assert len(vocab) > old
    with torch.no_grad():
        before, _ = source(ids)
        after, _ = grown(ids)
    torch.testing.assert_close(after[..., :old], before, rtol=0, atol=1e-6)  # every old token's logit
    p_unk = before.softmax(-1)[..., 0]
    new_mass = after.softmax(-1)[..., old:].sum(-1)
    torch.testing.assert_close(new_mass, p_unk / (1 + p_unk), rtol=1e-4, atol=1e-7)
    if tied:
        assert grown.head.weight is grown.embedding.weight


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_adaptive_output_keeps_cluster_scores_and_puts_new_tokens_in_the_last_cluster(tmp_path, sources, tied):
    source, grown, vocab, old, ids = source_and_grown(tmp_path, sources("adaptive", tied))
    with torch.no_grad():
        hidden, _ = source.features(ids)
        grown_hidden, _ = grown.features(ids)
        torch.testing.assert_close(grown_hidden, hidden, rtol=0, atol=0)
        torch.testing.assert_close(
            grown.head.head_log_probs(hidden), source.head.head_log_probs(hidden), rtol=0, atol=0
        )
        *middle, last = range(1, len(source.head.edges) - 1)  # the tail clusters
        for c in middle:  # the other clusters: the same log-probability within the cluster
            before, after = source.head.tail_scores(c, hidden), grown.head.tail_scores(c, hidden)
            torch.testing.assert_close(after.log_softmax(-1), before.log_softmax(-1), rtol=0, atol=0)
        before, after = source.head.tail_scores(last, hidden), grown.head.tail_scores(last, hidden)
    size = before.size(-1)
    assert after.size(-1) == size + len(vocab) - old  # every new token went to the last cluster
    torch.testing.assert_close(after[..., :size], before, rtol=0, atol=1e-6)  # old tokens' scores in it
    q = before.softmax(-1)[..., -1]  # the cluster's rarest old token
    torch.testing.assert_close(after.softmax(-1)[..., size:].sum(-1), q / (1 + q), rtol=1e-4, atol=1e-7)
    if tied:
        assert grown.head.word_weight is grown.embedding.weight


# --------------------------------------------------------------------------- data.vocab_from


def test_vocab_from_keeps_the_source_vocabulary(tmp_path, sources):
    source = sources()
    old = checkpoint.load(source / "best.pt")[checkpoint.VOCAB]["tokens"]
    config = fine_tune_config(tmp_path, source)
    result = run_cli("train", "--config", config, "--set", f"data.vocab_from={source}")
    assert result.exit_code == 0, result.stderr
    assert "+0 tokens" in result.stderr
    assert checkpoint.load(tmp_path / "ft/last.pt")[checkpoint.VOCAB]["tokens"] == old
    prepared = open_prepared(tmp_path / "ft/prepared")
    assert prepared.vocab.tokens == old and prepared.meta["counts"]["unk_tokens"] > 0  # 'Z', 'Q', ... are <unk>
    # on its own, vocab_from trains a new model on exactly that vocabulary
    scratch = fine_tune_config(tmp_path, name="scratch")
    result = run_cli("train", "--config", scratch, "--set", f"data.vocab_from={source}")
    assert result.exit_code == 0, result.stderr
    assert checkpoint.load(tmp_path / "scratch/last.pt")[checkpoint.VOCAB]["tokens"] == old


def test_prepared_data_is_stale_when_the_source_vocabulary_changes(tmp_path, corpus):
    source = tiny_config(tmp_path / "src", corpus, train={"max_steps": 2, "out_dir": str(tmp_path / "src/run")})
    assert run_cli("train", "--config", source).exit_code == 0
    sets = ["--set", f"data.vocab_from={tmp_path / 'src/run'}", "--out", tmp_path / "prep"]
    assert run_cli("prepare", new_text(tmp_path), *sets).exit_code == 0
    before = open_prepared(tmp_path / "prep").vocab.tokens
    (tmp_path / "other.txt").write_text("xyz " * 300, encoding="utf-8")
    retrain = ["--set", f"data.path={tmp_path / 'other.txt'}", "--overwrite"]
    assert run_cli("train", "--config", source, *retrain).exit_code == 0
    assert run_cli("prepare", new_text(tmp_path), *sets).exit_code == 0
    after = open_prepared(tmp_path / "prep").vocab.tokens
    assert after != before and after == checkpoint.load(tmp_path / "src/run/last.pt")[checkpoint.VOCAB]["tokens"]


# --------------------------------------------------------------------------- freezing


def test_frozen_parts_stay_bit_identical(tmp_path, sources):
    source = sources(layers=2)
    config = fine_tune_config(tmp_path, source, freeze=["embedding", "rnn.0"], weight_decay=0.5, lr=0.05)
    result = run_cli("train", "--config", config)
    assert result.exit_code == 0, result.stderr
    assert "frozen: embedding" in result.stderr and "rnn.0" in result.stderr
    payload = checkpoint.load(source / "best.pt")
    after = checkpoint.load(tmp_path / "ft/last.pt")
    start = finetune.grown_state(payload, after[checkpoint.MODEL_ARGS], after[checkpoint.CONFIG]["train"]["seed"])
    frozen = [k for k in start if k == "embedding.weight" or k.endswith("_l0")]
    assert len(frozen) == 5
    for key in frozen:  # no update and no weight decay
        assert torch.equal(after[checkpoint.MODEL_STATE][key], start[key]), key
    old = len(payload[checkpoint.VOCAB]["tokens"])
    assert torch.equal(
        after[checkpoint.MODEL_STATE]["embedding.weight"][:old], payload[checkpoint.MODEL_STATE]["embedding.weight"]
    )
    for key in ("rnn.weight_ih_l1", "head.weight"):  # the rest did train
        assert not torch.equal(after[checkpoint.MODEL_STATE][key][:old], payload[checkpoint.MODEL_STATE][key][:old]), (
            key
        )


def test_freeze_names_are_checked(tmp_path, sources):
    result = run_cli("train", "--config", fine_tune_config(tmp_path, sources(), freeze=["embeding"]))
    assert result.exit_code == 2 and "did you mean `embedding`?" in result.stderr
    result = run_cli("train", "--config", fine_tune_config(tmp_path, sources(), freeze=["rnn.3"]))
    assert result.exit_code == 2 and "1 recurrent layer(s), rnn.0 to rnn.0" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- the source, resume, refusals


def test_source_checkpoint_is_never_modified(tmp_path, sources):
    source = sources()
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in source.glob("*.pt")}
    result = run_cli("train", "--config", fine_tune_config(tmp_path, source, freeze=["output"]))
    assert result.exit_code == 0, result.stderr
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in source.glob("*.pt")} == digests


def test_fine_tuning_reads_the_source_checkpoint_once(tmp_path, sources, monkeypatch):
    source = sources()
    reads = []
    real_load = torch.load

    def counting_load(file, *args, **kwargs):
        reads.append(Path(file).resolve())
        return real_load(file, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    result = run_cli("train", "--config", fine_tune_config(tmp_path, source, max_steps=4, eval_every=2))
    assert result.exit_code == 0, result.stderr
    assert reads.count((source / "best.pt").resolve()) == 1  # config, vocabulary and weights from one read


def test_a_run_cannot_start_from_its_own_directory(tmp_path, sources):
    source = sources()
    digest = hashlib.sha256((source / "best.pt").read_bytes()).hexdigest()
    config = fine_tune_config(tmp_path, source, out_dir=str(source))
    result = run_cli("train", "--config", config, "--overwrite")
    assert result.exit_code == 2 and "own directory" in result.stderr
    assert hashlib.sha256((source / "best.pt").read_bytes()).hexdigest() == digest


def test_init_from_with_resume_is_refused(tmp_path, sources):
    result = run_cli("train", "--config", fine_tune_config(tmp_path), "--init-from", sources(), "--resume")
    assert result.exit_code == 2
    assert "--init-from starts a new run" in result.stderr and "--resume" in result.stderr


def test_a_fine_tuned_run_resumes_exactly(tmp_path, sources):
    source = sources(layers=2)
    common = {"decay_steps": 20, "eval_every": 5, "save_every": 5, "freeze": ["rnn.0"]}
    straight = fine_tune_config(tmp_path, source, name="a", max_steps=20, **common)
    assert run_cli("train", "--config", straight).exit_code == 0
    halves = fine_tune_config(tmp_path, source, name="b", max_steps=10, **common)
    assert run_cli("train", "--config", halves).exit_code == 0
    result = run_cli("train", "--config", halves, "--resume", "--set", "train.max_steps=20")
    assert result.exit_code == 0, result.stderr
    assert "resuming" in result.stderr and "fine-tuning from" not in result.stderr
    a, b = checkpoint.load(tmp_path / "a/last.pt"), checkpoint.load(tmp_path / "b/last.pt")
    for key, tensor in a[checkpoint.MODEL_STATE].items():
        assert torch.equal(tensor, b[checkpoint.MODEL_STATE][key]), key
    assert a[checkpoint.SUMMARY]["val"]["loss"] == b[checkpoint.SUMMARY]["val"]["loss"]
    assert [r["train_loss"] for r in metrics(tmp_path / "a")] == [r["train_loss"] for r in metrics(tmp_path / "b")]
    assert b[checkpoint.SUMMARY]["init_from"]["checkpoint"] == str(source / "best.pt")


def test_source_recorded_in_config_and_info(tmp_path, sources):
    source = sources()
    assert run_cli("train", "--config", fine_tune_config(tmp_path), "--init-from", source).exit_code == 0
    saved = yaml.safe_load((tmp_path / "ft/config.yaml").read_text(encoding="utf-8"))
    assert saved["train"]["init_from"] == str(source / "best.pt")
    assert saved["train"]["lr"] == FINE_TUNE_DEFAULTS["lr"]
    result = run_cli("info", tmp_path / "ft")
    assert result.exit_code == 0
    line = next(line for line in result.stdout.splitlines() if line.startswith("init_from"))
    assert str(source / "best.pt") in line and "(step 10)" in line and "tokens" in line


def test_fine_tuning_defaults_yield_to_explicit_settings():
    assert resolve(None, ["train.init_from=runs/x"]).train.lr == FINE_TUNE_DEFAULTS["lr"]
    explicit = resolve(None, ["train.init_from=runs/x", "train.lr=0.01", "train.warmup_steps=3"]).train
    assert (explicit.lr, explicit.warmup_steps) == (0.01, 3)
    assert resolve(None, []).train.lr != FINE_TUNE_DEFAULTS["lr"]


def test_refusals_name_the_problem(tmp_path, sources, corpus):
    missing = run_cli("train", "--config", fine_tune_config(tmp_path), "--init-from", tmp_path / "nope")
    assert missing.exit_code == 2 and "train.init_from:" in missing.stderr
    word = run_cli("train", "--config", fine_tune_config(tmp_path, level="word"), "--init-from", sources())
    assert word.exit_code == 2 and "set data.level: char" in word.stderr
    ngram = tiny_config(tmp_path / "ng", corpus, model={"cell": "ngram"}, train={"out_dir": str(tmp_path / "ng/run")})
    assert run_cli("train", "--config", ngram).exit_code == 0
    refused = run_cli("train", "--config", fine_tune_config(tmp_path), "--init-from", tmp_path / "ng/run")
    assert refused.exit_code == 2 and "n-gram model" in refused.stderr and "Traceback" not in refused.stderr


def test_compare_accepts_a_fine_tuned_run(tmp_path, sources):
    config = fine_tune_config(tmp_path)
    assert run_cli("train", "--config", config, "--init-from", sources()).exit_code == 0
    result = run_cli("compare", "--config", config, "--models", f"{tmp_path / 'ft'},ngram:2", "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = {row["model"]: row for row in yaml.safe_load(result.stdout)}
    assert math.isfinite(rows[str(tmp_path / "ft")]["bpc"]) and rows[str(tmp_path / "ft")]["parameters"] > 0
