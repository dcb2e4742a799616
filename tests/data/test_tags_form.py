"""Multi-label competitions (`competition.form: tags`, Planet's): a train table column of space-separated tags, read
as each image's set of tags (normalised, possibly empty), every tag a class, a sample of one text column, a
mean_f<beta> metric; and the one-paragraph refusals of a description that mixes tags with the other forms."""

from dataclasses import replace

import pandas as pd
import pytest
from helpers.pipeline import ROOT

from paddy.data import synthetic
from paddy.data.competition import check_layout, label_classes, normalise_tags, tag_classes
from paddy.errors import PaddyError
from paddy.settings import parse_settings, read_params
from paddy.settings.schema import CompetitionSettings, fbeta_of

PLANET = synthetic.described("planet")
ROWS = [  # Planet's train_v2.csv as a careless copy might hold it: tags in any order, repeated, spaced twice, none
    ("train_0", "haze primary"),
    ("train_1", "primary  clear agriculture water"),
    ("train_2", "clear primary clear"),
    ("train_3", ""),
    ("train_4", "agriculture clear habitation primary road"),
    ("train_5", "cloudy"),
]


def planet_folder(root, rows=ROWS, sample_tags="primary clear agriculture road water"):
    """A tiny folder laid out like Planet: train_v2.csv, train-jpg/, test-jpg/, sample_submission_v2.csv."""
    for folder, ids in (("train-jpg", [i for i, _ in rows]), ("test-jpg", ["test_0", "test_1", "file_0"])):
        (root / folder).mkdir(parents=True)
        for image_id in ids:
            (root / folder / f"{image_id}.jpg").write_bytes(b"")  # only the names are read
    pd.DataFrame(rows, columns=["image_name", "tags"]).to_csv(root / "train_v2.csv", index=False)
    sample = pd.DataFrame({"image_name": ["test_0", "test_1", "file_0"], "tags": sample_tags})
    sample.to_csv(root / "sample_submission_v2.csv", index=False)
    return root


def test_a_planet_folder_reads_each_images_tags_normalised(tmp_path):
    train, sample, test, classes = check_layout(planet_folder(tmp_path), PLANET)
    assert classes == ["agriculture", "clear", "cloudy", "habitation", "haze", "primary", "road", "water"]
    assert train.label.tolist() == [
        "haze primary",
        "agriculture clear primary water",  # class order, single spaces
        "clear primary",  # each tag once
        "",  # no tag: allowed, a set like any other
        "agriculture clear habitation primary road",
        "cloudy",
    ]
    assert train.file.tolist()[0] == "train-jpg/train_0.jpg" and test.file.tolist()[-1] == "test-jpg/file_0.jpg"
    assert list(sample.columns) == ["image_name", "tags"]


def test_tag_classes_and_normalised_tags():
    labels = ["10 9", "9  2", "", "2"]
    assert tag_classes(labels) == ["2", "9", "10"]  # integers by value, as class_order orders classes
    assert normalise_tags(labels) == ["9 10", "2 9", "", "2"]
    assert label_classes(labels, multi_label=True) == ["2", "9", "10"]
    assert label_classes(["b a", "a"]) == ["a", "b a"]  # single-label: each whole label is a class


def test_a_sample_tag_no_training_image_has_is_a_warning_not_a_refusal(tmp_path, capsys):
    root = planet_folder(tmp_path, sample_tags="primary blooming clear")
    check_layout(root, PLANET)  # Kaggle's samples are placeholders: not fatal
    out = capsys.readouterr().out
    assert "warning:" in out and "'blooming'" in out and "sample_submission_v2.csv" in out
    check_layout(planet_folder(tmp_path / "seen"), PLANET)
    assert "warning" not in capsys.readouterr().out  # Planet's own placeholder: road and water are training tags


def test_an_empty_sample_is_fine(tmp_path, capsys):
    check_layout(planet_folder(tmp_path, sample_tags=""), PLANET)
    assert "warning" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(form="label"), r"`competition.metric` in params.yaml is mean_f2, .*but `competition.form` is label: "
                             r"set form to tags"),
        (dict(metric="accuracy"), r"`competition.form` in params.yaml is tags .*`competition.metric` is accuracy, "
                                  r".*set the metric to mean_f2"),
        (dict(labels_from="one_hot", label_column=["clear", "haze"]), r"`competition.labels_from` is one_hot .*set "
                                                                        r"labels_from to column"),
        (dict(train_images="train-jpg/{label}/{id}.jpg"), r"train_images to a path without \{label\}"),
    ],
)  # fmt: skip
def test_tags_and_a_mean_f_metric_go_together(tmp_path, params, change, message):
    """Refused by the settings (parse_settings: the check stage, paddy init) and by check_layout for a description
    built without them."""
    params["competition"] = synthetic.description("planet") | change
    with pytest.raises(PaddyError, match=message) as err:
        parse_settings(params)
    assert "\n" not in str(err.value)
    with pytest.raises(PaddyError, match=message):
        check_layout(planet_folder(tmp_path), CompetitionSettings.of(params["competition"]))


def test_form_tags_needs_one_value_column(tmp_path):
    root = planet_folder(tmp_path)
    sample = pd.read_csv(root / "sample_submission_v2.csv").assign(extra="x")
    sample.to_csv(root / "sample_submission_v2.csv", index=False)
    with pytest.raises(PaddyError, match=r"columns after its ids .*`competition.form` is tags, one value per image"):
        check_layout(root, PLANET)


def test_fewer_than_two_tags_are_refused(tmp_path):
    root = planet_folder(tmp_path, rows=[("train_0", "clear"), ("train_1", ""), ("train_2", "clear")])
    with pytest.raises(PaddyError, match=r"have 1 tag\(s\) among them \('clear'; 3 images\).*at least two"):
        check_layout(root, PLANET)
    root = planet_folder(tmp_path / "none", rows=[("train_0", ""), ("train_1", "")])
    with pytest.raises(PaddyError, match=r"have 0 tag\(s\) among them \(none; 2 images\)"):
        check_layout(root, PLANET)


def test_a_one_hot_row_of_several_classes_points_to_form_tags(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("Train_0", "Train_1", "Test_0"):
        (tmp_path / "images" / f"{name}.jpg").write_bytes(b"")
    (tmp_path / "train.csv").write_text("image_id,a,b\nTrain_0,1,0\nTrain_1,1,1\n")
    (tmp_path / "sample_submission.csv").write_text("image_id,a,b\nTest_0,0.5,0.5\n")
    comp = replace(synthetic.described("plant_pathology", 2), label_column=("a", "b"))
    with pytest.raises(PaddyError, match=r"line 3 marks 2 classes.*multi-label competition: .*`competition.form: tags"):
        check_layout(tmp_path, comp)


@pytest.mark.parametrize(
    ("metric", "beta"),
    [("mean_f2", 2.0), ("mean_f1", 1.0), ("mean_f0.5", None), ("mean_f10", 10.0), ("mean_f0", None), ("mean_f", None),
     ("micro_f1", 1.0), ("micro_f0", None), ("macro_f1", None),
     ("mean_fx", None), ("mean_f2 ", None), ("mean_f-1", None), ("f1_micro", None), ("accuracy", None), (2, None)],
)  # fmt: skip
def test_the_beta_of_a_mean_f_metric(metric, beta):
    assert fbeta_of(metric) == beta


def test_the_settings_take_form_tags_and_a_mean_f_metric(params):
    params["competition"] = synthetic.description("planet") | {"metric": "mean_f3"}
    comp = parse_settings(params).competition
    assert comp.form == "tags" and comp.multi_label and fbeta_of(comp.metric) == 3.0
    assert not parse_settings(params | {"competition": synthetic.description("paddy")}).competition.multi_label
    params["competition"]["metric"] = "mean_fx"
    with pytest.raises(PaddyError, match=r"`competition.metric` in params.yaml is 'mean_fx'; it must be one of "
                                         r"accuracy, .*, or mean_f<beta> or micro_f<beta> for form tags"):  # fmt: skip
        parse_settings(params)


def test_the_default_params_describe_a_single_label_competition():
    comp = CompetitionSettings.of(read_params(ROOT / "params.yaml")["competition"])
    assert not comp.multi_label and fbeta_of(comp.metric) is None
