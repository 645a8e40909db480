"""Pictures: training curves of one or more runs, and gradient norm against distance back in time.

matplotlib is an optional extra (`pip install 'rnngen[plot]'`). Figures are drawn with the Agg
canvas directly, never through pyplot, so no window opens and no global backend is switched.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from rnngen import config as config_module
from rnngen import console
from rnngen.config import load_yaml_file
from rnngen.errors import DataError, UserError
from rnngen.fileio import write_bytes
from rnngen.metrics import read_metrics

INSTALL_HINT = "pip install 'rnngen[plot]'"
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
DPI = 100


def require_matplotlib() -> None:
    """Fail early, with the install command, when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError(f"plotting needs matplotlib, which is not installed; install it with: {INSTALL_HINT}") from None


def _figure(width: float, height: float):
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def picture_format(path: str | Path) -> str:
    """The image format a file name asks for (png, svg or pdf); anything else is refused."""
    image_format = FORMATS.get(Path(path).suffix.lower())
    if image_format is None:
        raise UserError(f"cannot write a picture to {path}: give a file name ending in .png, .svg or .pdf")
    return image_format


def save_figure(figure, path: str | Path) -> Path:
    """Render to memory, then write atomically."""
    path = Path(path)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=picture_format(path), dpi=DPI)
    write_bytes(path, buffer.getvalue())
    return path


# --------------------------------------------------------------------------- training curves


@dataclass
class RunCurves:
    """The columns of a run's metrics.csv that the plot needs; None where a row has no value."""

    name: str
    step: list[float] = field(default_factory=list)
    minutes: list[float] = field(default_factory=list)
    train_loss: list[float | None] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    grad_norm: list[float | None] = field(default_factory=list)
    grad_clip: float | None = None


def read_run(run_dir: str | Path, name: str) -> RunCurves:
    """Read RUN_DIR/metrics.csv (and grad_clip from RUN_DIR/config.yaml, when present)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise DataError(f"run directory {run_dir} does not exist; give a directory that `rnngen train` wrote")
    metrics = run_dir / "metrics.csv" if run_dir.is_dir() else run_dir  # a metrics.csv itself is fine too
    if not metrics.is_file():
        raise DataError(f"{run_dir} holds no metrics.csv yet; plot a run once training has logged a step")
    rows, damaged = read_metrics(metrics)
    if damaged and rows:
        console.warn(f"{metrics} is damaged: left out {damaged} broken row(s), plotting the {len(rows)} whole ones")
    if not rows:
        raise DataError(
            f"{metrics} has no whole rows: it is empty, damaged or is not an rnngen metrics file; "
            "give a run directory, or plot again once training has logged a step"
        )
    curves = RunCurves(name)
    for row in rows:
        curves.step.append(float(row["step"]))
        curves.minutes.append(float(row["elapsed_s"]) / 60)
        curves.train_loss.append(_number(row["train_loss"]))
        curves.val_loss.append(_number(row["val_loss"]))
        curves.grad_norm.append(_number(row["grad_norm"]))
    curves.grad_clip = _grad_clip(metrics.parent / "config.yaml")
    return curves


def _number(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def _grad_clip(config_path: Path) -> float | None:
    """train.grad_clip of the run's saved config; None (no clip line) when clipping is off or there is no config."""
    if not config_path.is_file():
        return None
    try:
        clip = config_module.from_dict(load_yaml_file(config_path), origin=str(config_path)).train.grad_clip
    except UserError as e:
        console.warn(f"{e}; the plot leaves out its clip line")
        return None
    return clip


def run_names(run_dirs: list[str]) -> list[str]:
    """Each run's directory name, or its whole path where two names would clash."""
    names = [Path(d).resolve().name if Path(d).is_dir() else Path(d).resolve().parent.name for d in run_dirs]
    return [name if names.count(name) == 1 else str(d) for name, d in zip(names, run_dirs)]


def plot_training(runs: list[RunCurves], path: str | Path, x_axis: str = "step") -> Path:
    """Loss (train solid, validation dashed) over steps or minutes, and the gradient norm below it."""
    figure = _figure(8, 6.5)
    loss_axes, grad_axes = figure.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    for index, run in enumerate(runs):
        color = f"C{index}"
        xs = run.step if x_axis == "step" else run.minutes
        loss_axes.plot(*_present(xs, run.train_loss), color=color, label=f"{run.name} train")
        loss_axes.plot(
            *_present(xs, run.val_loss),
            color=color,
            linestyle="--",
            marker="o",
            markersize=3,
            label=f"{run.name} validation",
        )
        grad_axes.plot(*_present(xs, run.grad_norm), color=color, label=run.name)
        if run.grad_clip is not None:
            grad_axes.axhline(run.grad_clip, color=color, linestyle=":", linewidth=1)
    loss_axes.set_ylabel("loss (nats per token)")
    loss_axes.set_title("training and validation loss")
    loss_axes.legend(fontsize="small", ncols=2 if len(runs) > 2 else 1)
    loss_axes.grid(alpha=0.3)
    grad_axes.set_yscale("log")
    grad_axes.set_ylabel("gradient norm")
    grad_axes.set_title("gradient norm before clipping (dotted: train.grad_clip)", fontsize="medium")
    grad_axes.set_xlabel("step" if x_axis == "step" else "training time (minutes)")
    grad_axes.grid(alpha=0.3, which="both")
    return save_figure(figure, path)


def _present(xs: list[float], ys: list[float | None]) -> tuple[list[float], list[float]]:
    """The points where y has a value (validation loss is only logged at evaluations)."""
    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
    return [x for x, _ in pairs], [y for _, y in pairs]


# --------------------------------------------------------------------------- gradients through time


def plot_gradient_profiles(profiles: list, path: str | Path) -> Path:
    """||d loss_T / d h_t|| against distance back in time (log scale); one line per model and layer.

    `profiles` are rnngen.analysis.diagnose.GradientProfile; initial weights are drawn dashed in the
    colour of the trained model they come from.
    """
    figure = _figure(8, 4.8)
    axes = figure.subplots()
    colors: dict[str, str] = {}
    for profile in profiles:
        color = colors.setdefault(profile.checkpoint, f"C{len(colors)}")
        style = "--" if profile.weights == "initial" else "-"
        for layer, norms in enumerate(profile.norms):
            label = profile.label + (f" layer {layer + 1}" if profile.num_layers > 1 else "")
            alpha = 1.0 if layer == profile.num_layers - 1 else 0.55  # lower layers lighter
            axes.plot(
                range(len(norms)),
                [max(n, 1e-30) for n in norms],
                color=color,
                linestyle=style,
                alpha=alpha,
                label=label,
            )
    axes.set_yscale("log")
    axes.set_xlabel("distance back in time (steps before the scored prediction)")
    axes.set_ylabel("gradient norm  ||d loss / d h_t||")
    axes.set_title("how far back the training signal reaches")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize="small")
    return save_figure(figure, path)
