"""AWD-LSTM regularisers: locked dropout, embedding dropout, weight drop, AR/TAR, variable BPTT."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnngen import api, checkpoint
from rnngen.config import ModelConfig
from rnngen.data import windows
from rnngen.models import regularise
from rnngen.models.recurrent import RNNLM, model_args
from rnngen.models.registry import build_model
from tests.conftest import run_cli, tiny_config

REGULARISED = {
    "locked_dropout": True,
    "dropout_input": 0.3,
    "dropout_hidden": 0.2,
    "dropout_output": 0.4,
    "embedding_dropout": 0.1,
    "weight_drop": 0.5,
}


def test_locked_dropout_uses_one_mask_across_time():
    torch.manual_seed(0)
    x = torch.arange(1, 25, dtype=torch.float32).reshape(2, 4, 3)  # (B=2, T=4, D=3)
    layer = regularise.LockedDropout(0.5).train()
    torch.manual_seed(7)
    out = layer(x)
    torch.manual_seed(7)
    mask = torch.empty(2, 1, 3).bernoulli_(0.5) * 2.0  # the hand-made mask: kept units doubled
    assert torch.equal(out, x * mask)
    kept = out != 0
    assert (kept == kept[:, :1]).all(), "a unit is dropped at every step or at none"
    assert 0 < kept.sum() < kept.numel()
    assert torch.equal(layer.eval()(x), x)


def test_model_applies_locked_dropout_to_the_embedding_output():
    torch.manual_seed(0)
    model = RNNLM(10, "lstm", 6, 6, 2, 0.0, False, locked_dropout=True, dropout_input=0.5).train()
    seen = []
    model.input_dropout.register_forward_hook(lambda module, args, out: seen.append(out))
    model(torch.full((3, 5), 4))  # the same token at every step: equal rows before dropout
    zero = seen[0] == 0
    assert (zero == zero[:, :1]).all() and zero.any()


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(1)
    embedding = nn.Embedding(5, 4)
    ids = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4]])
    out = regularise.embedding_dropout(embedding, ids, 0.5, training=True)
    dropped = (out == 0).all(-1)[0]  # (T,) whole vectors are zero or none of them
    assert ((out == 0).any(-1)[0] == dropped).all()
    assert torch.equal(dropped[:5], dropped[5:]), "a word is dropped at every occurrence in the batch"
    kept = ~dropped
    assert torch.allclose(out[0, kept], embedding(ids)[0, kept] * 2)
    assert torch.equal(regularise.embedding_dropout(embedding, ids, 0.5, training=False), embedding(ids))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_weight_drop_changes_recurrent_weights_in_training_only(cell):
    torch.manual_seed(0)
    model = RNNLM(12, cell, 8, 8, 2, 0.0, False, weight_drop=0.5)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randint(0, 12, (3, 6))
    torch.manual_seed(5)
    train_out, _ = model.train().features(x)

    # the same masks by hand: one per layer, in layer order, then the unchanged module on them
    torch.manual_seed(5)
    masked = copy.deepcopy(model.rnn)
    dropped = [F.dropout(getattr(model.rnn, f"weight_hh_l{k}"), 0.5, True).detach() for k in range(2)]
    with torch.no_grad():
        for k in range(2):
            getattr(masked, f"weight_hh_l{k}").copy_(dropped[k])
    expected, _ = masked(model.embedding(x))
    assert torch.allclose(train_out, expected, atol=1e-6)

    train_out.pow(2).sum().backward()
    for k in range(2):  # the gradient reaches the raw matrix, and only where the mask kept a weight
        grad = getattr(model.rnn, f"weight_hh_l{k}").grad
        assert grad is not None and grad.abs().sum() > 0
        assert (grad[dropped[k] == 0] == 0).all()
    for key, value in model.state_dict().items():
        assert torch.equal(value, raw[key]), f"{key} changed by a training forward pass"

    model.eval()
    eval_out, _ = model.features(x)
    plain, _ = model.rnn(model.embedding(x))
    assert torch.equal(eval_out, plain), "evaluation reads the raw weights"
    assert not torch.allclose(eval_out, train_out)


def test_locked_dropout_between_layers_runs_layer_by_layer_with_the_same_weights():
    torch.manual_seed(0)
    model = RNNLM(12, "lstm", 8, 8, 3, 0.0, False, locked_dropout=True, dropout_hidden=0.0001)
    x = torch.randint(0, 12, (2, 5))
    model.hidden_dropout.p = 0.0  # layer by layer with nothing dropped = the fused three-layer module
    split_out, (h, c) = model.train().features(x)
    fused_out, (h2, c2) = model.rnn(model.embedding(x))
    assert torch.allclose(split_out, fused_out, atol=1e-6)
    assert torch.allclose(h, h2, atol=1e-6) and torch.allclose(c, c2, atol=1e-6)


def test_ar_and_tar_equal_a_hand_computation():
    dropped = torch.tensor([[[1.0, 2.0], [0.0, 3.0], [2.0, 0.0]]])  # (1, 3, 2)
    raw = torch.tensor([[[1.0, 1.0], [2.0, 3.0], [2.0, -1.0]]])
    ar = (1 + 4 + 0 + 9 + 4 + 0) / 6  # mean of squares
    tar = ((1 + 4) + (0 + 16)) / 4  # mean of squared differences of consecutive steps
    assert regularise.activation_penalty(dropped, raw, 2.0, 0.0).item() == pytest.approx(2 * ar)
    assert regularise.activation_penalty(dropped, raw, 0.0, 1.0).item() == pytest.approx(tar)
    assert regularise.activation_penalty(dropped, raw, 2.0, 1.0).item() == pytest.approx(2 * ar + tar)


def test_training_loss_adds_ar_tar_to_the_cross_entropy():
    torch.manual_seed(0)
    model = RNNLM(12, "lstm", 8, 8, 1, 0.0, False).train()
    x = torch.randint(0, 12, (2, 5))
    objective, cross_entropy, _ = model.training_loss(x, x, None, 2.0, 1.0)
    outputs, _ = model.rnn(model.embedding(x))
    expected = 2.0 * outputs.pow(2).mean() + (outputs[:, 1:] - outputs[:, :-1]).pow(2).mean()
    assert (objective - cross_entropy).item() == pytest.approx(expected.item(), rel=1e-5)
    assert cross_entropy.item() == pytest.approx(model.loss(x, x)[0].item())


class _OldLM(nn.Module):
    """The model as it was before the regularisers: dropout, fused module, dropout, output layer."""

    def __init__(self, model: RNNLM, dropout: float):
        super().__init__()
        self.embedding, self.rnn, self.head = model.embedding, model.rnn, model.head
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, y):
        outputs, _ = self.rnn(self.dropout(self.embedding(x)))
        logits = self.head(self.dropout(outputs))
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_every_regulariser_off_reproduces_the_old_loss_exactly(cell):
    config = ModelConfig(cell=cell, embedding_dim=8, hidden_size=8, num_layers=2, dropout=0.3)
    args = model_args(config, 15)
    assert not set(regularise.MODEL_KEYS) & set(args), "nothing new in the checkpoint's model_args"
    torch.manual_seed(3)
    model = build_model(args).train()
    old = _OldLM(model, 0.3).train()
    x, y = torch.randint(0, 15, (4, 9)), torch.randint(0, 15, (4, 9))
    torch.manual_seed(11)
    objective, cross_entropy, _ = model.training_loss(x, y, None, 0.0, 0.0)
    torch.manual_seed(11)
    assert objective.item() == cross_entropy.item() == old(x, y).item()


def _train(tmp_path, corpus, name, steps, **train):
    settings = {"max_steps": steps, "decay_steps": 20, "eval_every": 5, "save_every": 5, **train}
    config = tiny_config(
        tmp_path / name, corpus, model={"num_layers": 2, **REGULARISED},
        train={**settings, "out_dir": str(tmp_path / name / "run"), "ar_alpha": 2.0, "tar_beta": 1.0,
               "variable_bptt": True},
    )  # fmt: skip
    result = run_cli("train", "--config", config)
    assert result.exit_code == 0, result.stderr
    return config


def test_regularised_training_resumes_exactly_and_samples(tmp_path, corpus):
    _train(tmp_path, corpus, "a", 20)
    halves = _train(tmp_path, corpus, "b", 10)
    result = run_cli("train", "--config", halves, "--resume", "--set", "train.max_steps=20")
    assert result.exit_code == 0, result.stderr
    a = checkpoint.load(tmp_path / "a/run/last.pt")
    b = checkpoint.load(tmp_path / "b/run/last.pt")
    for key, tensor in a[checkpoint.MODEL_STATE].items():
        assert torch.equal(tensor, b[checkpoint.MODEL_STATE][key]), key
    assert a[checkpoint.TRAINER_STATE]["column"] == b[checkpoint.TRAINER_STATE]["column"]
    assert a[checkpoint.MODEL_ARGS]["weight_drop"] == 0.5
    assert a[checkpoint.CONFIG]["train"]["variable_bptt"] is True
    model = api.load(tmp_path / "a/run/last.pt")
    assert not model.module.training
    assert model.sample("the", length=20, random_seed=1)[0].tokens == 20
    again = model.sample("the", length=20, random_seed=1)[0]
    assert again.text == model.sample("the", length=20, random_seed=1)[0].text, "sampling draws no dropout"


def test_checkpoint_without_the_new_keys_still_loads(tmp_path, corpus):
    config = tiny_config(tmp_path, corpus, train={"max_steps": 5})
    assert run_cli("train", "--config", config).exit_code == 0
    path = tmp_path / "run" / "last.pt"
    payload = checkpoint.load(path)
    for key in ("locked_dropout", "dropout_input", "dropout_hidden", "dropout_output", "embedding_dropout"):
        payload[checkpoint.CONFIG]["model"].pop(key)
    for key in ("ar_alpha", "tar_beta", "variable_bptt"):
        payload[checkpoint.CONFIG]["train"].pop(key)
    payload[checkpoint.CONFIG]["model"].pop("weight_drop")
    checkpoint.save(path, payload)
    result = run_cli("sample", "--checkpoint", path, "--length", "10")
    assert result.exit_code == 0, result.stderr
    result = run_cli("train", "--config", config, "--resume", "--set", "train.max_steps=8")
    assert result.exit_code == 0, result.stderr


def test_variable_bptt_lengths_follow_awd():
    lengths = [windows.bptt_length(70, 1, step) for step in range(2000)]
    assert min(lengths) >= 5 and max(lengths) <= 140
    half = sum(length < 52 for length in lengths) / len(lengths)
    assert 0.02 < half < 0.09, half  # about 5% of the windows are drawn around seq_len / 2
    assert 66.5 < sum(lengths) / len(lengths) < 69  # 0.95 * 70 + 0.05 * 35 = 68.25, less 0.5 for int()
    assert windows.bptt_length(70, 1, 3) == windows.bptt_length(70, 1, 3)
    assert windows.window_lr(1.0, 35, 70) == 0.5


def test_embedding_dropout_needs_an_embedding(tmp_path, corpus):
    config = tiny_config(tmp_path, corpus, model={"input": "onehot", "embedding_dropout": 0.1})
    result = run_cli("train", "--config", config)
    assert result.exit_code == 2 and "model.embedding_dropout needs model.input: embedding" in result.stderr


def test_regularisers_train_under_ddp(tmp_path, corpus):
    from tests.test_distributed import torchrun

    config = tiny_config(
        tmp_path, corpus, model={"num_layers": 2, **REGULARISED},
        train={"max_steps": 12, "eval_every": 6, "variable_bptt": True, "ar_alpha": 2.0, "tar_beta": 1.0},
    )  # fmt: skip
    proc = torchrun(config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0 of 2: stopped at step 12" in proc.stderr and "rank 1 of 2: stopped at step 12" in proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]
    last = checkpoint.load(tmp_path / "run" / "last.pt")
    assert last[checkpoint.SUMMARY]["val"]["loss"] < 4.0
