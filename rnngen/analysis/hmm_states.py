"""`rnngen states`: the hidden states of an HMM checkpoint, the labels the theory talks about.

The Viterbi path gives every token of a text its state: the single most likely whole path, which
is not the same as the most likely state of each token on its own. Each state's emission
distribution says which tokens it stands for; trained on words, states tend to gather word
classes (names, verbs, punctuation before a line break). The report also puts the Viterbi path's
probability next to the text's (the sum over all K^T paths): the share of the probability that
one labelling carries.
"""

from __future__ import annotations

import math
from collections import Counter

import torch

from rnngen.api import Model
from rnngen.errors import UserError


@torch.no_grad()
def states_report(model: Model, text: str | None, top: int, on_unknown: str = "error") -> dict:
    """The Viterbi state of every token of `text` and the most likely tokens of the states it uses (or of
    every state when text is None), as plain data for --json and for `render`."""
    if model.model_args.get("cell") != "hmm":
        raise UserError(
            f"{model.path} is a {model.model_args.get('cell')} model; `rnngen states` reads the hidden states of an "
            "HMM (model.cell: hmm), e.g. `rnngen train --set model.cell=hmm`"
        )
    module = model.module
    report = {"checkpoint": str(model.path), "level": model.vocab.level, "states": module.hmm_states}
    counts = None
    if text is not None:
        ids = _encode(model, text, on_unknown)
        token_ids = torch.tensor(ids, device=model.device)
        path, path_logprob = module.viterbi(token_ids)
        text_logprob = float(module.log_likelihood(token_ids[None])[0])
        report.update(
            tokens=[{"token": model.vocab.tokens[i], "state": s} for i, s in zip(ids, path)],
            text_logprob=text_logprob,
            path_logprob=path_logprob,
            path_share=math.exp(path_logprob - text_logprob),
        )
        counts = Counter(path)
    order = [s for s, _ in counts.most_common()] if counts else range(module.hmm_states)
    emission = module.tables().emission  # (V, K)
    best = torch.topk(emission, min(top, emission.size(0)), dim=0)  # (top, K) each
    report["by_state"] = [
        {
            "state": state,
            "count": counts[state] if counts else None,
            "top": [
                {"token": model.vocab.tokens[int(i)], "p": float(p)}
                for p, i in zip(best.values[:, state], best.indices[:, state])
            ],
        }
        for state in order
    ]
    return report


def _encode(model: Model, text: str, on_unknown: str) -> list[int]:
    """Token ids of the text; unknown tokens are an error, or <unk> with on_unknown "unk"."""
    vocab = model.vocab
    pieces = vocab.split(text)
    if not pieces:
        raise UserError(f"the text has no tokens at {vocab.level} level; give some text with --text or --data")
    unknown = vocab.unknown(pieces)
    if unknown and on_unknown == "error":
        shown = ", ".join(repr(t) for t in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        raise UserError(
            f"{len(unknown)} token(s) of the text are not in the model's vocabulary: {shown}. "
            "Pass --on-unknown unk to read them as <unk> (which the model has a probability for), or change the text"
        )
    return vocab.encode(pieces)


def render(report: dict) -> str:
    """The report as text: a summary line, each token with its state, then each state's most likely tokens."""
    lines = [f"{report['checkpoint']}: hmm with {report['states']:,} states ({report['level']} level)"]
    if "tokens" in report:
        count = len(report["tokens"])
        lines.append(
            f"text: {count:,} tokens; log p(text) = {report['text_logprob']:.2f} nats over all "
            f"{report['states']:,}^{count:,} state paths; the Viterbi path below has {report['path_logprob']:.2f} "
            f"({report['path_share']:.2%} of the text's probability)"
        )
        width = max(len(repr(t["token"])) for t in report["tokens"])
        lines += ["", f"{'token':<{width}}  state"]
        lines += [f"{t['token']!r:<{width}}  {t['state']}" for t in report["tokens"]]
    lines += [
        "",
        "state  tokens  most likely tokens (probability)" if "tokens" in report else "state  most likely tokens",
    ]
    for row in report["by_state"]:
        shown = ", ".join(f"{t['token']!r} {t['p']:.3f}" for t in row["top"])
        lines.append(
            f"{row['state']:>5}  {row['count']:>6}  {shown}"
            if row["count"] is not None
            else f"{row['state']:>5}  {shown}"
        )
    return "\n".join(lines) + "\n"
