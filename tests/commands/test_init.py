"""`paddy init`: a competition's description inferred from its files, for trees laid out like each Kaggle competition
(MLE-bench's copies), the readings it refuses to choose between, and params.yaml written with its comments."""

import shutil
from types import SimpleNamespace

import pytest
import yaml
from helpers.data import zip_bytes
from helpers.kaggle import FakeKaggle
from helpers.pipeline import ROOT

from paddy import commands as cli
from paddy.commands.init import enter
from paddy.data import synthetic
from paddy.data.competition import check_layout
from paddy.data.describe import FIELDS, infer, metric_from_kaggle
from paddy.data.listing import Listing
from paddy.errors import PaddyError
from paddy.settings.schema import LAYOUTS, CompetitionSettings

IMAGE = b""  # nothing here decodes an image: the names are what is read


def write_tree(root, files):
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def table(header, rows):
    return "\n".join([header, *rows]) + "\n"


def describe(root, **kwargs):
    """infer() on the tree, and the section it gives held against the files as the check stage holds it."""
    listing = Listing.of(root)
    section, found, guessed = infer(listing, **kwargs)
    assert list(section) == list(FIELDS)
    column = section["label_column"]
    comp = CompetitionSettings(**dict(section, label_column=tuple(column) if isinstance(column, list) else column))
    check_layout(listing, comp)
    return section, found, guessed


LABELS = ["blast", "normal", "hispa"]


def paddy_tree(root, n=24):
    rows = [(f"{100001 + i}.jpg", LABELS[i % 3], ["ADT45", "Ponni"][i % 2], str(45 + 5 * (i % 3))) for i in range(n)]
    files = {f"train_images/{label}/{i}": IMAGE for i, label, _, _ in rows}
    files |= {f"test_images/{200001 + i}.jpg": IMAGE for i in range(6)}
    files["train.csv"] = table("image_id,label,variety,age", [",".join(r) for r in rows])
    files["sample_submission.csv"] = table("image_id,label", [f"{200001 + i}.jpg," for i in range(6)])
    return write_tree(root, files)


def test_paddy(tmp_path):
    section, found, guessed = describe(paddy_tree(tmp_path))
    assert section == synthetic.description("paddy")
    assert any("variety (2 values), age (3 values)" in line for line in found)
    assert [line.split(":")[0] for line in guessed] == ["metric"]  # accuracy, from the form


def test_cassava(tmp_path):
    ids = [f"{1000015157 + 7 * i}.jpg" for i in range(20)]
    files = {f"train_images/{i}": IMAGE for i in ids} | {f"test_images/{i}.jpg": IMAGE for i in range(3)}
    files["train.csv"] = table("image_id,label", [f"{i},{k % 5}" for k, i in enumerate(ids)])
    files["sample_submission.csv"] = table("image_id,label", [f"{i}.jpg,4" for i in range(3)])
    section, _, _ = describe(write_tree(tmp_path, files), metric="accuracy")
    assert section == synthetic.description("cassava")


def test_dog_breed(tmp_path):
    breeds = ["beagle", "black-and-tan_coonhound", "boxer"]
    ids = [f"{k:032x}" for k in range(12)]
    files = {f"train/{i}.jpg": IMAGE for i in ids} | {f"test/{k:032x}.jpg": IMAGE for k in range(100, 104)}
    files["labels.csv"] = table("id,breed", [f"{i},{breeds[k % 3]}" for k, i in enumerate(ids)])
    files["sample_submission.csv"] = table(
        "id," + ",".join(breeds), [f"{k:032x}" + ",0.3333" * 3 for k in range(100, 104)]
    )
    section, found, _ = describe(write_tree(tmp_path, files), metric="log_loss")
    assert section == synthetic.description("dog_breed")
    assert any("breed (its values are the sample submission's columns)" in line for line in found)


def test_dogs_vs_cats_with_the_zips_beside_the_folders(tmp_path):
    files = {f"train/{c}.{k}.jpg": IMAGE for c in ("cat", "dog") for k in range(5)}
    files |= {f"test/{n}.jpg": IMAGE for n in range(1, 5)}
    files["train.zip"] = zip_bytes({f"train/{c}.{k}.jpg": b"" for c in ("cat", "dog") for k in range(5)})
    files["test.zip"] = zip_bytes({f"test/{n}.jpg": b"" for n in range(1, 5)})
    files["sample_submission.csv"] = table("id,label", [f"{n},0.5" for n in range(1, 5)])
    section, _, guessed = describe(write_tree(tmp_path, files), metric="log_loss")
    assert section == synthetic.description("dogs_vs_cats")
    assert any(line.startswith("positive: dog (") for line in guessed)  # the class sorting last, said to be a guess


def test_plant_seedlings_class_folders_with_spaces(tmp_path):
    species = ["Black-grass", "Common Chickweed", "Sugar beet"]
    files = {f"train/{s}/{k:09x}{j}.png": IMAGE for j, s in enumerate(species) for k in range(4)}
    files |= {f"test/{k:09x}.png": IMAGE for k in range(500, 503)}
    files["sample_submission.csv"] = table("file,species", [f"{k:09x}.png,Sugar beet" for k in range(500, 503)])
    section, found, _ = describe(write_tree(tmp_path, files), metric="f1_micro")
    assert section == synthetic.description("plant_seedlings")
    assert any("class folders: 3 classes" in line for line in found)


def cactus_files():
    ids = [f"{k:032x}.jpg" for k in range(10)]
    tests = [f"{k:032x}.jpg" for k in range(50, 54)]
    return {
        "train.csv": table("id,has_cactus", [f"{i},{k % 2}" for k, i in enumerate(ids)]),
        "train.zip": zip_bytes(dict.fromkeys(ids, b"")),  # flat inside: no train/ folder
        "test.zip": zip_bytes(dict.fromkeys(tests, b"")),
        "sample_submission.csv": table("id,has_cactus", [f"{i},0.5" for i in tests]),
    }


def test_aerial_cactus_inner_zips(tmp_path):
    section, _, guessed = describe(write_tree(tmp_path, cactus_files()), metric="roc_auc")
    assert section == synthetic.description("cactus")
    assert any(line.startswith("positive: 1 (") for line in guessed)


def histopathologic_files():
    ids = [f"{k:040x}" for k in range(12)]
    tests = [f"{k:040x}" for k in range(90, 94)]
    files = {f"train/{i}.tif": IMAGE for i in ids} | {f"test/{i}.tif": IMAGE for i in tests}
    files["train_labels.csv"] = table("id,label", [f"{i},{k % 2}" for k, i in enumerate(ids)])
    files["sample_submission.csv"] = table("id,label", [f"{i},0" for i in tests])
    return files


def test_histopathologic_is_ambiguous_without_the_metric(tmp_path):
    root = write_tree(tmp_path, histopathologic_files())
    with pytest.raises(PaddyError) as e:
        infer(Listing.of(root), source="histo")
    message = str(e.value)
    assert "can be read 2 ways" in message and "form=label" in message and "form=probability" in message
    assert "`paddy init histo form=label`" in message and "`competition.form`" in message


def test_histopathologic_resolved_by_form_or_metric(tmp_path):
    root = write_tree(tmp_path, histopathologic_files())
    section, _, guessed = describe(root, given={"form": "probability"})
    assert (section["form"], section["positive"], section["metric"]) == ("probability", "1", "log_loss")
    assert any(line.startswith("metric: log_loss, from the form") for line in guessed)
    section, _, _ = describe(root, metric="roc_auc")
    assert section | {"metric": ""} == dict(
        train_table="train_labels.csv", id_column="id", labels_from="column", label_column="label",
        train_images="train/{id}.tif", test_images="test/{id}.tif", sample_submission="sample_submission.csv",
        form="probability", positive="1", metric="",
    )  # fmt: skip
    assert describe(root, metric="accuracy")[0]["form"] == "label"


def test_aptos_beside_a_test_table_of_ids(tmp_path):
    ids = [f"{k:012x}" for k in range(15)]
    tests = [f"{k:012x}" for k in range(40, 44)]
    files = {f"train_images/{i}.png": IMAGE for i in ids} | {f"test_images/{i}.png": IMAGE for i in tests}
    files["train.csv"] = table("id_code,diagnosis", [f"{i},{k % 5}" for k, i in enumerate(ids)])
    files["test.csv"] = table("id_code", tests)
    files["sample_submission.csv"] = table("id_code,diagnosis", [f"{i},0" for i in tests])
    section, _, _ = describe(write_tree(tmp_path, files), metric="qwk")
    assert section == synthetic.description("aptos")


def test_plant_pathology_one_hot_and_one_images_folder(tmp_path):
    classes = ["healthy", "multiple_diseases", "rust", "scab"]
    rows = [f"Train_{i}," + ",".join("1" if j == i % 4 else "0" for j in range(4)) for i in range(12)]
    files = {f"images/Train_{i}.jpg": IMAGE for i in range(12)} | {f"images/Test_{i}.jpg": IMAGE for i in range(4)}
    files["train.csv"] = table("image_id," + ",".join(classes), rows)
    files["test.csv"] = table("image_id", [f"Test_{i}" for i in range(4)])
    files["sample_submission.csv"] = table(
        "image_id," + ",".join(classes), [f"Test_{i}" + ",0.25" * 4 for i in range(4)]
    )
    section, _, _ = describe(write_tree(tmp_path, files), metric="mean_roc_auc")
    assert section == synthetic.description("plant_pathology")


PLANET_ROWS = ["haze primary", "agriculture clear primary water", "clear primary", "clear primary",
               "agriculture clear habitation primary road", "cloudy", "clear primary water", "partly_cloudy primary",
               "agriculture clear primary road", "clear primary"]  # fmt: skip


def planet_files(rows=PLANET_ROWS, sample="primary clear agriculture road water"):
    """Planet's layout: train_v2.csv of space-separated tags, train-jpg/, test-jpg/, sample_submission_v2.csv."""
    files = {f"train-jpg/train_{i}.jpg": IMAGE for i in range(len(rows))}
    files |= {f"test-jpg/test_{i}.jpg": IMAGE for i in range(4)}
    files["train_v2.csv"] = table("image_name,tags", [f"train_{i},{tags}" for i, tags in enumerate(rows)])
    files["sample_submission_v2.csv"] = table("image_name,tags", [f"test_{i},{sample}" for i in range(4)])
    return files


def test_planet_tags(tmp_path):
    section, found, guessed = describe(write_tree(tmp_path, planet_files()))
    assert section == synthetic.description("planet")  # form tags, metric mean_f2
    assert any(line.startswith("form: tags (the train table's tags holds each image's tags") for line in found)
    assert [line.split(",")[0] for line in guessed] == ["metric: mean_f2"]  # said to be a guess
    assert describe(tmp_path, given={"metric": "mean_f1"})[0]["metric"] == "mean_f1"


def test_imet_attribute_ids_and_a_numbered_placeholder(tmp_path):
    """iMet's layout: train.csv id,attribute_ids (numbers), train/<id>.png, a sample sending `0 1 2` everywhere."""
    ids = [f"{k:032x}" for k in range(12)]
    attributes = ["13 405 896", "13 405", "51 405", "13 896", "188 51 13", "405 896", "13 405 896 1092", "51 13",
                  "405", "188 405 13", "896 13", "51 405 896"]  # fmt: skip
    files = {f"train/{i}.png": IMAGE for i in ids} | {f"test/{k:032x}.png": IMAGE for k in range(90, 93)}
    files["train.csv"] = table("id,attribute_ids", [f"{i},{a}" for i, a in zip(ids, attributes)])
    files["labels.csv"] = table("attribute_id,attribute_name", ["13,culture::a", "51,tag::b", "405,tag::c"])
    files["sample_submission.csv"] = table("id,attribute_ids", [f"{k:032x},0 1 2" for k in range(90, 93)])
    section, _, guessed = describe(write_tree(tmp_path, files))
    assert (section["form"], section["label_column"], section["metric"]) == ("tags", "attribute_ids", "mean_f2")
    assert (section["train_images"], section["test_images"]) == ("train/{id}.png", "test/{id}.png")
    assert any(line.startswith("metric: mean_f2") for line in guessed)


def test_a_tags_column_not_named_like_the_samples_is_found(tmp_path):
    files = planet_files()
    files["train_v2.csv"] = files["train_v2.csv"].replace("image_name,tags", "image_name,labels")
    section, found, _ = describe(write_tree(tmp_path, files))
    assert (section["label_column"], section["form"]) == ("labels", "tags")
    assert "label column: labels (each row's tags, space-separated)" in found


def test_class_names_of_several_words_are_no_tags(tmp_path):
    """A label column of `Common Chickweed`, `Sugar beet`: most rows two words, but the words never recombine."""
    species = ["Common Chickweed", "Sugar beet", "Fat Hen", "Maize"]
    ids = [f"{k:09x}.png" for k in range(16)]
    files = {f"train/{i}": IMAGE for i in ids} | {f"test/{k:09x}.png": IMAGE for k in range(50, 53)}
    files["train.csv"] = table("file,species", [f"{i},{species[k % 4]}" for k, i in enumerate(ids)])
    files["sample_submission.csv"] = table("file,species", [f"{k:09x}.png,Sugar beet" for k in range(50, 53)])
    section, _, _ = describe(write_tree(tmp_path, files), metric="f1_micro")
    assert (section["form"], section["label_column"]) == ("label", "species")


def test_tags_refuse_a_metric_of_one_label(tmp_path):
    root = write_tree(tmp_path, planet_files())
    with pytest.raises(PaddyError, match=r"`competition.form` in params.yaml is tags .*set the metric to mean_f2"):
        describe(root, given={"metric": "accuracy"})
    section, _, guessed = describe(root, metric="f1_micro")  # Kaggle's record names a micro F1 of tags: iMet's
    assert section["metric"] == "micro_f1" and any("Kaggle's record names f1_micro" in line for line in guessed)


def test_a_mean_f_record_for_a_single_label_competition_is_not_taken(tmp_path):
    section, _, guessed = describe(paddy_tree(tmp_path), metric="mean_f2")
    assert section["metric"] == "accuracy" and any("a metric of tags, but the form is label" in g for g in guessed)


def test_two_label_column_candidates_stop_with_both_readings(tmp_path):
    root = paddy_tree(tmp_path)
    (root / "train.csv").write_text((root / "train.csv").read_text().replace("image_id,label,", "image_id,disease,"))
    with pytest.raises(PaddyError) as e:
        infer(Listing.of(root), source="x")
    message = str(e.value)
    assert "`competition.label_column`" in message and "label_column=disease" in message
    assert "label_column=variety" in message and "`paddy init x label_column=disease`" in message
    section, _, _ = describe(root, given={"label_column": "disease"})
    assert section["label_column"] == "disease" and section["train_images"] == "train_images/{label}/{id}"


def test_two_train_tables_stop_naming_the_setting(tmp_path):
    root = paddy_tree(tmp_path)
    shutil.copy(root / "train.csv", root / "labels.csv")
    with pytest.raises(PaddyError, match=r"`competition.train_table`.*train_table=labels.csv.*train_table=train.csv"):
        infer(Listing.of(root))
    assert describe(root, given={"train_table": "train.csv"})[0]["train_table"] == "train.csv"


def test_no_sample_submission(tmp_path):
    root = paddy_tree(tmp_path)
    (root / "sample_submission.csv").rename(root / "answers.csv")
    with pytest.raises(PaddyError, match=r"has no sample submission .*answers.csv.*sample_submission=FILE.csv"):
        infer(Listing.of(root))


def test_a_folder_matching_no_layout(tmp_path):
    files = {f"pictures/{k}.jpg": IMAGE for k in range(10)} | {f"test/{k}.jpg": IMAGE for k in range(100, 103)}
    files["sample_submission.csv"] = table("id,label", [f"{k}," for k in range(100, 103)])
    with pytest.raises(PaddyError, match=r"no training labels paddy recognises.*no folder of class folders"):
        infer(Listing.of(write_tree(tmp_path, files)))


def test_ids_matching_no_image(tmp_path):
    root = paddy_tree(tmp_path)
    shutil.rmtree(root / "train_images")
    with pytest.raises(PaddyError, match=r"the ids of train.csv name no image file"):
        infer(Listing.of(root))
    shutil.rmtree(root / "test_images")
    with pytest.raises(PaddyError, match=r"sample submission's ids \(200001.jpg, .*\) name no image"):
        infer(Listing.of(root))


def test_7z_archives_only(tmp_path):
    """invasive-species-monitoring: its images are in .7z archives, which Listing cannot open."""
    files = {"train.7z": b"7z", "test.7z": b"7z", "train_labels.csv": table("name,invasive", ["1,0", "2,1", "3,0"])}
    files["sample_submission.csv"] = table("name,invasive", ["1,0.5", "2,0.5"])
    with pytest.raises(PaddyError, match=r"test.7z, train.7z: archives paddy cannot open.*`7z x test.7z"):
        infer(Listing.of(write_tree(tmp_path, files)))


def test_coco_json_only(tmp_path):
    files = {"train/metadata.json": '{"images": [], "annotations": [], "categories": []}'}
    files |= {f"train/images/000/{k}.jpg": IMAGE for k in range(3)}
    with pytest.raises(PaddyError, match=r"JSON \(train/metadata.json: COCO-style.*CSV and folder layouts only"):
        infer(Listing.of(write_tree(tmp_path, files)))


def test_a_field_given_wins_and_an_unknown_one_is_refused(tmp_path):
    root = paddy_tree(tmp_path)
    assert describe(root, given={"metric": "f1_macro"})[0]["metric"] == "f1_macro"
    with pytest.raises(PaddyError, match=r"colour is not a field of the competition section"):
        infer(Listing.of(root), given={"colour": "red"})


@pytest.mark.parametrize(
    ("name", "ours"),
    [
        ("Categorization Accuracy", "accuracy"),
        ("Multi Class Log Loss", "log_loss"),
        ("Log Loss", "log_loss"),
        ("Area Under Receiver Operating Characteristic Curve", "roc_auc"),
        ("Mean Columnwise Area Under Receiver Operating Characteristic Curve", "mean_roc_auc"),
        ("Quadratic Weighted Kappa", "qwk"),
        ("Mean F1-Score", "f1_micro"),
        ("Micro-averaged F1", "f1_micro"),
        ("Macro F1 Score", "f1_macro"),
        ("Mean F-Score Beta", "mean_f2"),
        ("MeanFScoreBeta", "mean_f2"),
        ("F2 Score", "mean_f2"),
        ("MAP@5", None),
    ],
)
def test_kaggle_metric_names(name, ours):
    assert metric_from_kaggle(name) == ours


# ---------------------------------------------------------------------------------------------------------------
# The command: params.yaml


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    return path


def set_layout(params_file, layout, classes=0):
    text = params_file.read_text().replace("    layout: paddy\n", f"    layout: {layout}\n")
    params_file.write_text(text.replace("    classes: 0  #", f"    classes: {classes}  #"))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_init_synthetic_is_the_generators_description(params_file, layout):
    set_layout(params_file, layout)
    assert enter("synthetic", params_path=params_file, dry_run=True, out=lambda line: None) == synthetic.description(
        layout
    )


@pytest.mark.parametrize(
    ("layout", "classes"), [("plant_pathology", 6), ("cassava", 30), ("plant_seedlings", 15), ("planet", 20)]
)
def test_init_synthetic_with_n_classes(params_file, layout, classes):
    set_layout(params_file, layout, classes)
    section = enter("synthetic", params_path=params_file, dry_run=True, out=lambda line: None)
    assert section == synthetic.description(layout, classes)


class FakeRecords(FakeKaggle):
    """FakeKaggle with Kaggle's competition records: competitions_list answers `metric` for the slug."""

    def __init__(self, payload, slug, metric):
        super().__init__(payload)
        self.slug, self.metric, self.searches = slug, metric, []

    def competitions_list(self, search=None, category=None, **kwargs):
        self.searches.append((search, category))
        other = SimpleNamespace(ref=f"{self.slug}-2", evaluation_metric="Categorization Accuracy")
        record = SimpleNamespace(ref=f"https://www.kaggle.com/competitions/{self.slug}", evaluation_metric=self.metric)
        return SimpleNamespace(competitions=[other, record])


def test_init_a_kaggle_slug_takes_the_metric_from_its_record(params_file, tmp_path):
    slug = "histopathologic-cancer-detection"
    fake = FakeRecords(zip_bytes(histopathologic_files()), slug, "Area Under Receiver Operating Characteristic Curve")
    lines = []
    enter(slug, params_path=params_file, client=fake, cache_dir=tmp_path / "cache", out=lines.append)
    assert fake.downloads == 1 and fake.searches == [(slug, "all")]
    params = yaml.safe_load(params_file.read_text())
    assert params["data"]["source"] == "kaggle" and params["data"]["competition"] == slug
    assert params["competition"]["metric"] == "roc_auc" and params["competition"]["form"] == "probability"
    assert (
        "  found metric: roc_auc (Kaggle's record says 'Area Under Receiver Operating Characteristic Curve')" in lines
    )


def test_init_a_kaggle_metric_paddy_does_not_compute_is_a_guess(params_file, tmp_path):
    files = {"train.csv": paddy_tree(tmp_path / "t").joinpath("train.csv").read_text()}
    files |= {p.relative_to(tmp_path / "t").as_posix(): b"" for p in (tmp_path / "t").rglob("*.jpg")}
    files["sample_submission.csv"] = (tmp_path / "t" / "sample_submission.csv").read_text()
    fake = FakeRecords(zip_bytes(files), "some-contest", "MAP@5")
    lines = []
    enter("some-contest", params_path=params_file, client=fake, cache_dir=tmp_path / "c", out=lines.append)
    assert yaml.safe_load(params_file.read_text())["competition"]["metric"] == "accuracy"
    assert any("GUESSED metric: accuracy, from the form (Kaggle scores some-contest by 'MAP@5'" in x for x in lines)


def test_dry_run_writes_nothing(params_file, tmp_path):
    before = params_file.read_bytes()
    root = write_tree(tmp_path / "aerial-cactus-identification", cactus_files())
    assert cli.main(["init", str(root), "metric=roc_auc", "--params", str(params_file), "--dry-run"]) == 0
    assert params_file.read_bytes() == before


def test_init_writes_the_section_keeping_every_comment(params_file, tmp_path, capsys):
    before = params_file.read_text()
    root = write_tree(tmp_path / "aerial-cactus-identification", cactus_files())
    assert cli.main(["init", str(root), "metric=roc_auc", "--params", str(params_file)]) == 0
    params = yaml.safe_load(params_file.read_text())
    assert params["competition"] == synthetic.description("cactus")
    assert params["data"]["source"] == str(root)
    assert params["data"]["competition"] == "aerial-cactus-identification"  # the folder's name, said as a guess
    out = capsys.readouterr().out
    assert "GUESSED data.competition: aerial-cactus-identification (the folder's name)" in out
    assert "training images: 10 in 2 classes: 0 5, 1 5" in out and "test images: 4" in out
    comments = [line.split("#", 1)[1] for line in before.splitlines() if "#" in line]
    after = params_file.read_text()
    assert all(c in after for c in comments)
    # back to the generated Paddy competition: the very file it was
    assert cli.main(["init", "synthetic", "--params", str(params_file)]) == 0
    assert params_file.read_text() == before


def test_a_refused_description_writes_nothing(params_file, tmp_path, capsys):
    before = params_file.read_bytes()
    root = write_tree(tmp_path / "c", cactus_files())
    # mean_roc_auc scores a probability column per class; the sample sends one
    assert cli.main(["init", str(root), "metric=mean_roc_auc", "--params", str(params_file)]) == 2
    assert params_file.read_bytes() == before
    assert cli.main(["init", str(root), "metric=roc_auc", "form=label", "--params", str(params_file)]) == 2
    assert "`competition.metric` is roc_auc, which scores probabilities" in capsys.readouterr().err
    assert params_file.read_bytes() == before


def test_init_a_generated_planet_folder(params_file, tmp_path):
    """The generated planet competition as a folder source: described as tags, mean_f2 (a guess), the tags counted."""
    folder = tmp_path / "planet-understanding-the-amazon-from-space"
    size = dict(n_train=80, n_test=8, width=16, height=16)
    synthetic.make_competition(folder, tmp_path / "truth.csv", layout="planet", **size)
    lines = []
    section = enter(str(folder), params_path=params_file, out=lines.append)
    assert section == synthetic.description("planet")
    assert any(line.startswith("  training images: 80 in 17 tags: primary ") for line in lines)
    assert any(line.startswith("  GUESSED metric: mean_f2") for line in lines)
    params = yaml.safe_load(params_file.read_text())
    assert params["competition"]["form"] == "tags" and params["data"]["source"] == str(folder)
