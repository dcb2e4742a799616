"""Each setting is declared once (paddy.settings.schema); params.yaml, dvc.yaml and docs/settings.md follow it.

Adding a setting is its declaration, its default in params.yaml and the code that reads it; these tests name any
other place a new setting needs (a dvc.yaml stage's `params:` that lists keys one by one, docs/settings.md)."""

import re
from pathlib import Path

import pytest
import yaml

from paddy.settings import load_settings, parse_settings, read_params
from paddy.settings.docs import PATH as SETTINGS_MD
from paddy.settings.docs import leaves, settings_markdown
from paddy.settings.schema import MODEL_KEYS, ModelSettings, Settings, settings_of

ROOT = Path(__file__).resolve().parents[2]
DECLARED = dict(leaves(Settings))  # dotted name -> Field, models excluded
MODEL_FIELDS = settings_of(ModelSettings)
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
SCHEMA = "src/paddy/settings/schema.py"


def params_comments(text):
    """{dotted key: its comment} of a params.yaml: the comment lines just above the key (at its indent), then its
    own."""
    out, stack, above = {}, [], []
    for line in text.splitlines():
        if m := re.match(r"^(\s*)#\s?(.*)$", line):
            above.append((len(m.group(1)), m.group(2).strip()))
            continue
        if not (m := re.match(r"^(\s*)([A-Za-z_]\w*):(.*)$", line)):
            above = []
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, key)]
        parts = [c for i, c in above if i == indent] + ([rest.split("#", 1)[1].strip()] if "#" in rest else [])
        out[".".join(k for _, k in stack)] = " ".join(parts)
        above = []
    return out


def test_params_yaml_holds_every_declared_default_and_nothing_else():
    params, settings = read_params(ROOT / "params.yaml"), load_settings(ROOT / "params.yaml")
    for dotted, f in DECLARED.items():
        node = params
        for part in dotted.split("."):
            assert isinstance(node, dict) and part in node, f"params.yaml lacks `{dotted}` (declared in {SCHEMA})"
            node = node[part]
        value = settings
        for part in dotted.split("."):
            value = getattr(value, part)
        declared = f"its declaration ({SCHEMA}) says {f.default!r}"
        assert value == f.default, f"params.yaml's `{dotted}` is {value!r}; {declared}"


def test_params_yaml_shows_each_setting_with_its_declared_comment():
    comments = params_comments((ROOT / "params.yaml").read_text())
    first = next(iter(read_params(ROOT / "params.yaml")["models"]))  # the models are examples: the first shows them
    wanted = dict(DECLARED) | {f"models.{first}.{k}": f for k, f in MODEL_FIELDS.items()}
    for dotted, f in wanted.items():
        doc = " ".join(f.metadata["doc"].split())
        assert doc, f"`{dotted}` has no comment in its declaration ({SCHEMA}): say what it is there"
        assert comments.get(dotted) == doc, (
            f"params.yaml's comment on `{dotted}` is {comments.get(dotted)!r}; its declaration ({SCHEMA}) says "
            f"{doc!r}: make them the same (the comment above the key, then the one after it)"
        )


def _expand(entry):
    """A dvc.yaml `params:` entry -> the declared settings it names."""
    if entry.startswith("models.${key}."):
        return {f"models.*.{entry.rsplit('.', 1)[1]}"}
    if entry == "models":
        return {f"models.*.{k}" for k in MODEL_KEYS}
    named = {d for d in DECLARED if d == entry or d.startswith(f"{entry}.")}
    assert named, f"dvc.yaml lists `{entry}`, which is no setting (declared in {SCHEMA})"
    return named


@pytest.mark.parametrize("stage", [s for s in STAGES if s != "check"])
def test_each_stage_reruns_on_the_settings_declared_for_it(stage):
    body = STAGES[stage].get("do", STAGES[stage])
    listed = set().union(*[_expand(e) for e in body.get("params", [])])
    declared = {d for d, f in DECLARED.items() if stage in f.metadata["stages"]}
    declared |= {f"models.*.{k}" for k, f in MODEL_FIELDS.items() if stage in f.metadata["stages"]}
    assert not declared - listed, (
        f"dvc.yaml's stage `{stage}` does not list {sorted(declared - listed)} in its `params:`, though their "
        f"declarations ({SCHEMA}) say it reruns on them: add them to dvc.yaml (models.* as models.${{key}}.<name>)"
    )
    assert not listed - declared, (
        f"dvc.yaml's stage `{stage}` lists {sorted(listed - declared)} in its `params:`, but their declarations "
        f"({SCHEMA}) do not name `{stage}` among their stages: add it there, or remove them from dvc.yaml"
    )


def test_the_check_stage_reads_the_whole_file():
    assert STAGES["check"]["params"] == [{"params.yaml": None}]


def test_docs_settings_md_is_generated_from_the_declarations():
    assert (ROOT / SETTINGS_MD).read_text() == settings_markdown(), (
        f"{SETTINGS_MD} is not what the declarations give: run `python -m paddy.settings.docs`"
    )


def test_a_bad_value_gets_the_error_its_declaration_makes():
    params = read_params(ROOT / "params.yaml")
    for dotted, value, words in [
        ("train.epochs", 0, "it must be an integer at least 1 and at most 1000"),
        ("train.aug.do_flip", "yes", "it must be true or false"),
        ("cv.scheme", "loo", "it must be one of kfold, bag"),
        ("kaggle.kernel", "A", "it must be a kernel slug"),
    ]:
        *parents, last = dotted.split(".")
        bad = yaml.safe_load(yaml.safe_dump(params))
        node = bad
        for part in parents:
            node = node[part]
        node[last] = value
        with pytest.raises(Exception, match=re.escape(f"`{dotted}` in params.yaml is {value!r}; {words}")):
            parse_settings(bad)
