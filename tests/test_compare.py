"""`paddy compare`: experiments from `dvc exp show --json` (injected, in its real shape) joined with the ledger."""

import argparse
import subprocess
import textwrap

import pytest

from paddy import compare, ledger

SLUG = "paddy-disease-classification"


def entry(rev, name, epochs, vit_weight, cv, md5, time_s, peak):
    """One experiment as dvc 3.67 `exp show --json` gives it."""
    oof = {"convnext": cv - 0.02, "vit": cv - 0.01, "ensemble": cv}
    return {
        "rev": rev,
        "name": name,
        "data": {
            "rev": rev,
            "timestamp": "2024-01-01T00:00:00",
            "params": {
                "params.yaml": {
                    "data": {
                        "seed": 42,
                        "train": {"epochs": epochs, "lr": 0.01},
                        "models": {"vit": {"arch": "test_vit", "weight": vit_weight, "size": [160, 160]}},
                    }
                }
            },
            "metrics": {
                "metrics/ensemble.json": {"data": {"oof_acc": oof}},
                "dvclive/vit/metrics.json": {"data": {"train_time_s": time_s, "step": 5}},
                "metrics/profile/vit.json": {"data": {"peak_mb": peak}},
            },
            "deps": {},
            "outs": {"submission.csv": {"hash": md5, "size": 28, "nfiles": None, "use_cache": True}},
            "meta": {},
        },
        "error": None,
    }


def exp_json():
    base = entry("a" * 40, "main", 6, 2, 0.90, "md5-base", 100.0, 900.0)
    base["experiments"] = [
        {"revs": [entry("b" * 40, "vit-x1", 6, 1, 0.92, "md5-x1", 110.0, 950.0)]},
        {"revs": [entry("c" * 40, "long", 12, 2, 0.95, "md5-long", 220.0, 950.0)]},
    ]
    workspace = entry("workspace", None, 12, 2, 0.95, "md5-long", 220.0, 950.0)
    workspace["experiments"] = None
    return [workspace, base]


def write_ledger(path, rows):
    for i, (exp, md5, cv, public) in enumerate(rows):
        status = "complete" if public is not None else "pending"
        ledger.append_row(
            {"experiment": exp, "file_md5": md5, "cv": cv, "public_score": public, "ref": str(i), "status": status},
            path,
        )


def args(tmp_path, *argv):
    parser = argparse.ArgumentParser()
    compare.add_arguments(parser)
    return parser.parse_args(["--ledger", str(tmp_path / "submissions.csv"), *argv])


def test_table_over_experiments_joined_with_ledger(tmp_path):
    write_ledger(tmp_path / "submissions.csv", [("long", "md5-long", 0.95, 0.981), ("vit-x1", "md5-x1", 0.92, None)])
    df = compare.build_table(exp_json(), ledger.read_ledger(tmp_path / "submissions.csv"))
    assert list(df["experiment"]) == ["workspace", "main", "vit-x1", "long"]
    # Only the params that differ are shown; metrics per model and for the ensemble; scores last.
    assert {"train.epochs", "models.vit.weight"} <= set(df.columns) and "seed" not in df.columns
    for col in ("cv.convnext", "cv.vit", "cv.ensemble", "train_time_s.vit", "peak_mb.vit", "public", "private"):
        assert col in df.columns, col
    assert "step.vit" not in df.columns
    long = df.set_index("experiment").loc["long"]
    assert long["public"] == pytest.approx(0.981) and long["cv.ensemble"] == pytest.approx(0.95)
    assert long["train_time_s.vit"] == 220.0 and long["submissions"] == 1
    assert df.set_index("experiment").loc["main", "submissions"] == 0


def test_command_sorts_writes_csv_md_and_correlation(tmp_path, capsys):
    path = tmp_path / "submissions.csv"
    write_ledger(path, [("long", "md5-long", 0.95, 0.981), ("vit-x1", "md5-x1", 0.92, 0.97)])
    a = args(
        tmp_path,
        "--sort",
        "train_time_s.vit",
        "--asc",
        "--csv",
        str(tmp_path / "t.csv"),
        "--md",
        str(tmp_path / "t.md"),
    )
    assert compare.run(a, exp_json=exp_json()) == 0
    out = capsys.readouterr().out
    assert "once" in out and "Pearson" not in out  # two scored rows: no correlation yet
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0].startswith("experiment,rev,") and lines[1].startswith("main,")
    md = (tmp_path / "t.md").read_text()
    assert md.startswith("| experiment | rev |") and "| long |" in md

    # A third scored submission (of an experiment since removed): the correlation appears; the row is kept.
    write_ledger(path, [("gone", "md5-gone", 0.91, 0.96)])
    compare.run(args(tmp_path), exp_json=exp_json())
    out = capsys.readouterr().out
    assert "Pearson r = " in out and "over 3 scored" in out and "gone" in out
    assert out.splitlines()[1].split()[0] in ("workspace", "long")  # default sort: best ensemble CV first


def test_unknown_sort_column(tmp_path):
    with pytest.raises(Exception, match="no such column"):
        compare.run(args(tmp_path, "--sort", "nope"), exp_json=exp_json())


def test_correlation():
    df = ledger.read_ledger("/nonexistent")
    assert compare.correlation(df) is None
    import pandas as pd

    rows = pd.DataFrame({"cv": [0.9, 0.92, 0.95, 0.96], "public_score": [0.91, 0.93, 0.97, None]})
    n, pearson, spearman = compare.correlation(rows)
    assert n == 3 and pearson > 0.9 and spearman == pytest.approx(1.0)


@pytest.mark.slow
def test_real_dvc_exp_show(tmp_path, monkeypatch):
    """The parser against a real `dvc exp show --json` over two experiments (a throwaway repo; a few seconds)."""
    monkeypatch.chdir(tmp_path)
    script = textwrap.dedent(
        """
        import json, yaml
        e = yaml.safe_load(open("params.yaml"))["train"]["epochs"]
        open("submission.csv", "w").write(f"image_id,label\\n1.jpg,blast{e}\\n")
        json.dump({"oof_acc": {"m": 0.9 + e / 100, "ensemble": 0.91 + e / 100}}, open("metrics/ensemble.json", "w"))
        """
    )
    (tmp_path / "make.py").write_text(script)
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 2\n")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  ensemble:\n    cmd: python make.py\n    deps: [make.py]\n    params: [train.epochs]\n"
        "    outs: [submission.csv]\n    metrics:\n    - metrics/ensemble.json:\n        cache: false\n"
    )
    for cmd in (
        "git init -q",
        "git -c user.email=t@t -c user.name=t commit -q --allow-empty -m init",
        "dvc init -q",
        "dvc repro -q",
        "git add -A",
        "git -c user.email=t@t -c user.name=t commit -q -m run",
        "dvc exp run -q -S train.epochs=5 -n ep5",
    ):
        subprocess.run(cmd, shell=True, check=True, capture_output=True)
    df = compare.build_table(compare.exp_show(), ledger.read_ledger("submissions.csv"))
    table = df.set_index("experiment")
    assert table.loc["ep5", "cv.ensemble"] == pytest.approx(0.96) and table.loc["ep5", "train.epochs"] == 5
    assert table.loc["workspace", "cv.ensemble"] == pytest.approx(0.96)
