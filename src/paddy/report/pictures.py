"""The report's pictures, PNG files as paddy.charts draws them (a matplotlib Figure, no pyplot, written
atomically): grids of images with what the models said about each, the row-normalised confusion matrix, the most
confused pairs and the reliability diagram. Readable labels first: one image per cell, its lines in a fixed-width
font under it."""

import numpy as np
from matplotlib.figure import Figure

from paddy.charts import save
from paddy.data.images import BadImage, read_image
from paddy.errors import PaddyError
from paddy.report.analysis import row_normalised

CELL = (3.8, 4.8)  # inches per image cell: up to seven lines of text, then the image
RIGHT, WRONG = "#1a7f37", "#c62828"


def thumbnail(path, size=320):
    """The image at `path` as an RGB array, its longest side at most `size` pixels."""
    try:
        im = read_image(path)
    except BadImage as e:  # prepare wrote and checked it: the file was damaged since
        raise PaddyError(f"{path} is {e}: run `dvc repro -f prepare` to write the prepared images again.") from None
    im.thumbnail((size, size))
    return np.asarray(im)


def _draw_cell(ax, image, lines, right):
    """right: True (a green frame), False (red) or None (unknown: black)."""
    color = {True: RIGHT, False: WRONG}.get(right, "black")
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set(color=color, linewidth=3)
    ax.set_title("\n".join(lines), fontsize=10, family="monospace", loc="left", color=color)


def image_grid(cells, path, title, columns=4):
    """cells: (image array, text lines, right) each; one figure, `columns` images a row, a frame green when the
    prediction is right, red when wrong, black when unknown."""
    rows = max(1, -(-len(cells) // columns))
    cols = min(columns, max(1, len(cells)))
    fig = Figure(figsize=(CELL[0] * cols, CELL[1] * rows + 0.6), layout="constrained")
    fig.suptitle(title, fontsize=13)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (image, lines, right) in zip(axes, cells):
        _draw_cell(ax, image, lines, right)
    for ax in axes[len(cells) :]:
        ax.axis("off")
    return save(fig, path)


def image_card(image, lines, right, path):
    """One image and its lines: the grid's cell on its own, for `dvc plots show` to list image by image."""
    fig = Figure(figsize=CELL, layout="constrained")
    _draw_cell(fig.subplots(), image, lines, right)
    return save(fig, path)


def statement(text, path, size=(8, 1.6)):
    """A picture that says why there is nothing to draw (no images asked for, no mistakes): the plot is declared
    in dvc.yaml, so it exists either way, and says so in words."""
    fig = Figure(figsize=size)
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, wrap=True)
    return save(fig, path)


def confusion_normalised(counts, totals, labels, path, title):
    """Each actual class's row as fractions of its images (`totals`; the count below each share), actual down the
    side: a rare class's misses show as clearly as a common one's."""
    share = row_normalised(counts, totals)
    fig = Figure(figsize=(10, 8.5), layout="constrained")
    ax = fig.subplots()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(counts):
        if n:
            color = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, f"{share[i, j]:.2f}\n({n})", ha="center", va="center", fontsize=8, color=color)
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, [f"{label} ({t})" for label, t in zip(labels, totals)])
    ax.set(title=title, xlabel="predicted", ylabel="actual (images)")
    return save(fig, path)


def most_confused(pairs, path, title):
    """pairs: (actual, predicted, count) rows, most frequent first, as horizontal bars."""
    if pairs.empty:
        return statement(f"{title}\n\nNo out-of-fold image is misclassified: no pair to show.", path)
    fig = Figure(figsize=(9, 0.35 * len(pairs) + 1.4), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(pairs))[::-1]
    ax.barh(y, pairs["count"], color="C3")
    ax.set_yticks(y, [f"{a} -> {p}" for a, p in zip(pairs["actual"], pairs["predicted"])])
    for yi, n in zip(y, pairs["count"]):
        ax.text(n, yi, f" {n}", va="center")
    ax.set(title=title, xlabel="out-of-fold images (actual -> predicted)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    return save(fig, path)


def reliability(tables, path, title):
    """tables: {name: calibration table (lo, hi, count, confidence, accuracy)}, the ensemble's first: its accuracy
    per confidence bin as bars against the diagonal (perfect calibration), every model's as a line, and the
    ensemble's rows per bin below."""
    fig = Figure(figsize=(8, 7.5), layout="constrained")
    ax, hist = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    (first, table), *others = tables.items()
    mid, width = (table["lo"] + table["hi"]) / 2, table["hi"] - table["lo"]
    ax.bar(mid, table["accuracy"].fillna(0), width=width, edgecolor="k", alpha=0.6, label=f"{first} accuracy")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    for i, (name, other) in enumerate(others):
        used = other[other["count"] > 0]
        ax.plot(used["confidence"], used["accuracy"], "o-", color=f"C{i + 1}", label=name)
    ax.set(title=title, ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    hist.bar(mid, table["count"], width=width, edgecolor="k", color="C0", alpha=0.6)
    hist.set(xlabel="confidence (top probability)", ylabel=f"{first} images")
    hist.set_yscale("symlog")
    return save(fig, path)


TAG_COLUMNS = ("found", "missed", "added", "left_out")  # tag_analysis.tag_confusion's, as the picture orders them
TAG_HEADS = ("found", "missed", "added", "left out")


def tag_confusion(shares, counts, path, title):
    """A multi-label competition's confusion: one row per tag (its images with the tag in brackets), its images with
    the tag found or missed and those without it added or rightly left out, as shares (tag_analysis.confusion_shares)
    with the counts below."""
    share, count = shares[list(TAG_COLUMNS)].to_numpy(), counts[list(TAG_COLUMNS)].to_numpy()
    fig = Figure(figsize=(9, 0.4 * len(shares) + 2.2), layout="constrained")
    ax = fig.subplots()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for (i, j), n in np.ndenumerate(count):
        if n:
            color = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, f"{share[i, j]:.2f} ({n})", ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(np.arange(4), TAG_HEADS)
    ax.set_yticks(np.arange(len(shares)), [f"{t} ({n})" for t, n in zip(counts["tag"], counts["images"])])
    ax.xaxis.tick_top()
    ax.set(xlabel="of the images with the tag | of the images without it", ylabel="tag (images with it)")
    ax.set_title(title, fontsize=11)
    return save(fig, path)


def missed_and_added(table, path, title):
    """table: (tag, missed, added) rows, most mistakes first, as pairs of horizontal bars."""
    if table.empty:
        return statement(f"{title}\n\nNo out-of-fold tag is missed or added: nothing to show.", path)
    fig = Figure(figsize=(9, 0.5 * len(table) + 1.6), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(table))[::-1]
    for shift, column, color in ((0.2, "missed", WRONG), (-0.2, "added", "C1")):
        ax.barh(y + shift, table[column], height=0.4, color=color, label=f"{column} (images)")
        for yi, n in zip(y + shift, table[column]):
            ax.text(n, yi, f" {n}", va="center", fontsize=8)
    ax.set_yticks(y, table["tag"])
    ax.set(title=title, xlabel="out-of-fold images: missed (had the tag, not given it), added (given it, had not)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="lower right")
    return save(fig, path)


def _reliability_panel(ax, table, label):
    mid, width = (table["lo"] + table["hi"]) / 2, table["hi"] - table["lo"]
    ax.bar(mid, table["frequency"].fillna(0), width=width, edgecolor="k", alpha=0.6, label=label)
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)


def tag_reliability(pooled, per_tag, path, title, columns=4):
    """A multi-label competition's reliability: first every (image, tag) pair pooled (pooled: {source: calibration
    table (lo, hi, count, confidence, frequency)}, the ensemble's as bars, every model's as a line), then one panel
    per tag of the ensemble's (per_tag: {tag: (table, ECE)}): the share of each probability bin's images that have
    the tag against the diagonal."""
    panels = 1 + len(per_tag)
    rows, cols = -(-panels // columns), min(columns, panels)
    fig = Figure(figsize=(3.6 * cols, 3.4 * rows + 0.6), layout="constrained")
    fig.suptitle(title, fontsize=12)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    (first, table), *others = pooled.items()
    _reliability_panel(axes[0], table, first)
    for i, (name, other) in enumerate(others):
        used = other[other["count"] > 0]
        axes[0].plot(used["confidence"], used["frequency"], "o-", color=f"C{i + 1}", label=name)
    axes[0].set(title="every tag, pooled", xlabel="probability", ylabel="share with the tag")
    axes[0].legend(loc="upper left", fontsize=8)
    for ax, (tag, (table, ece)) in zip(axes[1:], per_tag.items()):
        _reliability_panel(ax, table, first)
        ax.set_title(f"{tag}: ECE {ece:.3f}", fontsize=10)
    for ax in axes[panels:]:
        ax.axis("off")
    return save(fig, path)
