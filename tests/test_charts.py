"""The pipeline's pictures: PNG files `dvc plots show` embeds as they are (no chart library from a CDN)."""

import numpy as np

from paddy import charts

PNG = b"\x89PNG\r\n\x1a\n"


def test_learning_curves_draw_each_split_and_target(tmp_path):
    epoch = {"train_loss": 1.0, "valid_loss": 0.9, "valid_acc": 0.5, "valid_acc_variety": 0.4, "epoch_time_s": 2.0}
    history = {s: [dict(epoch, train_loss=1.0 / (e + 1)) for e in range(3)] for s in range(2)}
    fig = charts.learning_curves(history, tmp_path / "curves.png", "vit")
    loss_ax, acc_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == [
        "split 0 train", "split 0 valid", "split 1 train", "split 1 valid"
    ]  # fmt: skip
    assert [line.get_label() for line in acc_ax.lines] == [
        "split 0 valid_acc", "split 0 valid_acc_variety", "split 1 valid_acc", "split 1 valid_acc_variety"
    ]  # fmt: skip
    assert list(loss_ax.lines[0].get_ydata()) == [1.0, 0.5, 1.0 / 3]
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG)


def test_learning_curves_draw_the_competitions_metric_where_it_belongs(tmp_path):
    """valid_<metric> beside the accuracy (quadratic kappa below 0 still in view), a log loss beside the losses; an
    epoch without it (ROC AUC over one class) is a gap."""
    epochs = [
        {"train_loss": 1.0, "valid_loss": 0.9, "valid_acc": 0.5, "valid_qwk": -0.3, "valid_log_loss": 0.95},
        {"train_loss": 0.8, "valid_loss": 0.7, "valid_acc": 0.6, "valid_log_loss": 0.75},
    ]
    loss_ax, acc_ax = charts.learning_curves({0: epochs}, tmp_path / "curves.png", "vit").axes
    assert [line.get_label() for line in loss_ax.lines] == ["split 0 train", "split 0 valid", "split 0 valid_log_loss"]
    assert [line.get_label() for line in acc_ax.lines] == ["split 0 valid_acc", "split 0 valid_qwk"]
    qwk = acc_ax.lines[1].get_ydata()
    assert qwk[0] == -0.3 and np.isnan(qwk[1]) and acc_ax.get_ylim()[0] < -0.3


def test_memory_bars_against_the_limit(tmp_path):
    rows = [
        {"bar": "vit x64 (chosen)", "peak_gb": 10.0, "fits": True},
        {"bar": "vit x128", "peak_gb": 21.6, "fits": False},
        {"bar": "vit limit", "peak_gb": 14.4, "fits": True},
    ]
    fig = charts.memory(rows, 14.4, tmp_path / "memory.png", "vit")
    (ax,) = fig.axes
    place = {t.get_text(): y for t, y in zip(ax.get_yticklabels(), ax.get_yticks())}
    assert place["vit x64 (chosen)"] > place["vit x128"] and len(place) == 2  # top down, as listed
    assert sorted(p.get_width() for p in ax.patches) == [10.0, 21.6]  # the limit is a line, not a bar
    assert list(ax.lines[0].get_xdata()) == [14.4, 14.4]
    assert (tmp_path / "memory.png").read_bytes().startswith(PNG)
