"""A competition's files read through its description (the `competition` settings, paddy.settings), and the checks
that catch a description that does not fit them, before any stage deletes an output.

Every competition becomes the same two tables, whatever its layout: the training images (image_id, label, the train
table's other columns, file) and the test images (image_id: the sample submission's ids, in its order; file), with
`file` the image's path inside the competition folder. Everything downstream reads those names only.
"""

import re
from pathlib import Path

import pandas as pd

from paddy.data.listing import Listing, is_image, read_text_csv
from paddy.errors import PaddyError
from paddy.settings.parse import check_tags
from paddy.settings.schema import LABEL_METRICS

# The columns the pipeline's tables use for itself: a train table's column of that name (other than its ids and
# labels) would be overwritten.
RESERVED = ("image_id", "label", "file", "src", "split", "path", "width", "height", "md5", "ok")
INIT = "`paddy init SOURCE` writes the competition section from the files (docs/competitions.md)."


def class_order(values):
    """The classes in output order: by value when every one is an integer (0, 1, ..., 10: ordinal grades stay in
    order), else sorted as text."""
    values = sorted(set(values))
    if values and all(re.fullmatch(r"-?\d+", v) for v in values):
        return sorted(values, key=int)
    return values


def tag_classes(labels):
    """Every tag of space-separated tag strings (form tags), in class_order: a multi-label competition's classes."""
    return class_order(tag for text in labels for tag in text.split())


def label_classes(labels, multi_label=False):
    """The classes of the training labels: the labels themselves, or with multi_label (form tags) every tag seen."""
    return tag_classes(labels) if multi_label else class_order(labels)


def normalise_tags(labels):
    """Each image's tags as one string: single spaces, each tag once, in class order (tag_classes); '' for none."""
    rank = {tag: k for k, tag in enumerate(tag_classes(labels))}
    return [" ".join(sorted(set(text.split()), key=rank.__getitem__)) for text in labels]


def is_categorical(column):
    """A column of text that could be a target (models.<name>.targets): no gaps, at least two values, far fewer
    values than rows (a file name or a date is no target)."""
    distinct = column.nunique()
    return bool((column != "").all()) and 2 <= distinct <= max(2, min(len(column) // 2, 10_000))


def target_columns(train):
    """The train rows' columns a model may add to its targets after `label` (Paddy's variety and age)."""
    return [c for c in train.columns if c not in RESERVED and is_categorical(train[c].astype(str))]


def _fill(template, image_id, label=None):
    path = template.replace("{id}", image_id)
    return path if label is None else path.replace("{label}", label)


def _template_regex(template):
    """The files a template with {id} (and {label}) can name: {id} and {label} each one path part, or its start."""
    parts = re.split(r"({id}|{label})", template)
    groups = {"{id}": "(?P<id>[^/]+)", "{label}": "(?P<label>[^/]+)"}
    return re.compile("".join(groups.get(p, re.escape(p)) for p in parts) + r"\Z")


def _near(listing, path):
    """A sentence of what is where `path` was looked for: its folder's first files, or the top level."""
    folder = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
    inside = sorted(f for f in listing.files if f.startswith(folder) and "/" not in f[len(folder) :])
    if folder and inside:
        return f"{folder} holds {len(inside):,} file(s) such as {', '.join(inside[:3])}."
    deeper = sorted(f for f in listing.files if f.startswith(folder))
    if folder and deeper:
        return f"{folder} holds folders, with files such as {', '.join(deeper[:3])}."
    return listing.tops_line()


def _line(mask):
    """The CSV line (header = 1) of the first True of a boolean Series over a table read with a default index."""
    return int(mask.to_numpy().argmax()) + 2


def _table(listing, comp):
    """The train table, checked: its id column unique and filled, its label column(s) present."""
    name = comp.train_table
    df = listing.csv(name, "the train table, `competition.train_table`")
    where = f"{listing.where}/{name}"
    columns = [comp.id_column] + (list(comp.label_column) if comp.labels_from == "one_hot" else [])
    columns += [comp.label_column] if comp.labels_from == "column" else []
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise PaddyError(
            f"{where} has columns {list(df.columns)}, but the competition section names {', '.join(missing)} "
            f"(`competition.id_column`, `competition.label_column`). Set them to its columns. {INIT}"
        )
    ids = df[comp.id_column]
    if (ids == "").any():
        raise PaddyError(f"{where} has a row with no {comp.id_column} (line {_line(ids == '')}): fill or delete it.")
    dupes = ids[ids.duplicated()]
    if len(dupes):
        raise PaddyError(
            f"{where} lists {comp.id_column} {dupes.iloc[0]!r} more than once (again at line {dupes.index[0] + 2}; "
            f"{len(dupes)} repeated row(s) in all): each image needs exactly one row. Delete the repeated rows, or "
            "restore the competition's own file (download it again, or point `data.source` at an intact copy)."
        )
    return df, where


def _labels_of_one_hot(df, comp, where):
    hot = df[list(comp.label_column)]
    bad = ~hot.isin(["0", "1", "0.0", "1.0"]).all(axis=1)
    if bad.any():
        row = hot[bad].iloc[0].to_dict()
        raise PaddyError(
            f"{where} line {_line(bad)} has {row} in the class columns `competition.label_column`: one-hot labels "
            "are 0 or 1. Name only the 0/1 class columns there."
        )
    ones = hot.astype(float).astype(int)
    count = ones.sum(axis=1)
    if (count != 1).any():
        raise PaddyError(
            f"{where} line {_line(count != 1)} marks {int(count[count != 1].iloc[0])} classes of "
            f"{list(comp.label_column)}: one-hot labels mark exactly one per image. A row with several is a "
            "multi-label competition: paddy enters one whose train table holds each image's tags in one column, "
            "space-separated (`competition.form: tags`, labels_from column, label_column that column; "
            "docs/competitions.md). Otherwise check `competition.label_column`."
        )
    return pd.Series(list(comp.label_column), dtype=str).iloc[ones.to_numpy().argmax(1)].to_numpy()


def train_rows(listing, comp):
    """The training images: image_id, label, the train table's other columns (as text), file."""
    if comp.labels_from in ("column", "one_hot"):
        df, where = _table(listing, comp)
        if comp.labels_from == "column" and comp.multi_label:  # a set of tags per image: none is a set too
            labels = normalise_tags(df[comp.label_column])
            extras = [c for c in df.columns if c not in (comp.id_column, comp.label_column)]
        elif comp.labels_from == "column":
            labels = df[comp.label_column]
            if (labels == "").any():
                raise PaddyError(
                    f"{where} has a row with no {comp.label_column} (line {_line(labels == '')}, "
                    f"{comp.id_column} {df[comp.id_column][labels == ''].iloc[0]!r}): every training image needs its "
                    "label. Fill the gap or delete the row; a column with gaps may also be the wrong one "
                    f"(`competition.label_column`). {INIT}"
                )
            extras = [c for c in df.columns if c not in (comp.id_column, comp.label_column)]
        else:
            labels = _labels_of_one_hot(df, comp, where)
            extras = [c for c in df.columns if c != comp.id_column and c not in comp.label_column]
        clash = [c for c in extras if c in RESERVED]
        if clash:
            raise PaddyError(
                f"{where} has a column named {clash[0]!r}, a name paddy's own tables use for something else: rename "
                "that column in a copy of the competition, or name it as the id or label column if it is one."
            )
        rows = df[extras].assign(image_id=df[comp.id_column].to_numpy(), label=list(labels))
        rows = rows[["image_id", "label", *extras]]
        rows["file"] = [_fill(comp.train_images, i, lab) for i, lab in zip(rows.image_id, rows.label)]
        return rows
    pattern = _template_regex(comp.train_images)
    found = [(m["id"], m.groupdict().get("label"), f) for f in sorted(listing.files) if (m := pattern.match(f))]
    found = [row for row in found if is_image(row[2])]
    if comp.labels_from == "file_names":
        found = [(i, i.split(".", 1)[0] if "." in i else None, f) for i, _, f in found]
        unlabelled = [f for _, label, f in found if not label]
        if unlabelled:
            raise PaddyError(
                f"{listing.where}/{unlabelled[0]} has no label in its name: with `competition.labels_from: "
                "file_names` a training image is named <label>.<anything> (cat.0.jpg). Rename or remove it."
            )
    rows = pd.DataFrame(found, columns=["image_id", "label", "file"])
    dupes = rows.image_id[rows.image_id.duplicated()]
    if len(dupes):
        raise PaddyError(
            f"{listing.where} has two training images with the id {dupes.iloc[0]!r} ("
            f"{', '.join(rows.file[rows.image_id == dupes.iloc[0]].head(2))}): with labels from class folders an "
            "image's id is its file name, so each must be unique. Rename one of them."
        )
    return rows


def test_rows(listing, comp):
    """(the sample submission as read, the test images: image_id in its order, file)."""
    sample = listing.csv(comp.sample_submission, "the sample submission, `competition.sample_submission`")
    where = f"{listing.where}/{comp.sample_submission}"
    if len(sample.columns) < 2:
        raise PaddyError(
            f"{where} has the columns {list(sample.columns)}: a sample submission holds an id column, then what is "
            "sent per image. Check `competition.sample_submission`."
        )
    ids = sample.iloc[:, 0]
    if (ids == "").any():
        raise PaddyError(f"{where} has a row with no id (line {_line(ids == '')}): restore the competition's file.")
    dupes = ids[ids.duplicated()]
    if len(dupes):
        raise PaddyError(
            f"{where} lists the id {dupes.iloc[0]!r} more than once (again at line {dupes.index[0] + 2}): restore the "
            "competition's own file."
        )
    return sample, pd.DataFrame({"image_id": ids.to_numpy(), "file": [_fill(comp.test_images, i) for i in ids]})


def check_layout(source, comp):
    """Hold the description `comp` (CompetitionSettings) against the competition at `source` (a folder, a zip or a
    Listing): the tables, the classes, that the ids name images, and the submission's form and metric. Returns
    (train rows, sample, test rows, classes); raises a PaddyError naming the file, what was found and the setting
    to write."""
    listing = source if isinstance(source, Listing) else Listing.of(source)
    check_tags(comp.form, comp.metric, comp.labels_from, comp.train_images)  # parse_settings' too: for callers without
    train = train_rows(listing, comp)
    if train.empty:
        raise PaddyError(
            f"{listing.where} has no training image where `competition.train_images` ({comp.train_images!r}) "
            f"looks. {_near(listing, comp.train_images.split('{', 1)[0] + 'x')} Set it to where the images are. {INIT}"
        )
    _require_files(listing, train.file, f"training image ({comp.train_images!r}, `competition.train_images`)")
    classes = label_classes(train.label, comp.multi_label)
    if comp.multi_label and len(classes) < 2:
        raise PaddyError(
            f"{listing.where}'s training images have {len(classes)} tag(s) among them "
            f"({', '.join(map(repr, classes)) or 'none'}; {len(train)} images) in `competition.label_column` "
            f"({comp.label_column!r}): a classifier needs at least two. Check that it names the column of tags. {INIT}"
        )
    if len(classes) < 2:
        raise PaddyError(
            f"{listing.where}'s training images all have the label {classes[0]!r} ({len(train)} images): a "
            "classifier needs at least two classes. Check `competition.label_column` (or labels_from): it may name "
            f"the wrong column. {INIT}"
        )
    sample, test = test_rows(listing, comp)
    _require_files(listing, test.file, f"test image ({comp.test_images!r}, `competition.test_images`)")
    check_form(comp, sample, classes, f"{listing.where}/{comp.sample_submission}")
    return train, sample, test, classes


def _require_files(listing, files, what):
    """Refuse when fewer than half the paths of `files` are in the listing: the template is wrong (a few missing
    files are prepare's to leave out, each with its reason)."""
    found = int(files.map(listing.exists).sum())
    if found * 2 < len(files):
        missing = files[~files.map(listing.exists)]
        shown = ", ".join(missing.head(2))
        some = "None" if found == 0 else f"Only {found:,}"
        raise PaddyError(
            f"{some} of the {len(files):,} {what} paths exist{'s' if found == 1 else ''} in {listing.where}: looked "
            f"for {shown}, ... {_near(listing, missing.iloc[0])} Set the template to where an id's image is (e.g. "
            f"train/{{id}}.png). {INIT}"
        )


def value_columns(sample):
    """The sample submission's columns after the id: what a submission sends."""
    return list(sample.columns[1:])


def check_form(comp, sample, classes, where):
    """The submission's form and the metric against the sample's columns and the classes."""
    columns = value_columns(sample)
    if comp.form in ("label", "probability", "tags") and len(columns) != 1:
        raise PaddyError(
            f"{where} has {len(columns)} columns after its ids ({', '.join(columns)}), but `competition.form` is "
            f"{comp.form}, one value per image. Set form to probabilities if they are the classes. {INIT}"
        )
    if comp.form == "probabilities" and set(columns) != set(classes):
        extra, lacking = sorted(set(columns) - set(classes)), sorted(set(classes) - set(columns))
        raise PaddyError(
            f"{where}'s columns after its ids are not the classes of the training data, as `competition.form: "
            f"probabilities` needs (one probability column per class): columns that are no class: "
            f"{', '.join(extra[:8]) or 'none'}; classes without a column: {', '.join(lacking[:8]) or 'none'}. Check "
            f"`competition.label_column` (or labels_from), or set form to label. {INIT}"
        )
    if comp.form == "probability":
        if len(classes) != 2 or comp.positive not in classes:
            raise PaddyError(
                f"`competition.form` is probability (of `competition.positive`, {comp.positive!r}), which needs two "
                f"classes, one of them the positive one; the training data has {len(classes)}: "
                f"{', '.join(classes[:8])}. Set positive to one of them, or form to label or probabilities."
            )
    if comp.multi_label:  # its metric is mean_f<beta> (check_tags)
        _check_sample_tags(sample, classes, where)
        return
    need = {
        "log_loss": ("probabilities", "probability"),
        "roc_auc": ("probability", "probabilities"),
        "mean_roc_auc": ("probabilities",),
    }.get(comp.metric, ("label",))  # LABEL_METRICS: a label
    if comp.form not in need:
        scores = "labels" if comp.metric in LABEL_METRICS else "probabilities"
        raise PaddyError(
            f"`competition.metric` is {comp.metric}, which scores {scores}, but `competition.form` is {comp.form}: "
            f"set form to {' or '.join(need)} (what the sample submission holds), or the metric to the one Kaggle "
            "scores this competition by."
        )
    if comp.metric == "roc_auc" and comp.positive not in classes:
        raise PaddyError(
            f"`competition.metric` is roc_auc, the ROC AUC of one class's probability, but `competition.positive` "
            f"({comp.positive!r}) is not a class of the training data ({', '.join(classes[:8])}): name the class it "
            "scores (1, dog, ...)."
        )
    if comp.metric == "roc_auc" and len(classes) != 2:
        raise PaddyError(
            f"`competition.metric` is roc_auc (binary), but the training data has {len(classes)} classes: set it to "
            "mean_roc_auc (the mean of each class column's ROC AUC) or another metric."
        )
    if comp.metric == "qwk" and not all(re.fullmatch(r"-?\d+", c) for c in classes):
        raise PaddyError(
            f"`competition.metric` is qwk (quadratic weighted kappa), which scores ordered integer grades, but the "
            f"classes are {', '.join(classes[:6])}: set another metric."
        )


def _check_sample_tags(sample, classes, where):
    """The sample's tags against the training ones: Kaggle's samples hold placeholders, so one no training image
    has is said, not refused."""
    # Kaggle's samples hold placeholders (Planet's "primary clear agriculture road water" on every row): a tag no
    # training image has cannot be predicted, but the submission never needs to send it
    sent = {tag for text in sample[value_columns(sample)[0]] for tag in text.split()}
    unseen = sorted(sent - set(classes))
    if unseen:
        print(
            f"warning: {where} sends the tag(s) {', '.join(map(repr, unseen[:8]))}, which no training image has: "
            "taken as the sample's placeholder; the submission sends only tags of the training data. If the tags "
            "should match, check `competition.label_column`."
        )


def check_targets(models, columns, where):
    """Each model's targets after `label` must be columns of the train table (`columns`: its other columns), which
    prepare turns into classes: refused here, before anything is deleted, rather than by train@MODEL."""
    for name, model in models.items():
        unknown = [t for t in model.targets[1:] if t not in columns]
        if unknown:
            raise PaddyError(
                f"`models.{name}.targets` in params.yaml names {', '.join(unknown)}, which {where} does not have: a "
                f"target after label is another categorical column of it ({', '.join(columns) or 'it has none'}). "
                f"Set targets to [label]{' or [label, ' + columns[0] + ']' if columns else ''}."
            )


def read_competition(root, comp):
    """(train rows, test rows, classes) of the competition folder `root`, every `file` made a full path (src)."""
    root = Path(root)
    train, _, test, classes = check_layout(root, comp)
    return (
        train.assign(src=[root / f for f in train.file]).drop(columns="file"),
        test.assign(src=[root / f for f in test.file]).drop(columns="file"),
        classes,
    )


def read_sample_submission(root, comp):
    """The sample submission of the competition folder `root`, every value as text."""
    path = Path(root) / comp.sample_submission
    if not path.is_file():
        raise PaddyError(
            f"{path} is missing: the sample submission (`competition.sample_submission`) gives the test ids and the "
            "submission's columns. Run `dvc repro download`, or check the setting."
        )
    return read_text_csv(path, path)
