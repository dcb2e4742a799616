"""The pipeline's pictures, as PNG files that `dvc plots show` embeds as they are: they render without a network,
unlike DVC's vega charts, whose library the page loads from a CDN. Drawn on matplotlib's Figure, without pyplot: no
display and no global state."""

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from paddy.files import atomic_path


def save(fig, path):
    """Write the figure as a PNG file (atomically) and return it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return fig


def learning_curves(history, path, title):
    """history: {split: [each epoch's metrics]}. Train and valid loss (and the competition's valid_log_loss), and
    each target's valid accuracy and the competition's other metric (valid_<metric>), per epoch; one colour per
    split (fold or bag). An epoch without a metric (ROC AUC over one class) leaves a gap."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    low = 0.0
    for split, epochs in sorted(history.items()):
        x = np.arange(1, len(epochs) + 1)
        color, name = f"C{split % 10}", f"split {split}"
        loss_ax.plot(x, [m["train_loss"] for m in epochs], color=color, label=f"{name} train")
        loss_ax.plot(x, [m["valid_loss"] for m in epochs], "--", color=color, label=f"{name} valid")
        if any("valid_log_loss" in m for m in epochs):
            loss_ax.plot(
                x, [m.get("valid_log_loss", np.nan) for m in epochs], ":", color=color, label=f"{name} valid_log_loss"
            )
        keys = sorted(
            {k for m in epochs for k in m if k.startswith("valid_") and k not in ("valid_loss", "valid_log_loss")}
        )
        for key, style in zip(keys, ("-", ":", "-.", "--")):
            values = [m.get(key, np.nan) for m in epochs]
            low = min(low, np.nanmin(values))  # quadratic weighted kappa goes below 0
            acc_ax.plot(x, values, style, color=color, label=f"{name} {key}")
    loss_ax.set(title=f"{title}: loss", xlabel="epoch", ylabel="loss")
    acc_ax.set(
        title=f"{title}: validation",
        xlabel="epoch",
        ylabel="accuracy, metric",
        ylim=(low - 0.02 if low < 0 else 0, 1.02),
    )
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return save(fig, path)


def memory(rows, limit_gb, path, title):
    """Peak memory per batch size beside the limit it must fit: rows are paddy.memory.display.plot_rows (bar, peak_gb,
    fits; the last one the limit itself)."""
    bars = [r for r in rows if not r["bar"].endswith(" limit")]
    fig = Figure(figsize=(8, 0.4 * len(bars) + 1.5), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(bars))[::-1]
    ax.barh(y, [r["peak_gb"] for r in bars], color=["C2" if r["fits"] else "C3" for r in bars])
    ax.axvline(limit_gb, color="k", linestyle="--", label=f"limit {limit_gb:.1f} GB")
    ax.set_yticks(y, [r["bar"] for r in bars])
    ax.set(title=title, xlabel="peak GB (green fits, red does not)")
    ax.legend(loc="lower right")
    return save(fig, path)
