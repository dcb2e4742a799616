"""`paddy init SOURCE [key=value ...]`: enter a competition. Its files are read (paddy.data.describe: the CSVs and
file names, no image decoded) into params.yaml's `competition` section, with data.source and data.competition;
then `dvc repro` trains on it and makes its submission.

SOURCE: a Kaggle slug (the zip downloaded into the cache once, the metric read from Kaggle's record of it), a folder
or .zip laid out like the competition, `kaggle` (data.competition's slug), or `synthetic` (the generated competition
of data.synthetic's layout). key=value sets a competition field the files leave open or that inference got wrong
(form=probability, label_column=breed, metric=roc_auc; one-hot columns comma-separated). The result is checked as
the check stage checks it (the settings, then the description against the files) before anything is written, and
params.yaml keeps every comment.
"""

import re

HELP = "enter a competition: describe its files (a Kaggle slug, a folder, a .zip or synthetic) in params.yaml"
SLUG = re.compile(r"[a-z0-9][a-z0-9-]*[a-z0-9]")  # a Kaggle competition's slug: its address's last part
SLUG_LIKE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)+")  # a folder name taken for a slug: words joined by hyphens
SHOWN_CLASSES = 10


def arguments(parser):
    parser.add_argument("source", help="a Kaggle competition's slug, a folder or .zip laid out like it, kaggle "
                        "(data.competition) or synthetic (data.synthetic's layout)")  # fmt: skip
    parser.add_argument("fields", nargs="*", metavar="key=value",
                        help="competition fields that win over what is inferred, e.g. form=probability "
                        "label_column=breed metric=roc_auc (one-hot columns: label_column=a,b,c)")  # fmt: skip
    parser.add_argument("--params", default="params.yaml", help="params file to write (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="print the section and what was found; write nothing")


def run(args, client=None, cache_dir=None):
    """`client` and `cache_dir` replace the Kaggle API and the zip cache in tests."""
    enter(args.source, args.fields, args.params, args.dry_run, client=client, cache_dir=cache_dir)


def parse_fields(items):
    """key=value items -> {field: value}; a comma-separated label_column is a list (one_hot's columns)."""
    from paddy.errors import PaddyError

    given = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PaddyError(
                f"`{item}` is not key=value: `paddy init SOURCE key=value` sets a competition field, e.g. "
                "form=probability or label_column=breed."
            )
        key = key.removeprefix("competition.")
        given[key] = [v.strip() for v in value.split(",")] if key == "label_column" and "," in value else value
    return given


def kaggle_metric(slug, client):
    """(paddy's metric or None, a note: Kaggle's name for it, or why there is none) from Kaggle's record."""
    from paddy.data.describe import metric_from_kaggle
    from paddy.errors import PaddyError
    from paddy.kaggle.api import evaluation_metric, make_client

    try:
        name = evaluation_metric(client or make_client(), slug)
    except PaddyError as e:
        return None, f"Kaggle's record of {slug} could not be read: {e}"
    if not name:
        return None, f"Kaggle's record of {slug} names no metric"
    ours = metric_from_kaggle(name)
    if ours is None:
        return None, f"Kaggle scores {slug} by {name!r}, which paddy does not compute: choose the nearest"
    return ours, name


def _synthetic(params, folder):
    """(listing, metric, slug) of the generated competition of params' data.synthetic, tiny: only the layout
    matters, so tiny images and a few of each class."""
    from paddy.data import synthetic
    from paddy.data.listing import Listing
    from paddy.errors import PaddyError

    raw = params.get("data", {}).get("synthetic", {})
    layout, classes = raw.get("layout", "paddy"), raw.get("classes", 0)
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 0:
        raise PaddyError(f"`data.synthetic.classes` is {classes!r}; it must be 0 (the layout's own count) or more.")
    names = synthetic.class_names(layout, classes)
    synthetic.make_competition(
        folder, folder.parent / "truth.csv", n_train=max(len(names), 200), n_test=20, width=16, height=16,
        seed=raw.get("seed", 0) if isinstance(raw.get("seed"), int) else 0, layout=layout, classes=classes,
    )  # fmt: skip
    return Listing.of(folder), synthetic.description(layout, classes)["metric"], synthetic.family(layout).slug


def _yaml_value(value):
    if isinstance(value, list | tuple):
        return "[" + ", ".join(value) + "]"
    return value if value else "''"


def _class_line(train, multi_label=False):
    """The classes with their training images, most first; with multi_label (form tags) the tags, each counted on
    every image that has it."""
    labels = train.label.str.split().explode().dropna() if multi_label else train.label
    counts = labels.value_counts()
    shown = ", ".join(f"{label} {count:,}" for label, count in counts.head(SHOWN_CLASSES).items())
    more = f" and {len(counts) - SHOWN_CLASSES:,} more" if len(counts) > SHOWN_CLASSES else ""
    return f"{len(counts):,} {'tags' if multi_label else 'classes'}: {shown}{more}"


def enter(source, fields=(), params_path="params.yaml", dry_run=False, client=None, cache_dir=None, out=print):
    """Infer the competition at `source`, check it, print what was found and guessed, and (unless dry_run) write
    it into params_path. Returns the section written (a dict)."""
    import copy
    import tempfile
    from pathlib import Path

    from paddy.data.competition import check_layout, target_columns
    from paddy.data.describe import FIELDS, infer
    from paddy.data.listing import Listing
    from paddy.data.synthetic import check_description
    from paddy.errors import PaddyError
    from paddy.kaggle.api import fetch_zip
    from paddy.settings import parse_settings, read_params

    params = read_params(params_path)
    given = parse_fields(fields)
    found_here, guessed_here = [], []  # what init itself found and guessed: data.competition, the metric
    with tempfile.TemporaryDirectory(prefix="paddy-init-") as tmp:
        metric, metric_note = None, ""
        path = Path(source).expanduser()
        if source == "synthetic":
            listing, metric, slug = _synthetic(params, Path(tmp) / "competition")
            data_source = "synthetic"
            layout = params.get("data", {}).get("synthetic", {}).get("layout", "paddy")
            found_here.append(f"data.competition: {slug} (the competition data.synthetic.layout {layout} imitates)")
        elif path.is_dir() or (path.is_file() and path.suffix.lower() == ".zip"):
            listing, data_source = Listing.of(path), source
            name = path.stem if path.is_file() else path.resolve().name
            if SLUG_LIKE.fullmatch(name):
                slug = name
                guessed_here.append(f"data.competition: {slug} (the {'zip' if path.is_file() else 'folder'}'s name)")
            else:
                slug = params.get("data", {}).get("competition", "")
                guessed_here.append(
                    f"data.competition: {slug}, kept ({name!r} is no Kaggle slug); `paddy submit` sends there"
                )
        elif source == "kaggle" or SLUG.fullmatch(source):
            slug = params.get("data", {}).get("competition", "") if source == "kaggle" else source
            listing, data_source = Listing.of(fetch_zip(slug, client=client, cache_dir=cache_dir)), "kaggle"
            metric, metric_note = kaggle_metric(slug, client)
            if metric:
                found_here.append(f"metric: {metric} (Kaggle's record says {metric_note!r})")
                metric_note = ""
        else:
            raise PaddyError(
                f"`paddy init {source}`: {source!r} is no folder, no .zip and no Kaggle slug (lowercase letters, "
                "digits and hyphens, the last part of the competition's address), nor synthetic. Give one of them."
            )
        section, found, guessed = infer(listing, metric=metric, given=given, source=source, metric_note=metric_note)

        # Checked as the check stage checks it, before anything is written: a refused description writes nothing
        new = copy.deepcopy(params)
        new["competition"] = dict(section)
        new.setdefault("data", {}).update(source=data_source, competition=slug)
        settings = parse_settings(new, params_path)
        if data_source == "synthetic":
            check_description(settings.data.synthetic, settings.competition)
        train, _, test, classes = check_layout(listing, settings.competition)

    columns = target_columns(train)
    out(f"paddy init {source}: {listing.where}")
    out(f"  training images: {len(train):,} in {_class_line(train, settings.competition.multi_label)}")
    out(f"  test images: {len(test):,}")
    positive = f" (of {section['positive']})" if section["positive"] else ""
    out(f"  form: {section['form']}{positive}; metric: {section['metric']}")
    for line in found + found_here:
        out(f"  found {line}")
    for line in guessed + guessed_here:
        out(f"  GUESSED {line}")
    for model in settings.models.values():
        lacking = [t for t in model.targets[1:] if t not in columns]
        if lacking:  # the check stage refuses a target the train table has no column for
            out(
                f"  note: models.{model.name}.targets names {', '.join(lacking)}, which this competition's train "
                f"table has no column for: set it to [label]{f' or [label, {columns[0]}]' if columns else ''}"
            )
    out("competition:")
    for key in FIELDS:
        out(f"  {key}: {_yaml_value(section[key])}")
    out(f"data.source: {data_source}; data.competition: {slug}")
    if dry_run:
        out(f"--dry-run: {params_path} is unchanged")
        return section
    write_section(params_path, section, data_source, slug)
    out(f"wrote the competition section, data.source and data.competition into {params_path}; next: dvc repro")
    return section


def write_section(params_path, section, data_source, slug):
    """Write the section and data.source/competition into params_path, keeping every comment and the key order."""
    from dvc.utils.serialize import modify_yaml  # ruamel's round trip: comments and layout survive

    with modify_yaml(params_path) as params:
        if "competition" not in params:
            params["competition"] = {}
        for key, value in section.items():
            _set(params["competition"], key, value)
        _set(params["data"], "source", data_source)
        _set(params["data"], "competition", slug)


def _set(mapping, key, value, indent=2):
    """mapping[key] = value in a ruamel round-trip mapping, a list in flow style ([healthy, rust, scab], as the
    comments show it), its end-of-line comment two spaces after the new value rather than at the old one's column."""
    import io

    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedSeq

    if isinstance(value, list | tuple):
        value = CommentedSeq(value)
        value.fa.set_flow_style()
    mapping[key] = value
    comment = getattr(mapping, "ca", None) and mapping.ca.items.get(key, [None] * 3)[2]
    if comment is not None and comment.value.startswith("#"):
        text = io.StringIO()
        YAML().dump({key: value}, text)  # the line as it will be written
        comment.start_mark.column = indent + len(text.getvalue().splitlines()[0]) + 2
