"""Every measured figure in README.md and docs/ is read from a committed results file or dated with its commit.

CHECKED lists the doc phrases that print a figure from a committed file (the default pipeline's metrics/ and dvclive/,
a benchmark's results): the test fails when the file changes and the doc does not, naming the doc line, file and key.
Any other paragraph, list or table with a measured figure (seconds, minutes, GB, images/s, %, a 3-4 decimal score)
says `measured at <commit>`, and that commit is in this history. A table, or a block after an intro ending in ":",
is dated by the block before it; a paragraph right after a dated table by the table. SETTINGS are phrases that hold
no measurement (defaults, limits, targets), left out of the search.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MEASURED = re.compile(
    r"(?<![\w.])\d[\d,]*(?:\.\d+)? ?(?:s|min|h|hours?|GB|GiB|MB|kB|KB|images/s|%)(?![\w/])"  # times, sizes, rates
    r"|(?<![\w.-])[01]\.\d{3,4}(?!\d)"  # scores printed to 3 or 4 decimals
)
MARK = re.compile(r"measured at (?:commits? )?([0-9a-f]{7})\b", re.IGNORECASE)

E, R, H = "metrics/ensemble.json", "metrics/report.json", "benchmarks/results/headroom.json"
ENS, PERF, REP = "docs/ensemble.md", "docs/performance.md", "docs/report.md"
# (doc, phrase with a format field per figure, committed file, the figures' keys); whitespace is compared loosely.
CHECKED = [
    (
        ENS,
        "| resnet alone | 1 | 0 | {:.4f} | {:.4f} | | | {:.3f} |",
        E,
        "oof_acc.resnet oof_loss.resnet test_acc.resnet",
    ),
    (ENS, "| vit alone | 0 | 1 | {:.4f} | {:.4f} | | | {:.3f} |", E, "oof_acc.vit oof_loss.vit test_acc.vit"),
    (
        ENS,
        "| params (`models.<name>.weight`) | {:.3f} | {:.3f} | {:.4f} | {:.4f} | | | {:.3f} |",
        E,
        "params.weights.resnet params.weights.vit params.oof_acc params.oof_loss params.test_acc",
    ),
    (
        ENS,
        "| fit | {:.3f} | {:.3f} | {:.4f} | {:.4f} | {:.4f} | {:.4f} | **{:.3f}** |",
        E,
        "fit.weights.resnet fit.weights.vit fit.oof_acc fit.oof_loss fit.cv_acc fit.cv_loss fit.test_acc",
    ),
    *[  # the headroom table: seed, then TTA / plain for resnet, vit and the ensemble (runs: 3 a seed)
        (
            ENS,
            f"| {seed} |" + " {:.3f} / {:.3f} |" * 2 + " **{:.3f}** / {:.3f} |",
            H,
            " ".join(f"runs.{3 * i + m}.test_acc_{k}" for m in range(3) for k in ("tta", "plain")),
        )
        for i, seed in enumerate([42, 1, 2, 3, 4])
    ],
    (
        ENS,
        "| mean (sd) | {:.3f} (0.015) | {:.3f} (0.013) | {:.3f} (0.016) |",
        H,
        "summary.resnet.tta_mean summary.vit.tta_mean summary.ensemble.tta_mean",
    ),
    (
        "docs/training.md",
        "the committed run scores {:.3f} (resnet), {:.3f} (vit) and {:.3f} (ensemble) on the test set",
        E,
        "test_acc.resnet test_acc.vit test_acc.ensemble",
    ),
    (PERF, "it gives {:.3f} valid (`dvclive/vit/metrics.json`)", "dvclive/vit/metrics.json", "valid_acc"),
    (PERF, "and {:.3f} on the test set (`metrics/ensemble.json`)", E, "test_acc.vit"),
    (
        PERF,
        "`loader_images_per_s_per_core={:.1f}`",
        "benchmarks/results/throughput_loader_cpu.json",
        "loader_images_per_s_per_core",
    ),
    ("docs/memory.md", "(1 - profile.headroom)`, {:.1f} GB by default", "metrics/profile/vit.json", "limit_gb"),
    (REP, "the ensemble gets {:.3f} of the 160 out-of-fold images right", R, "oof_score.ensemble"),
    (REP, "bacterial_leaf_streak has a recall of {:.2f} (read", R, "recall.ensemble.bacterial_leaf_streak"),
    *[
        (REP, f"{name} {{:.2f}} (read", R, f"recall.ensemble.{name}")
        for name in ("bacterial_panicle_blight", "downy_mildew", "brown_spot")
    ],
    (
        REP,
        "hispa and tungro have a recall of {:.2f}, {:.2f} and {:.2f}",
        R,
        "recall.ensemble.dead_heart recall.ensemble.hispa recall.ensemble.tungro",
    ),
]

# Phrases that hold no measurement: settings and defaults, Kaggle's limits, the targets, examples.
SETTINGS = (
    "4% wrong training labels|4% of training images|4% of the training images|16 GB card|about 1 GB|several 1s|"
    "12 hours a session|at 11.5 h|about 20 GB|30 GPU hours|900 images/s|35 % MFU|48 KB PNG|`+0.0500` better|"
    "`-0.0100` worse|`0.999`"
).split("|")


def value(file, key):
    data = json.loads((ROOT / file).read_text())
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def loose(text):
    return " ".join(text.split())


def expected(template, file, keys):
    return loose(template.format(*(value(file, key) for key in keys.split())))


def blocks(path):
    """(first line, text) of each paragraph, list and table of a markdown file; code blocks and headings left out."""
    found, lines, start, fenced = [], [], 0, False
    for number, line in enumerate([*path.read_text().splitlines(), ""], 1):
        fenced = fenced != line.startswith("```")
        skip = fenced or line.startswith(("```", "#")) or not line.strip()
        if lines and (skip or line.startswith("|") != lines[-1].startswith("|")):
            found.append((start, "\n".join(lines)))
            lines = []
        if not skip:
            start = start if lines else number
            lines.append(line)
    return found


@pytest.mark.parametrize("doc, template, file, keys", CHECKED, ids=[f"{c[0]}:{c[3].split()[0]}" for c in CHECKED])
def test_a_figure_from_a_committed_file_is_the_one_there(doc, template, file, keys):
    text = (ROOT / doc).read_text()
    want = expected(template, file, keys)
    if want not in loose(text):
        anchor = loose(max(re.split(r"\{[^}]*\}", template), key=len))
        line = next((n for n, t in enumerate(text.splitlines(), 1) if anchor in loose(t)), "?")
        figures = ", ".join(f"{key} = {value(file, key)!r}" for key in keys.split())
        pytest.fail(f"{doc}:{line} should read {want!r}: update it from {file} ({figures})")


def test_every_measured_figure_is_checked_or_dated():
    checked = [expected(*c[1:]) for c in CHECKED]
    undated = []
    for path in DOCS:
        previous, previous_dated = "", False
        for line, text in blocks(path):
            bare = loose(text)
            for phrase in [*SETTINGS, *checked]:
                bare = bare.replace(phrase, "")
            follows = previous.rstrip().endswith(":") or text.startswith("|") or previous.startswith("|")
            dated = bool(MARK.search(loose(text))) or (previous_dated and follows)
            figures = MEASURED.findall(bare)
            if figures and not dated:
                undated.append(f"{path.relative_to(ROOT)}:{line}: {', '.join(figures[:6])}")
            previous, previous_dated = text, dated
    assert not undated, (
        "say `measured at <commit>` where these figures were measured, or add them to CHECKED with the committed "
        "file they come from:\n" + "\n".join(undated)
    )


def git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def test_every_measurement_mark_names_a_commit_of_this_history():
    if git("rev-parse", "--is-shallow-repository").stdout.strip() != "false":
        pytest.skip("not a whole git clone: the commits cannot be looked up")
    missing = [
        f"{path.relative_to(ROOT)}: {commit}"
        for path in DOCS
        for commit in MARK.findall(loose(path.read_text()))
        if git("merge-base", "--is-ancestor", commit, "HEAD").returncode
    ]
    assert not missing, "`measured at` a commit that is not in this history:\n" + "\n".join(missing)
