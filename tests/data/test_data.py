"""Sources (folder, zip, synthetic) and prepare: bad images are reported and left out, never a crash."""

import hashlib
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest

from paddy.data import synthetic
from paddy.data.competition import check_layout
from paddy.data.download import fetch_competition
from paddy.data.prepare import prepare_competition, read_labels
from paddy.data.synthetic import LABEL_COUNTS, VARIETY_COUNTS
from paddy.settings import parse_settings


@pytest.fixture
def comp(params):
    """The competition section of params.yaml: Paddy's."""
    return parse_settings(params).competition


def test_synthetic_competition_is_laid_out_like_kaggle(competition, comp):
    raw, truth = competition
    train, sample, test, classes = check_layout(raw, comp)
    assert list(train.columns) == ["image_id", "label", "variety", "age", "file"]
    assert classes == sorted(LABEL_COUNTS) and test.image_id.tolist() == sample.image_id.tolist()
    assert set(train.label) == set(LABEL_COUNTS) and set(train.variety) <= set(VARIETY_COUNTS)
    assert train.label.value_counts().idxmax() in ("normal", "blast")  # the real imbalance
    assert sample.image_id.tolist()[0] == "200001.jpg"
    assert pd.read_csv(truth).image_id.tolist() == sample.image_id.tolist()
    assert not (raw / "truth.csv").exists()  # the model never sees the answers


def _digest(root, truth):
    """sha256 over every file's path and bytes under `root`, then the truth file's bytes."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    h.update(truth.read_bytes())
    return h.hexdigest()


# What the Paddy generator wrote before the layout families (commit 4e2763f) for these settings: the default
# competition, and so the default `dvc repro`'s submission, must not change by one byte.
PADDY_BYTES = {
    "easy": "45dd32933ca415f1c1a93694033315ded794e7dfd80d4d0d1d5a38eb6cebd711",
    "hard": "fd319dafe1dd5d2da08ba6de8c9d813748c2dd5ceeb61f96a6bec1cadddb9c9a",
}


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_paddy_layout_writes_the_same_bytes_as_before_the_layouts(tmp_path, difficulty):
    from paddy.data.synthetic import make_competition

    size = dict(n_train=40, n_test=6, width=24, height=32, seed=3, difficulty=difficulty)
    make_competition(tmp_path / "c", tmp_path / "truth.csv", **size)
    assert _digest(tmp_path / "c", tmp_path / "truth.csv") == PADDY_BYTES[difficulty]
    make_competition(tmp_path / "d", tmp_path / "truth10.csv", **size, layout="paddy", classes=10)  # its own count
    assert _digest(tmp_path / "d", tmp_path / "truth10.csv") == PADDY_BYTES[difficulty]


def test_synthetic_is_deterministic(tmp_path):
    from paddy.data.synthetic import make_competition

    for name in ("a", "b"):
        make_competition(tmp_path / name, tmp_path / f"{name}.csv", n_train=12, n_test=3, width=24, height=32, seed=5)
    for f in ["train.csv", "train_images/normal/100001.jpg"]:
        if (tmp_path / "a" / f).exists():
            assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_hard_synthetic_is_deterministic_and_not_the_easy_one(tmp_path):
    from paddy.data.synthetic import make_competition

    size = dict(n_train=40, n_test=5, width=24, height=32, seed=5)
    for name, difficulty in (("a", "hard"), ("b", "hard"), ("easy", "easy")):
        make_competition(tmp_path / name, tmp_path / f"{name}.csv", **size, difficulty=difficulty)
    for f in ["train.csv", "test_images/200001.jpg"]:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (tmp_path / "a" / "test_images/200001.jpg").read_bytes() != (
        tmp_path / "easy" / "test_images/200001.jpg"
    ).read_bytes()
    # the test truth keeps the same class counts (the real imbalance) as the easy set's
    counts = [pd.read_csv(tmp_path / f"{name}.csv").label.value_counts().to_dict() for name in ("a", "easy")]
    assert counts[0] == counts[1]


@pytest.mark.parametrize("label", ["normal", "bacterial_leaf_streak", "hispa", "brown_spot", "blast", "downy_mildew"])
def test_hard_spots_and_streaks_stay_off_the_photo_margins(label):
    """Training's and TTA's random crops trim up to a quarter of the area: the spots and streaks that tell these
    diseases apart lie inside synthetic.MARGIN of every side, so a crop trims leaf, not the evidence."""
    h, w = 128, 96
    my, mx = round(synthetic.MARGIN * h), round(synthetic.MARGIN * w)
    for seed in range(8):
        leaf = np.full((h, w, 3), 100.0)
        changed = np.abs(synthetic._hard_disease(leaf.copy(), label, np.random.default_rng(seed)) - leaf).sum(2) > 0
        inside = changed[my : h - my, mx : w - mx].sum()
        assert inside > 0 or label == "normal"  # normal may have no speck at all
        assert changed.sum() == inside, f"{label}, seed {seed}: drawn on the margin"


def test_hard_synthetic_files_a_few_percent_of_training_images_under_a_wrong_label(tmp_path):
    from paddy.data.synthetic import LABEL_NOISE, make_competition

    size = dict(n_train=400, n_test=1, width=8, height=8, seed=0)
    make_competition(tmp_path / "easy", tmp_path / "e.csv", **size, difficulty="easy")
    make_competition(tmp_path / "hard", tmp_path / "h.csv", **size, difficulty="hard")
    easy, hard = (pd.read_csv(tmp_path / name / "train.csv") for name in ("easy", "hard"))
    # same class counts drawn; only the filed label differs, on about LABEL_NOISE of the rows
    wrong = (easy.label != hard.label).mean()
    assert 0 < wrong < 3 * LABEL_NOISE
    assert all((tmp_path / "hard" / "train_images" / lab / i).exists() for lab, i in zip(hard.label, hard.image_id))


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_folder_and_zip_sources(competition, tmp_path, kind, source_settings, comp):
    raw, _ = competition
    source = raw
    if kind == "zip":
        source = tmp_path / "paddy.zip"
        with zipfile.ZipFile(source, "w") as zf:
            for p in raw.rglob("*"):
                zf.write(p, "paddy/" + str(p.relative_to(raw)))  # wrapped in one top folder, as hand-made zips are
    out = tmp_path / "out"
    train, _, _, _ = fetch_competition(source_settings(source), comp, out / "raw", out / "truth.csv")
    assert len(train) == 60
    assert pd.read_csv(tmp_path / "out" / "truth.csv").empty  # no known test labels


def test_prepare_reports_bad_images(competition, tmp_path, comp):
    raw, _ = competition
    shutil.copytree(raw, tmp_path / "raw")
    train = pd.read_csv(tmp_path / "raw" / "train.csv")
    files = [tmp_path / "raw" / "train_images" / lab / i for lab, i in zip(train.label, train.image_id)]
    files[0].write_bytes(b"")  # zero bytes
    files[1].write_bytes(files[1].read_bytes()[:200])  # truncated
    files[2].write_text("not a jpeg")  # unreadable
    files[3].unlink()  # listed but missing
    index, bad = prepare_competition(tmp_path / "raw", tmp_path / "prep", comp, max_size=40, workers=1)
    assert sorted(bad.image_id) == sorted(f.name for f in files[:4])
    assert {"zero bytes", "not an image PIL can read"} <= set(bad.reason)
    assert any(r.startswith("unreadable") for r in bad.reason) and any(r.startswith("missing") for r in bad.reason)
    ok = index[index.split == "train"]
    assert len(ok) == 56 and ok.ok.all()
    assert (index[["width", "height"]].max() <= 40).all().all()
    assert read_labels(tmp_path / "prep") == sorted(LABEL_COUNTS)
    assert (tmp_path / "prep" / "images" / "test" / "200001.jpg").exists()
