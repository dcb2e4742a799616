"""The generated competition in every layout family: each Kaggle competition's files, headers and names, held
against its own description by check_layout, reproducible, and scaling to many classes."""

import hashlib
import zipfile

import pandas as pd
import pytest

from paddy.data import synthetic
from paddy.data.competition import check_layout
from paddy.data.listing import Listing
from paddy.errors import PaddyError
from paddy.settings.schema import LAYOUTS, CompetitionSettings

TINY = dict(n_train=150, n_test=8, width=16, height=16, seed=1)


def settings(section):
    """A description dict as the CompetitionSettings parse_settings makes of it."""
    column = section["label_column"]
    return CompetitionSettings(**dict(section, label_column=tuple(column) if isinstance(column, list) else column))


def generate(tmp_path, layout, **kwargs):
    root, truth = tmp_path / layout, tmp_path / f"{layout}.truth.csv"
    synthetic.make_competition(root, truth, **dict(TINY, layout=layout) | kwargs)
    return root, pd.read_csv(truth, dtype=str, keep_default_na=False)


def header(path):
    return path.read_text().split("\n", 1)[0]


def test_every_layout_family_is_generated():
    assert tuple(synthetic.FAMILIES) == LAYOUTS


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_each_layout_passes_check_layout_against_its_description(tmp_path, layout, difficulty):
    root, truth = generate(tmp_path, layout, difficulty=difficulty)
    section = synthetic.description(layout)
    train, sample, test, classes = check_layout(root, settings(section))
    assert len(train) == TINY["n_train"] and len(test) == TINY["n_test"]
    assert classes == sorted(classes, key=int) if layout in ("cassava", "aptos", "cactus") else sorted(classes)
    assert len(classes) == len(synthetic.FAMILIES[layout].counts)
    # the truth: the sample's ids exactly as written, each image's class as the pipeline names it
    assert list(truth.columns) == ["image_id", "label"]
    assert truth.image_id.tolist() == sample.iloc[:, 0].tolist()
    truths = set(truth.label.str.split().sum()) if section["form"] == "tags" else set(truth.label)  # planet: tags
    assert truths <= set(classes)
    # the generated train table's other columns are what columns() says (the extra targets)
    assert [c for c in train.columns if c not in ("image_id", "label", "file")] == list(synthetic.columns(layout))


def test_files_and_headers_are_the_kaggle_competitions(tmp_path):
    root, truth = generate(tmp_path, "cassava")
    assert header(root / "train.csv") == "image_id,label" and header(root / "sample_submission.csv") == "image_id,label"
    train = pd.read_csv(root / "train.csv", dtype=str)
    assert train.image_id.str.fullmatch(r"\d{9,10}\.jpg").all() and set(train.label) == set("01234")
    assert (root / "train_images" / train.image_id[0]).is_file()  # flat
    assert set(pd.read_csv(root / "sample_submission.csv", dtype=str).label) == {"4"}

    root, truth = generate(tmp_path, "dog_breed")
    assert header(root / "labels.csv") == "id,breed"
    labels = pd.read_csv(root / "labels.csv", dtype=str)
    assert labels.id.str.fullmatch(r"[0-9a-f]{32}").all()  # no suffix
    assert (root / "train" / f"{labels.id[0]}.jpg").is_file()
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str)
    breeds = list(sample.columns[1:])
    assert sample.columns[0] == "id" and len(breeds) == 120 and breeds == sorted(breeds) == synthetic.DOG_BREEDS
    assert (sample[breeds].astype(float) == 1 / 120).all().all()
    assert (root / "test" / f"{sample.id[0]}.jpg").is_file()

    root, truth = generate(tmp_path, "dogs_vs_cats")
    assert not list(root.glob("*.csv"))[1:]  # the sample only: no label table
    names = sorted(p.name for p in (root / "train").iterdir())
    assert {"cat.0.jpg", "dog.0.jpg"} <= set(names) and all(n.split(".")[0] in ("cat", "dog") for n in names)
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str)
    assert header(root / "sample_submission.csv") == "id,label" and set(sample.label) == {"0.5"}
    assert sample.id.tolist() == [str(i) for i in range(1, TINY["n_test"] + 1)]
    assert (root / "test" / "1.jpg").is_file() and set(truth.label) <= {"cat", "dog"}

    root, truth = generate(tmp_path, "plant_seedlings")
    species = sorted(p.name for p in (root / "train").iterdir())
    assert species == sorted(synthetic.SEEDLING_COUNTS) and "Sugar beet" in species and "Black-grass" in species
    assert all(f.suffix == ".png" for f in (root / "train" / "Maize").iterdir())
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str)
    assert header(root / "sample_submission.csv") == "file,species" and set(sample.species) == {"Sugar beet"}
    assert sample.file.str.endswith(".png").all() and (root / "test" / sample.file[0]).is_file()

    root, truth = generate(tmp_path, "cactus")
    assert sorted(p.name for p in root.iterdir()) == ["sample_submission.csv", "test.zip", "train.csv", "train.zip"]
    train = pd.read_csv(root / "train.csv", dtype=str)
    assert header(root / "train.csv") == "id,has_cactus" and set(train.has_cactus) == {"0", "1"}
    with zipfile.ZipFile(root / "train.zip") as zf:
        assert sorted(zf.namelist()) == sorted(train.id)  # flat inside, ids with their .jpg
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str)
    assert header(root / "sample_submission.csv") == "id,has_cactus" and set(sample.has_cactus) == {"0.5"}
    assert {f"test/{i}" for i in sample.id} <= Listing.of(root).files  # what download's expand_archives makes

    root, truth = generate(tmp_path, "aptos")
    assert header(root / "train.csv") == "id_code,diagnosis" and header(root / "test.csv") == "id_code"
    train = pd.read_csv(root / "train.csv", dtype=str)
    assert (root / "train_images" / f"{train.id_code[0]}.png").is_file() and not train.id_code[0].endswith(".png")
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str)
    assert header(root / "sample_submission.csv") == "id_code,diagnosis" and set(sample.diagnosis) == {"0"}

    root, truth = generate(tmp_path, "plant_pathology")
    columns = "image_id,healthy,multiple_diseases,rust,scab"
    assert header(root / "train.csv") == columns == header(root / "sample_submission.csv")
    train = pd.read_csv(root / "train.csv")
    assert (train.iloc[:, 1:].sum(axis=1) == 1).all()  # one-hot
    names = {p.name for p in (root / "images").iterdir()}
    assert (
        "Train_0.jpg" in names
        and "Test_0.jpg" in names
        and [p.name for p in root.iterdir() if p.is_dir()] == ["images"]
    )
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str)
    assert (sample.iloc[:, 1:] == "0.25").all().all() and set(truth.label) <= set(synthetic.PATHOLOGY_COUNTS)


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("layout", ["cactus", "dogs_vs_cats", "plant_pathology", "planet"])
def test_layouts_are_deterministic(tmp_path, layout):
    size = dict(n_train=30, n_test=4, width=16, height=16, layout=layout, difficulty="hard")
    for name, seed in (("a", 2), ("b", 2), ("c", 3)):
        synthetic.make_competition(tmp_path / name, tmp_path / f"{name}.csv", seed=seed, **size)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


@pytest.mark.parametrize(
    ("layout", "classes", "expected"),
    [
        ("cassava", 7, [str(k) for k in range(7)]),
        ("aptos", 3, ["0", "1", "2"]),
        ("plant_seedlings", 14, [*synthetic.SEEDLING_COUNTS, "Black-grass 1", "Charlock 1"]),
        ("plant_pathology", 6, [*synthetic.PATHOLOGY_COUNTS, "healthy_1", "multiple_diseases_1"]),
        ("paddy", 3, ["bacterial_leaf_blight", "bacterial_leaf_streak", "bacterial_panicle_blight"]),
        ("planet", 3, ["primary", "clear", "agriculture"]),
        ("planet", 19, [*synthetic.PLANET_COUNTS, "primary_1", "clear_1"]),
    ],
)
def test_classes_are_named_in_the_layouts_scheme(tmp_path, layout, classes, expected):
    assert synthetic.class_names(layout, classes) == expected
    root, truth = generate(tmp_path, layout, classes=classes, n_train=60)
    section = synthetic.description(layout, classes)
    _, _, _, found = check_layout(root, settings(section))
    assert sorted(found) == sorted(expected)
    if layout == "plant_pathology":
        assert section["label_column"] == expected and header(root / "train.csv") == ",".join(["image_id", *expected])


@pytest.mark.parametrize("layout", ["dogs_vs_cats", "cactus"])
def test_binary_layouts_refuse_other_class_counts(layout):
    with pytest.raises(PaddyError, match=r"`data.synthetic.classes` is 3.*set it to 0 or 2"):
        synthetic.description(layout, 3)
    assert synthetic.description(layout, 2) == synthetic.description(layout, 0)


def test_a_layout_that_sends_every_class_needs_a_training_image_of_each(tmp_path):
    with pytest.raises(PaddyError, match=r"`data.synthetic.n_train` is 50, fewer than the 120 classes"):
        synthetic.make_competition(tmp_path / "c", tmp_path / "t.csv", n_train=50, layout="dog_breed")


@pytest.mark.parametrize(
    ("layout", "difficulty"), [("cassava", "hard"), ("dog_breed", "hard"), ("plant_seedlings", "easy")]
)
def test_many_classes_each_get_a_training_image(tmp_path, layout, difficulty):
    """As many training images as classes: every class gets one, even where hard mode files 4% under another."""
    classes = 1500
    root, truth = generate(
        tmp_path, layout, classes=classes, n_train=classes, n_test=20, width=8, height=8, difficulty=difficulty
    )
    train, sample, _, found = check_layout(root, settings(synthetic.description(layout, classes)))
    assert len(found) == classes and train.label.value_counts().max() == 1
    assert len(sample.columns) == (classes + 1 if layout == "dog_breed" else 2)


def test_spread_is_proportional_and_gives_each_class_one():
    import numpy as np

    rng = np.random.default_rng(0)
    counts = synthetic._spread(1000, [1, 1, 8], rng)
    assert sum(counts) == 1000 and counts[2] > 700 and min(counts) >= 1
    assert sum(synthetic._spread(5, [1] * 10_000, rng)) == 5  # fewer images than classes: five classes, one each
    assert synthetic._spread(10_000, [1] * 10_000, rng) == [1] * 10_000


# ---------------------------------------------------------------------------------------------------------------
# planet: the multi-label layout


def test_planet_files_and_headers_are_the_kaggle_competitions(tmp_path):
    root, truth = generate(tmp_path, "planet")
    files = ["sample_submission_v2.csv", "test-jpg", "train-jpg", "train_v2.csv"]
    assert sorted(p.name for p in root.iterdir()) == files
    assert header(root / "train_v2.csv") == "image_name,tags" == header(root / "sample_submission_v2.csv")
    train = pd.read_csv(root / "train_v2.csv", dtype=str, keep_default_na=False)
    assert train.image_name.tolist()[:2] == ["train_0", "train_1"] and (root / "train-jpg" / "train_0.jpg").is_file()
    sample = pd.read_csv(root / "sample_submission_v2.csv", dtype=str)
    assert set(sample.tags) == {"primary clear agriculture road water"}  # Planet's placeholder, on every row
    assert sample.image_name.tolist()[0] == "test_0" and (root / "test-jpg" / "test_0.jpg").is_file()
    # the tags as Kaggle's table writes them: space-separated, each once, sorted; the truth the same way
    for tags in [*train.tags, *truth.label]:
        assert tags.split() == sorted(set(tags.split()))
    assert set(train.tags.str.split().sum()) == set(synthetic.PLANET_COUNTS)  # every tag has a training image


def tags_of(n, difficulty="easy", classes=0, seed=0):
    """(true training tags, filed ones, test tags) of a generated planet competition as DataFrames of 0/1 columns,
    drawn without a photo."""
    spec = synthetic.SyntheticSettings(n_train=n, n_test=n, seed=seed, difficulty=difficulty, layout="planet")
    names = synthetic.class_names("planet", classes)
    return [pd.DataFrame(m, columns=names) for m in synthetic._tag_draws(spec, names)]


def test_planet_tags_go_together_as_planets_do():
    train, filed, test = tags_of(4000)
    assert (filed == train).all().all()  # easy: every tag filed as drawn
    weather = train[list(synthetic.WEATHER)]
    assert (weather.sum(axis=1) == 1).all()  # exactly one weather tag per photo
    assert train[train.cloudy].drop(columns="cloudy").sum().sum() == 0  # cloudy hides every other tag
    share = train.mean()
    assert 0.9 < share.primary and 0.6 < share.clear < 0.8 and 0.25 < share.agriculture < 0.4
    assert share.cultivation < 0.15 and train.agriculture[train.cultivation].mean() > 0.8  # mostly with agriculture
    assert train.road[train.habitation].mean() > 0.7  # habitation is mostly by a road
    assert share.conventional_mine < 0.01 and share.blow_down < 0.01  # rare, yet each on a photo or more
    assert train.sum().min() >= 1 and test.mean().primary > 0.9


def test_planet_hard_files_a_few_tags_wrong_and_keeps_the_test_truth():
    train, filed, test = tags_of(4000, "hard")
    wrong = (filed != train).any(axis=1).mean()
    assert 0.02 < wrong < 0.06  # LABEL_NOISE of the photos, one tag each
    assert (filed.sum() >= 1).all()  # a tag's last photo keeps it
    assert (test == tags_of(4000, "easy")[2]).all().all()  # the truth does not depend on the difficulty


def test_planet_every_tag_gets_a_training_image_even_among_few():
    train, _, _ = tags_of(30)
    assert (train.sum() >= 1).all() and (train[list(synthetic.WEATHER)].sum(axis=1) == 1).all()
    assert train[train.cloudy].drop(columns="cloudy").sum().sum() == 0
    train, _, _ = tags_of(200, classes=40)  # 23 tags past Planet's, named primary_1, clear_1, ...
    assert (train.sum() >= 1).all() and "conventional_mine_1" in train


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_planet_training_counts_are_the_generated_tables(tmp_path, difficulty):
    """The check stage's counts (images per set of tags, drawn without a photo) are what the train table holds."""
    root, _ = generate(tmp_path, "planet", difficulty=difficulty)
    spec = synthetic.SyntheticSettings(**TINY, layout="planet", difficulty=difficulty)
    table = pd.read_csv(root / "train_v2.csv", dtype=str, keep_default_na=False)
    assert synthetic.train_label_counts(spec).to_dict() == table.tags.value_counts().to_dict()


def test_planet_photos_show_their_tags(tmp_path):
    """Each tag leaves its mark: the same photo drawn without it differs (easy: every mark at full strength)."""
    import numpy as np

    names = list(synthetic.PLANET_COUNTS)
    base = {"primary", "clear"}
    plain = np.asarray(synthetic.tagged_image(base, names, "easy", 64, 64, np.random.default_rng(0)), dtype=float)
    for tag in set(names) - base - {"partly_cloudy", "haze", "cloudy"}:
        drawn = synthetic.tagged_image(base | {tag}, names, "easy", 64, 64, np.random.default_rng(0))
        assert np.abs(np.asarray(drawn, dtype=float) - plain).mean() > 0.5, tag
