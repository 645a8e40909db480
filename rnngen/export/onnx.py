"""`rnngen export --format onnx`: a single-step ONNX graph and the JSON that says how to use it.

DIR/model.onnx computes one step of the model for a batch of rows:

    inputs   token_ids (B,) int64, h (L, B, H) float32, and c (L, B, H) for lstm
    outputs  logits (B, V) float32 (log_probs with an adaptive softmax), h_next, and c_next for lstm

B is a dynamic dimension. Softmax of either output is the next-token distribution (log_softmax
leaves log-probabilities as they are). DIR/model.json holds the vocabulary (id = index), the
level and its tokenizing and joining rules (the BPE tokenizer at subword level), the state's
names and shapes, and the checkpoint's `sample:` settings; docs/export.md samples from the pair
with onnxruntime and numpy alone. The graph is torch.onnx's (dynamo) export of the model's own
forward pass; a spelled embedding is exported as the table it composes. Before anything is
written in place, onnxruntime runs the graph for CHECK_STEPS steps against PyTorch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from rnngen import __version__, console, fileio
from rnngen.data import tokens
from rnngen.errors import UserError
from rnngen.generate.sample import encode_seed
from rnngen.models import spelling
from rnngen.models.recurrent import RNNLM
from rnngen.models.state import state_tensors

FORMATS = ("onnx",)
GRAPH, META = "model.onnx", "model.json"
FORMAT_NAME, FORMAT_VERSION = "rnngen-onnx", 1
OPSET = 18  # ONNX opset of the graph: read by onnxruntime 1.14 (2023) and later, web and mobile builds included
CHECK_STEPS, CHECK_TOLERANCE = 16, 1e-4
INSTALL_HINT = "pip install 'rnngen[export]'"


def require_export_stack() -> None:
    """Fail early, with the install command, when the export extra is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise UserError(
            f"rnngen export needs onnx, onnxruntime and onnxscript, which are not installed; install them with: "
            f"{INSTALL_HINT}"
        ) from None


class SingleStep(nn.Module):
    """The exported computation: token_ids (B,) and the state tensors in; scores (B, V) and the new state out."""

    def __init__(self, model: RNNLM):
        super().__init__()
        self.model = model
        self.paired = model.cell == "lstm"

    def forward(self, token_ids: torch.Tensor, h: torch.Tensor, *c: torch.Tensor):
        state = (h, c[0]) if self.paired else h
        scores, state = self.model(token_ids[:, None], state)  # (B, 1, V)
        return (scores[:, 0], *state_tensors(state))

    def names(self) -> tuple[list[str], list[str]]:
        """The graph's input and output names, in order."""
        scores = "log_probs" if self.model.adaptive else "logits"
        if self.paired:
            return ["token_ids", "h", "c"], [scores, "h_next", "c_next"]
        return ["token_ids", "h"], [scores, "h_next"]

    def example(self, batch: int = 2) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(batch, dtype=torch.long), *state_tensors(self.model.initial_state(batch, "cpu")))


def export(model, out: str | Path, fmt: str = "onnx", overwrite: bool = False) -> list[Path]:
    """Write `model` (an rnngen.api.Model) to the directory `out`; returns the paths written."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: rnngen export writes {', '.join(FORMATS)}; give --format onnx")
    if not isinstance(model.module, RNNLM):
        cell = model.model_args.get("cell")
        raise UserError(
            f"{model.path} holds a {cell} model, which has no single-step graph to export; "
            "rnngen export takes rnn, lstm and gru models"
        )
    require_export_stack()
    target = _target(Path(out), overwrite)
    step = SingleStep(spelling.plain_copy(model.module).cpu().eval())
    with fileio.atomic_dir(target) as tmp:
        _export_graph(step, tmp / GRAPH)
        gap = check_graph(tmp / GRAPH, step)
        if gap > CHECK_TOLERANCE:
            raise RuntimeError(f"the exported graph's scores differ from PyTorch's by {gap:.2g}; please report it")
        fileio.write_json(tmp / META, describe(model, step))
    console.info(f"exported {model.path} to {target}: onnxruntime's scores and state are within {gap:.1g} of "
                 f"PyTorch's over {CHECK_STEPS} steps")  # fmt: skip
    return [target / GRAPH, target / META]


def _target(out: Path, overwrite: bool) -> Path:
    """`out`, once it is sure that writing there loses nothing the user did not ask to replace."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory for the export (it is created)")
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not present:
        return out
    foreign = [name for name in present if name not in (GRAPH, META)]
    if foreign:
        shown = ", ".join(foreign[:5])
        raise UserError(f"--out {out} already holds other files ({shown}); give a new or empty directory")
    if not overwrite:
        raise UserError(f"--out {out} already holds an export; add --overwrite to replace it, or give a new directory")
    return out


def _export_graph(step: SingleStep, path: Path) -> None:
    inputs, outputs = step.names()
    batch = torch.export.Dim("batch", min=1)
    shapes = ({0: batch}, {1: batch}, ({1: batch},)) if step.paired else ({0: batch}, {1: batch})
    with _quiet_exporter():
        torch.onnx.export(
            step, step.example(), str(path), input_names=inputs, output_names=outputs, dynamic_shapes=shapes,
            opset_version=OPSET, dynamo=True, external_data=False, verbose=False,
        )  # fmt: skip


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's own notes (deprecations, torchvision absent, attributes it assigns) are not the user's."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def check_graph(path: Path, step: SingleStep, steps: int = CHECK_STEPS, batch: int = 3) -> float:
    """The largest difference between onnxruntime's outputs and PyTorch's over `steps` steps of random tokens."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = step.names()[0]
    generator = torch.Generator().manual_seed(0)
    state, worst = step.example(batch)[1:], 0.0
    for _ in range(steps):
        ids = torch.randint(0, step.model.vocab_size, (batch,), generator=generator)
        with torch.no_grad():
            expected = step(ids, *state)
        got = session.run(None, {name: t.numpy() for name, t in zip(names, (ids, *state))})
        worst = max(worst, *(float(abs(torch.from_numpy(g) - e).max()) for g, e in zip(got, expected)))
        state = expected[1:]
    return worst


def describe(model, step: SingleStep) -> dict:
    """model.json: what a program needs besides the graph to write text with it."""
    rnn, vocab = step.model.rnn, model.vocab
    inputs, outputs = step.names()
    state_shape = [rnn.num_layers, "batch", rnn.hidden_size]
    return {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "rnngen_version": __version__,
        "graph": GRAPH, "opset": OPSET,
        "inputs": [{"name": inputs[0], "dtype": "int64", "shape": ["batch"]}]
        + [{"name": name, "dtype": "float32", "shape": state_shape} for name in inputs[1:]],
        "outputs": [{"name": outputs[0], "dtype": "float32", "shape": ["batch", len(vocab)]}]
        + [{"name": name, "dtype": "float32", "shape": state_shape} for name in outputs[1:]],
        "scores": outputs[0],  # logits, or log_probs (adaptive softmax): softmax of either is the distribution
        "state_init": "zeros",
        "model": {k: model.model_args.get(k) for k in ("cell", "num_layers", "hidden_size", "input", "output")},
        "vocab": {"tokens": vocab.tokens, "level": vocab.level, "lowercase": vocab.lowercase, "unk_id": 0,
                  "start_id": encode_seed(vocab, None)[0]},
        "tokenizer": {**tokens.rules(vocab.level), **({"bpe": vocab.tokenizer} if vocab.tokenizer else {})},
        "sampling": model.config.to_dict()["sample"],
        "source": {"checkpoint": str(model.path), "step": model.summary.get("step")},
    }  # fmt: skip
