"""A competition's description (params.yaml's `competition` section) inferred from its files: what `paddy init`
writes.

Everything is read from a Listing (paddy.data.listing): the file names and the CSVs, never an image. The sample
submission gives the test ids and what a submission sends; the train table (or class folders, or file names like
cat.0.jpg) gives the training ids and labels; the images are found by looking the ids up among the file names.
Where the files allow two readings (two tables that could hold the labels, two label columns, a sample of 0s that
is a class or a probability), inference stops with the readings and the `key=value` that picks one; a choice the
files do not make (the metric without Kaggle's record, the class a probability is of) is made and said to be a
guess. Fields the user gives (`given`) win over anything inferred. A label column of space-separated tags (Planet's
`haze primary`) with a sample that sends text is a multi-label competition: form tags, metric mean_f2 unless told.
"""

import re
from collections import Counter, defaultdict
from fnmatch import fnmatch

from paddy.data.competition import class_order, is_categorical, tag_classes
from paddy.data.listing import is_image
from paddy.errors import PaddyError
from paddy.settings.schema import LABEL_METRICS, PROBABILITY_METRICS, fbeta_of

FIELDS = ("train_table", "id_column", "labels_from", "label_column", "train_images", "test_images",
          "sample_submission", "form", "positive", "metric")  # fmt: skip
# Archives Listing cannot open: their images are invisible until extracted
UNREADABLE = {".7z": "7z x {name}  (or: pip install py7zr; python -m py7zr x {name})", ".rar": "unrar x {name}",
              ".tar": "tar -xf {name}", ".tar.gz": "tar -xzf {name}", ".tgz": "tar -xzf {name}",
              ".tar.xz": "tar -xJf {name}"}  # fmt: skip
LOOKUPS = 2000  # ids looked up per table to place its images: enough to be sure, cheap at any size


# Kaggle's names for its metrics (a competition record's evaluation_metric) -> paddy's, tried in order on the name
# in lower case: the column-wise AUC before the plain one, macro F1 before the others
KAGGLE_METRICS = (
    (r"columnwise.*(area under|auc)|mean.*column.*auc", "mean_roc_auc"),
    (r"area under.*receiver|\bauc\b|\broc\b", "roc_auc"),
    (r"kappa", "qwk"),
    (r"log ?loss|logarithmic loss|cross.?entropy|multi ?class loss", "log_loss"),
    (r"macro.*f1|f1.*macro", "f1_macro"),
    (r"f.?score.?beta|f.?beta|\bf2\b", "mean_f2"),  # Planet's mean F2 over images (a form tags metric)
    (r"f1|f-score|fscore|f score", "f1_micro"),  # Kaggle's "Mean F1-Score" of one label per image is micro F1
    (r"accuracy", "accuracy"),
)


def metric_from_kaggle(name):
    """paddy's metric for Kaggle's metric name, or None for one paddy does not compute."""
    text = str(name or "").lower()
    return next((ours for pattern, ours in KAGGLE_METRICS if re.search(pattern, text)), None)


def _spread_out(values, n=LOOKUPS):
    """At most n of `values`, evenly spaced: a look at the whole table, not only its first rows."""
    values = list(values)
    return values if len(values) <= n else [values[i * len(values) // n] for i in range(n)]


def _is_probability(text):
    try:
        return 0.0 <= float(text) <= 1.0
    except ValueError:
        return False


def looks_like_tags(column):
    """Whether a column of text holds each row's tags, space-separated (Planet's `haze primary`): most rows more than
    one token, each token on several rows, and the tokens recombining (some row's tags are another's less one, or
    more sets of them than tokens), which a class of several words (`Common Chickweed`, `Sugar beet`) does not do."""
    lengths = [len(text.split()) for text in column]
    sets = {frozenset(text.split()) for text in set(column)}
    tokens = set().union(*sets) if sets else set()
    if not tokens or sum(n > 1 for n in lengths) * 2 <= len(lengths) or sum(lengths) < 2 * len(tokens):
        return False
    return len(sets) > len(tokens) or any(s - {t} in sets for s in sets if len(s) > 1 for t in s)


def _image_index(listing):
    """{name: [paths]}: every image under its file name and under its name without the suffix."""
    index = defaultdict(list)
    for path in listing.files:
        if is_image(path):
            name = path.rsplit("/", 1)[-1]
            index[name].append(path)
            index[name.rsplit(".", 1)[0]].append(path)
    return index


def _templates(image_id, paths, label=None):
    """The templates (train/{id}.jpg, train_images/{label}/{id}) under which `image_id` names one of `paths`."""
    found = set()
    for path in paths:
        folder, _, name = path.rpartition("/")
        if name == image_id:
            leaf = "{id}"
        elif name.startswith(f"{image_id}.") and "." not in name[len(image_id) + 1 :]:
            leaf = "{id}" + name[len(image_id) :]
        else:
            continue
        parent, _, last = folder.rpartition("/")
        if label is not None and last == label:  # the image sits in its class's folder
            folder = f"{parent}/{{label}}" if parent else "{label}"
        found.add(f"{folder}/{leaf}" if folder else leaf)
    return found


def _best_template(rows, index, prefer):
    """(template, ids it places, ids looked up) for (id, label) rows: the template placing the most, then the one
    whose path says `prefer` (train, test: the same names may be in both folders), then the shortest."""
    rows = _spread_out(rows)
    counts = Counter()
    for image_id, label in rows:
        counts.update(_templates(image_id, index.get(image_id, ()), label))
    if not counts:
        return None, 0, len(rows)
    template = max(counts, key=lambda t: (counts[t], prefer in t.lower(), -len(t)))
    return template, counts[template], len(rows)


class _Inference:
    """One inference: the listing, the user's fields, and what was found and guessed, line by line."""

    def __init__(self, listing, metric, given, source, metric_note):
        self.listing, self.metric, self.given, self.source = listing, metric, dict(given or {}), source
        self.metric_note = metric_note
        self.found, self.guessed = [], []
        self.index = _image_index(listing)
        self.csvs = sorted(f for f in listing.files if f.lower().endswith(".csv"))
        self.unreadable = sorted(f for f in listing.files if f.lower().endswith(tuple(UNREADABLE)))
        self.unplaced = []  # tables whose ids name no image: said if no folders hold the labels either
        self.extras = []

    def pick(self, key, value):
        return f"`paddy init {self.source} {key}={value}`"

    def ambiguous(self, what, key, readings):
        """Stop: the files allow several readings; each reading as (value, what it means)."""
        shown = "; ".join(f"{key}={value}: {meaning}" for value, meaning in readings)
        raise PaddyError(
            f"{self.listing.where} can be read {len(readings)} ways: {what} (`competition.{key}`): {shown}. Pick the "
            f"one that is right, e.g. {self.pick(key, readings[0][0])}, or edit `competition.{key}` in params.yaml."
        )

    def unreadable_note(self):
        if not self.unreadable:
            return ""
        name = self.unreadable[0].rsplit("/", 1)[-1]
        how = next(v for k, v in UNREADABLE.items() if name.lower().endswith(k)).format(name=name)
        return (
            f" It holds {', '.join(self.unreadable[:4])}: archives paddy cannot open (it reads folders and .zip "
            f"files). Extract them into the competition folder (`{how}`), then run `paddy init FOLDER`."
        )

    def coco_error(self):
        jsons = sorted(f for f in self.listing.files if f.lower().endswith(".json"))
        if jsons:
            raise PaddyError(
                f"{self.listing.where} describes its images in JSON ({', '.join(jsons[:3])}: COCO-style metadata, as "
                "the herbarium and iNaturalist competitions ship) and has no CSV table of labels, class folders or "
                "labelled file names. paddy enters CSV and folder layouts only (docs/competitions.md): convert the "
                "metadata to a train.csv of image ids and labels beside the images, then run `paddy init FOLDER`."
            )

    # ------------------------------------------------------------------------------------------------------------
    def sample_submission(self):
        if "sample_submission" in self.given:
            return self.given["sample_submission"]

        def named(pattern):
            return [f for f in self.csvs if fnmatch(f.rsplit("/", 1)[-1].lower(), pattern)]

        found = named("*sample*submission*.csv") or named("*submission*.csv")
        if not found:
            self.coco_error()
            raise PaddyError(
                f"{self.listing.where} has no sample submission (a CSV named like sample_submission.csv): it gives "
                f"the test ids and what a submission sends, and paddy reads the competition from it. CSVs there: "
                f"{', '.join(self.csvs[:6]) or 'none'}. {self.listing.tops_line()}{self.unreadable_note()} If one "
                f"of them is it, name it: {self.pick('sample_submission', 'FILE.csv')}."
            )
        if len(found) > 1:
            self.ambiguous("which file is the sample submission", "sample_submission",
                           [(f, f"{len(self.listing.csv(f))} rows") for f in found])  # fmt: skip
        return found[0]

    def test_images(self, ids):
        if "test_images" in self.given:
            return self.given["test_images"]
        template, placed, looked = _best_template([(i, None) for i in ids], self.index, "test")
        if template is None:
            self.coco_error()
            raise PaddyError(
                f"The sample submission's ids ({', '.join(ids[:3])}, ...) name no image in {self.listing.where}: no "
                f"file is called like one, with or without a suffix. {self.listing.tops_line()}"
                f"{self.unreadable_note()} If the test images are there under other names, give their template: "
                f"{self.pick('test_images', 'test/{id}.jpg')}."
            )
        self.found.append(f"test images: {template} ({placed:,} of {looked:,} ids looked up found)")
        return template

    # ------------------------------------------------------------------------------------------------------------
    def id_column(self, df):
        """The column whose values name image files (with or without their suffix), and the share it names."""
        best, share = None, 0.0
        for column in df.columns:
            values = _spread_out(df[column], 200)
            hits = sum(v in self.index for v in values) / max(len(values), 1)
            if hits > share:
                best, share = column, hits
        return (best, share) if share >= 0.5 else (None, share)

    def train_table(self, sample_name, test_ids):
        """(name, table, id column) of the train table, or (None, None, None) when there is none."""
        if self.given.get("labels_from") in ("folders", "file_names"):
            return None, None, None
        if "train_table" in self.given:
            name = self.given["train_table"]
            if not name:
                return None, None, None
            df = self.listing.csv(name, "the train table, `competition.train_table`")
            column = self.given.get("id_column") or self.id_column(df)[0] or df.columns[0]
            self.require_columns(name, df, [column], "id_column")
            return name, df, column
        test_ids = set(test_ids)
        tables, unplaced = [], []
        for name in self.csvs:
            if name == sample_name or "submission" in name.rsplit("/", 1)[-1].lower():
                continue
            df = self.listing.csv(name)
            if len(df.columns) < 2 or df.empty:  # e.g. test.csv: the test ids only
                continue
            column = self.given["id_column"] if "id_column" in self.given else self.id_column(df)[0]
            if column in df and set(_spread_out(df[column], 200)) <= test_ids:  # the test images' own table
                continue
            (tables if column else unplaced).append((name, df, column))
        if len(tables) > 1:
            preferred = [t for t in tables if re.search("train|label", t[0].rsplit("/", 1)[-1].lower())]
            tables = preferred if len(preferred) == 1 else tables
        if len(tables) > 1:
            readings = [(name, f"ids in {c}, columns {', '.join(df.columns)}") for name, df, c in tables]
            self.ambiguous("more than one CSV holds image ids and other columns: which is the train table",
                           "train_table", readings)  # fmt: skip
        if tables:
            return tables[0]
        self.unplaced = unplaced
        return None, None, None

    def labels(self, df, id_column, values):
        """(labels_from, label_column, the training labels) from the train table, given the sample's value
        columns `values`."""
        others = [c for c in df.columns if c != id_column]
        if "id_column" in self.given:
            self.require_columns("the train table", df, [id_column], "id_column")
        if "label_column" in self.given:
            column = self.given["label_column"]
            self.require_columns(
                "the train table", df, column if isinstance(column, list) else [column], "label_column"
            )
            if isinstance(column, list):
                return "one_hot", column, self.one_hot_labels(df, column)
            return self.given.get("labels_from", "column"), column, df[column] if column in df else None
        if len(values) == 1 and values[0] in others:
            self.found.append(f"label column: {values[0]} (named like the sample submission's)")
            return "column", values[0], df[values[0]]
        if len(values) >= 2 and set(values) <= set(others):
            hot = [c for c in others if c in values]
            labels = self.one_hot_labels(df, hot)
            if labels is not None:
                self.found.append(f"labels: one-hot columns {', '.join(hot)} (the sample submission's columns)")
                return "one_hot", hot, labels
        if len(values) >= 2:
            naming = [c for c in others if len(set(df[c])) >= 2 and set(df[c]) <= set(values)]
            if len(naming) == 1:
                self.found.append(f"label column: {naming[0]} (its values are the sample submission's columns)")
                return "column", naming[0], df[naming[0]]
        tagged = [c for c in others if looks_like_tags(df[c])]
        if len(values) == 1 and len(tagged) == 1:
            self.found.append(f"label column: {tagged[0]} (each row's tags, space-separated)")
            return "column", tagged[0], df[tagged[0]]
        hot = [c for c in others if set(df[c]) <= {"0", "1", "0.0", "1.0"}]
        if len(hot) >= 2 and (labels := self.one_hot_labels(df, hot)) is not None:
            self.found.append(f"labels: one-hot columns {', '.join(hot)} (0/1, one per row)")
            return "one_hot", hot, labels
        candidates = [c for c in others if is_categorical(df[c])]
        sent = set()
        if len(values) == 1:
            sent = {v for v in self.sample[values[0]] if v and not _is_probability(v)}
        if sent and len(candidates) > 1:  # the sample's placeholder label is a class of one of them
            candidates = [c for c in candidates if sent <= set(df[c])] or candidates
        if len(candidates) == 1:
            self.guessed.append(
                f"label column: {candidates[0]}, the train table's only column that looks like classes (the sample "
                f"submission's column, {', '.join(values)}, is not in it); {self.pick('label_column', 'COLUMN')} "
                "sets another"
            )
            return "column", candidates[0], df[candidates[0]]
        if len(candidates) > 1:
            self.ambiguous(
                "more than one column of the train table could hold the labels", "label_column",
                [(c, f"{df[c].nunique()} classes such as {', '.join(class_order(df[c])[:3])}") for c in candidates],
            )  # fmt: skip
        raise PaddyError(
            f"The train table's columns ({', '.join(df.columns)}) hold no labels paddy recognises: none is named "
            f"like the sample submission's ({', '.join(values)}), holds its columns as values, or is a 0/1 column per "
            f"class, and none looks like classes (a few values repeated over the rows). Name it: "
            f"{self.pick('label_column', 'COLUMN')}."
        )

    def require_columns(self, table, df, columns, key):
        """Refuse a `key=value` naming columns the table does not have (a typo), listing the ones it has."""
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise PaddyError(
                f"`{key}` names {', '.join(missing)}, which {table} does not have: its columns are "
                f"{', '.join(df.columns)}. Pick one of them: {self.pick(key, df.columns[-1])}."
            )

    @staticmethod
    def one_hot_labels(df, columns):
        """Each row's class from 0/1 columns with exactly one 1 per row, or None if they are not one-hot."""
        if not all(set(df[c]) <= {"0", "1", "0.0", "1.0"} for c in columns):
            return None
        hot = df[list(columns)].astype(float)
        if not (hot.sum(axis=1) == 1).all():
            return None
        return hot.idxmax(axis=1)

    def train_images(self, ids, labels):
        if "train_images" in self.given:
            return self.given["train_images"]
        rows = list(zip(ids, labels)) if labels is not None else [(i, None) for i in ids]
        template, placed, looked = _best_template(rows, self.index, "train")
        if template is None:
            raise PaddyError(
                f"The train table's ids ({', '.join(list(ids)[:3])}, ...) name no image in {self.listing.where}: no "
                f"file is called like one, with or without a suffix. {self.listing.tops_line()}"
                f"{self.unreadable_note()} Give the template: {self.pick('train_images', 'train/{id}.jpg')}."
            )
        self.found.append(f"training images: {template} ({placed:,} of {looked:,} ids looked up found)")
        return template

    # ------------------------------------------------------------------------------------------------------------
    def unlabelled_images(self, test_template):
        """(labels_from, train_images template, the training labels) from class folders or file names."""
        test_folder = test_template.rsplit("/", 1)[0] + "/" if "/" in test_template else ""
        paths = [p for p in self.listing.files if is_image(p) and not (test_folder and p.startswith(test_folder))]
        classes_of, per_folder = defaultdict(Counter), defaultdict(list)
        for path in paths:
            parts = path.split("/")
            if len(parts) >= 2:
                classes_of["/".join(parts[:-2])][parts[-2]] += 1
            per_folder["/".join(parts[:-1])].append(parts[-1])
        folders = {parent: c for parent, c in classes_of.items() if len(c) >= 2}
        named = {}  # folders of <label>.<anything>.<ext>: few labels, each on many files
        for folder, names in per_folder.items():
            prefixes = Counter(n.split(".", 1)[0] for n in names if n.count(".") >= 2)
            if sum(prefixes.values()) == len(names) and 2 <= len(prefixes) <= len(names) // 2:
                named[folder] = prefixes
        readings = [(f"{p}/{{label}}/{{id}}" if p else "{label}/{id}", "folders", c) for p, c in folders.items()]
        readings += [(f"{f}/{{id}}" if f else "{id}", "file_names", c) for f, c in named.items()]
        if "train_images" in self.given:
            readings = [r for r in readings if r[0] == self.given["train_images"]] or readings
        if not readings:
            self.coco_error()
            tables = ", ".join(n for n, _, _ in self.unplaced)
            raise PaddyError(
                f"{self.listing.where} has no training labels paddy recognises: "
                + (f"the ids of {tables} name no image file, and " if tables else "no CSV table of image ids, ")
                + "no folder of class folders (train/<class>/<image>), no folder of images named by class "
                f"(cat.0.jpg). {self.listing.tops_line()}{self.unreadable_note()} Describe it by hand: e.g. "
                f"{self.pick('train_table', 'train.csv')} id_column=... label_column=... train_images=..."
            )
        if len(readings) > 1:
            self.ambiguous("which folder holds the training images", "train_images",
                           [(t, f"{how}, {len(c)} classes") for t, how, c in readings])  # fmt: skip
        template, how, counts = readings[0]
        what = "class folders" if how == "folders" else "file names <label>.<n>.<ext>"
        self.found.append(f"training images: {template} (labels from {what}: {len(counts)} classes)")
        return how, template, list(counts.elements())

    # ------------------------------------------------------------------------------------------------------------
    def tags_form(self, labels_from, column, labels, values):
        """Whether the submission sends each image's tags (form tags): the user says so, or the label column holds
        space-separated tags (looks_like_tags) and the sample's one column sends text, not probabilities."""
        if "form" in self.given:
            return self.given["form"] == "tags"
        if labels_from != "column" or labels is None or len(values) != 1 or not looks_like_tags(labels):
            return False
        sent = set(self.sample[values[0]]) - {""}
        if sent and all(_is_probability(v) for v in sent):
            return False
        counts = Counter(tag for text in labels for tag in text.split())
        self.found.append(
            f"form: tags (the train table's {column} holds each image's tags, space-separated: {len(counts)} tags, "
            f"the most frequent {', '.join(t for t, _ in counts.most_common(3))}; the sample submission sends text)"
        )
        return True

    def form(self, values, classes):
        """(form, positive) from what the sample sends against the classes."""
        if "form" in self.given:
            form = self.given["form"]
        elif len(values) >= 2:
            if set(values) != set(classes):
                extra, lacking = sorted(set(values) - set(classes)), sorted(set(classes) - set(values))
                raise PaddyError(
                    f"The sample submission has {len(values)} columns after its ids, but they are not the training "
                    f"classes (columns that are no class: {', '.join(extra[:5]) or 'none'}; classes without a "
                    f"column: {', '.join(lacking[:5]) or 'none'}). paddy sends one label, one probability, or one "
                    f"probability per class. If another column holds the labels, {self.pick('label_column', 'COLUMN')}."
                )
            form = "probabilities"
            self.found.append(f"form: probabilities (the sample submission's {len(values)} columns are the classes)")
        else:
            form = self.single_column_form(values[0], classes)
        positive = self.given.get("positive", "")
        if form == "probability" and not positive:
            positive = "1" if set(classes) == {"0", "1"} else class_order(classes)[-1]
            why = "of 0/1 classes, 1" if positive == "1" else "the class sorting last"
            self.guessed.append(
                f"positive: {positive} (the sample does not say which class's probability it sends; {why}); "
                f"{self.pick('positive', class_order(classes)[0])} sets the other"
            )
        return form, positive

    def single_column_form(self, column, classes):
        sent = set(self.sample[column]) - {""}
        probabilities = bool(sent) and all(_is_probability(v) for v in sent)
        if not sent:
            self.found.append(f"form: label (the sample submission's {column} is empty)")
            return "label"
        if sent <= set(classes) and not (probabilities and len(classes) == 2):
            self.found.append(f"form: label (the sample submission sends classes: {', '.join(sorted(sent)[:3])})")
            return "label"
        if sent <= set(classes):  # 0 or 1 of classes {0, 1}: a class, or the probability of one
            if self.metric in PROBABILITY_METRICS:
                self.found.append(
                    f"form: probability (the sample sends {', '.join(sent)}, the metric is {self.metric})"
                )
                return "probability"
            if self.metric in LABEL_METRICS:
                self.found.append(f"form: label (the sample sends {', '.join(sent)}, the metric is {self.metric})")
                return "label"
            self.ambiguous(
                f"the sample submission sends {', '.join(sorted(sent))} and the classes are {', '.join(classes)}: a "
                "class per image, or the probability of one",
                "form",
                [("label", "a class per image (metric accuracy)"),
                 ("probability", f"the probability of {class_order(classes)[-1]} (metric log_loss, or roc_auc: "
                  f"{self.pick('metric', 'roc_auc')})")],
            )  # fmt: skip
        if probabilities and len(classes) == 2:
            self.found.append(f"form: probability (the sample sends {', '.join(sorted(sent)[:2])} for two classes)")
            return "probability"
        if probabilities:
            raise PaddyError(
                f"The sample submission sends one probability per image ({', '.join(sorted(sent)[:3])}), but the "
                f"training data has {len(classes)} classes ({', '.join(classes[:5])}): one probability answers "
                "two classes only. Check the labels: " + self.pick("label_column", "COLUMN") + "."
            )
        self.guessed.append(
            f"form: label (the sample submission's values, {', '.join(sorted(sent)[:3])}, are no class: taken as "
            "placeholders)"
        )
        return "label"

    def metric_of(self, form):
        if form == "tags":
            return self.tags_metric()
        if fbeta_of(self.metric) is not None and "metric" not in self.given:  # Kaggle's F2 of one label per image
            self.metric_note = f"Kaggle's record says {self.metric}, a metric of tags, but the form is {form}"
            self.metric = None
        if self.metric:
            return self.metric
        metric = "accuracy" if form == "label" else "log_loss"
        self.guessed.append(
            f"metric: {metric}, from the form ({self.metric_note or 'no Kaggle record says how it is scored'}); "
            f"{self.pick('metric', 'NAME')} sets it: accuracy, log_loss, f1_micro, f1_macro, roc_auc, mean_roc_auc "
            "or qwk"
        )
        return metric

    def tags_metric(self):
        """form tags' metric: the one given or a tags metric of the record, else mean_f2 (Planet's), or micro_f1
        (iMet 2020's) where Kaggle's record names a micro F1, mean_f1 another F1, said to be a guess."""
        if fbeta_of(self.metric) is not None or "metric" in self.given:
            return self.metric  # a given one that scores no tags is the check's to refuse, naming the fix
        metric = {"f1_micro": "micro_f1", "f1_macro": "mean_f1"}.get(self.metric, "mean_f2")
        why = (
            f"Kaggle's record names {self.metric}, which paddy computes for one label per image"
            if self.metric
            else self.metric_note or "no Kaggle record says how it is scored"
        )
        what = (
            "F1 of every image's tags pooled, as iMet 2020 is scored"
            if metric == "micro_f1"
            else f"the mean over images of F{metric.removeprefix('mean_f')} between the true and the predicted tags, "
            "as Planet is scored by F2"
        )
        self.guessed.append(f"metric: {metric}, {what} ({why}); {self.pick('metric', 'mean_f1')} sets another")
        return metric

    def extra_targets(self, df, id_column, label_column):
        labels = set(label_column) if isinstance(label_column, list) else {label_column}
        extras = [c for c in df.columns if c != id_column and c not in labels and is_categorical(df[c])]
        shown = ", ".join(f"{c} ({df[c].nunique()} values)" for c in extras) or "none"
        self.found.append(f"extra target columns (models.<name>.targets: [label, ...]): {shown}")
        return extras

    # ------------------------------------------------------------------------------------------------------------
    def run(self):
        unknown = sorted(set(self.given) - set(FIELDS))
        if unknown:
            raise PaddyError(
                f"{', '.join(unknown)} is not a field of the competition section; `paddy init SOURCE key=value` sets "
                f"one of {', '.join(FIELDS)}."
            )
        self.metric = self.given.get("metric", self.metric)
        sample_name = self.sample_submission()
        self.sample = self.listing.csv(sample_name, "the sample submission")
        if len(self.sample.columns) < 2:
            raise PaddyError(
                f"{self.listing.where}/{sample_name} has the columns {list(self.sample.columns)}: a sample submission "
                "holds an id column, then what is sent per image."
            )
        ids, values = self.sample.iloc[:, 0].tolist(), list(self.sample.columns[1:])
        self.found.append(f"sample submission: {sample_name} ({len(ids):,} test ids; columns {', '.join(values[:5])}"
                          f"{f' and {len(values) - 5} more' if len(values) > 5 else ''})")  # fmt: skip
        test_template = self.test_images(ids)
        table, df, id_column = self.train_table(sample_name, ids)
        extras, tags = [], False
        if table:
            self.found.append(f"train table: {table} ({len(df):,} rows; ids in {id_column})")
            labels_from, label_column, labels = self.labels(df, id_column, values)
            tags = self.tags_form(labels_from, label_column, labels, values)
            folders = None if labels is None or tags else list(labels)  # tags: no class folders to look for
            train_template = self.train_images(df[id_column].tolist(), folders)
            extras = self.extra_targets(df, id_column, label_column)
        else:
            id_column, label_column = "", ""
            labels_from, train_template, labels = self.unlabelled_images(test_template)
        classes = [] if labels is None else tag_classes(labels) if tags else class_order(labels)
        form, positive = ("tags", self.given.get("positive", "")) if tags else self.form(values, classes)
        section = dict(
            train_table=table or "", id_column=id_column, labels_from=labels_from, label_column=label_column,
            train_images=train_template, test_images=test_template, sample_submission=sample_name, form=form,
            positive=positive, metric=self.metric_of(form),
        )  # fmt: skip
        section.update(self.given)
        if self.unreadable:
            self.found.append(f"not read: {', '.join(self.unreadable)} (archives paddy cannot open)")
        self.extras = extras  # the section has no field for them: `paddy init` says them
        return {key: section[key] for key in FIELDS}


def infer(listing, metric=None, given=None, source="SOURCE", metric_note=""):
    """(the competition section as a dict in params.yaml's order, lines found, lines guessed) for the competition
    `listing` (paddy.data.listing.Listing). `metric`: the Kaggle record's (or the generator's), else a guess from the
    form, said with `metric_note` (why there is none); `given`: competition fields the user set (`paddy init SOURCE
    key=value`), which win over inference; `source`: how the user named the competition, for the commands the
    messages suggest. Raises a PaddyError that lists the readings where the files allow several."""
    inference = _Inference(listing, metric, given, source, metric_note)
    section = inference.run()
    return section, inference.found, inference.guessed
