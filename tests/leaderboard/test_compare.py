"""`paddy compare`: experiments from `dvc exp show --json` (injected, in its real shape) joined with the ledger."""

import json
import subprocess
import textwrap

import pandas as pd
import pytest

from paddy import commands as cli
from paddy.leaderboard import compare, ledger

SLUG = "paddy-disease-classification"


def entry(rev, name, epochs, vit_weight, cv, md5, time_s, peak, params=None):
    """One experiment as dvc 3.67 `exp show --json` gives it."""
    oof = {"convnext": cv - 0.02, "vit": cv - 0.01, "ensemble": cv}
    params = params or {
        "seed": 42,
        "train": {"epochs": epochs, "lr": 0.01},
        "models": {"vit": {"arch": "test_vit", "weight": vit_weight, "size": [160, 160]}},
    }
    return {
        "rev": rev,
        "name": name,
        "data": {
            "rev": rev,
            "timestamp": "2024-01-01T00:00:00",
            "params": {"params.yaml": {"data": params}},
            "metrics": {
                "metrics/ensemble.json": {
                    "data": {
                        "oof_acc": oof,
                        "oof_loss": {"vit": 0.3, "ensemble": 0.2},
                        "test_acc": {"vit": 0.8, "ensemble": 0.9},
                        "test_loss": {"vit": 0.5, "ensemble": 0.4},
                        "fit": {"weights": {"vit": 1.0}, "oof_acc": 0.9},
                    }
                },
                "dvclive/vit/metrics.json": {"data": {"train_time_s": time_s, "step": 5}},
                "metrics/profile/vit.json": {"data": {"peak_gb": peak, "peak_gb_at": {"32": peak}}},
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
    return cli.build_parser().parse_args(["compare", "--ledger", str(tmp_path / "submissions.csv"), *argv])


def test_table_over_experiments_joined_with_ledger(tmp_path):
    write_ledger(tmp_path / "submissions.csv", [("long", "md5-long", 0.95, 0.981), ("vit-x1", "md5-x1", 0.92, None)])
    df = compare.build_table(exp_json(), ledger.read_ledger(tmp_path / "submissions.csv"))
    assert list(df["experiment"]) == ["workspace", "main", "vit-x1", "long"]
    # The params that differ, then accuracy per model and for the ensemble, the ensemble's loss, train time,
    # leaderboard scores last; a memory profile (an old experiment's metrics file), a model's own loss and dvclive's
    # step are not what a competitor compares (`dvc exp show` has them).
    assert list(df.columns) == [
        "experiment", "rev", "models.vit.weight", "train.epochs", "oof_acc.convnext", "oof_acc.vit",
        "oof_acc.ensemble", "oof_loss.ensemble", "test_acc.vit", "test_acc.ensemble", "train_time_s.vit", "public",
        "private", "submissions",
    ]  # fmt: skip
    long = df.set_index("experiment").loc["long"]
    assert long["public"] == pytest.approx(0.981) and long["oof_acc.ensemble"] == pytest.approx(0.95)
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
    assert compare.show_experiments(a, exp_json=exp_json()) == 0
    out = capsys.readouterr().out
    assert "once" in out and "Pearson" not in out  # two scored rows: no correlation yet
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0].startswith("experiment,rev,") and lines[1].startswith("main,")
    md = (tmp_path / "t.md").read_text()
    assert md.startswith("| experiment | rev |") and "| long |" in md

    # A third scored submission (of an experiment since removed): the correlation appears; the row is kept.
    write_ledger(path, [("gone", "md5-gone", 0.91, 0.96)])
    compare.show_experiments(args(tmp_path), exp_json=exp_json())
    out = capsys.readouterr().out
    assert "Pearson r = " in out and "over 3 scored" in out and "gone" in out
    assert out.splitlines()[1].split()[0] in ("workspace", "long")  # default sort: best ensemble CV first


def params_of(**changes):
    """params.yaml's shape with some keys changed ("a.b": value) or added."""
    params = {
        "seed": 42,
        "cv": {"scheme": "bag", "n_splits": 1, "valid_pct": 0.2},
        "train": {"epochs": 15, "lr": 0.01, "weight_decay": 0.01, "compile": "auto", "drop_last": True},
        "models": {"vit": {"arch": "test_vit", "micro_batch": 32, "size": [160, 160], "weight": 2}},
    }
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = params
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return params


def test_every_differing_param_once_in_its_own_format(capsys, tmp_path):
    """The README's experiments: train.epochs alone, kfold, a model added; more than 8 params differ in all."""
    vit2 = {"arch": "test_vit", "pretrained": False, "head": "fastai", "targets": ["label"], "item_size": 160,
            "item_method": "crop", "size": 160, "micro_batch": 32, "weight": 1}  # fmt: skip
    base = entry("a" * 40, "main", 0, 0, 0.90, "m0", 100.0, 1.0, params_of())
    base["experiments"] = [
        {"revs": [entry("b" * 40, "short", 0, 0, 0.91, "m1", 10.0, 1.0, params_of(**{"train.epochs": 1}))]},
        {"revs": [entry("c" * 40, "kfold", 0, 0, 0.92, "m2", 90.0, 1.0,
                        params_of(**{"cv.scheme": "kfold", "cv.n_splits": 5}))]},
        {"revs": [entry("d" * 40, "vit2", 0, 0, 0.93, "m3", 95.0, 1.0,
                        params_of(**{"models.vit2": vit2, "train.weight_decay": 1e-05, "train.drop_last": False}))]},
    ]  # fmt: skip
    df = compare.build_table([base], ledger.read_ledger(tmp_path / "none.csv"))
    shown = list(df.columns[2 : df.columns.get_loc("oof_acc.convnext")])  # between rev and the first metric
    expected = ["cv.n_splits", "cv.scheme", "train.drop_last", "train.epochs", "train.weight_decay"]
    expected += [f"models.vit2.{k}" for k in vit2]
    assert sorted(shown) == sorted(expected) and len(set(df.columns)) == len(df.columns)
    table = df.set_index("experiment")
    assert table.loc["short", "train.epochs"] == "1" and table.loc["main", "train.epochs"] == "15"
    assert table.loc["vit2", "train.weight_decay"] == "1e-05" and table.loc["vit2", "train.drop_last"] == "false"
    assert table.loc["vit2", "models.vit2.targets"] == '["label"]' and pd.isna(table.loc["main", "models.vit2.arch"])

    # The printed table: integers as integers, and a param an experiment lacks as "-".
    compare.show_experiments(args(tmp_path, "--sort", "train_time_s.vit", "--asc"), exp_json=[base])
    lines = capsys.readouterr().out.splitlines()
    head = lines[0].split()
    cells = dict(zip(head, lines[1].split()))  # the shortest train time: experiment "short"
    assert cells["experiment"] == "short" and cells["train.epochs"] == "1" and cells["models.vit2.micro_batch"] == "-"
    cells = dict(zip(head, lines[4].split()))
    assert cells["experiment"] == "main" and cells["models.vit2.micro_batch"] == "-"
    vit2_row = dict(zip(head, next(line for line in lines if line.startswith("vit2")).split()))
    assert vit2_row["models.vit2.micro_batch"] == "32" and vit2_row["cv.n_splits"] == "1"


def test_train_time_in_whole_seconds_and_scores_to_four_decimals():
    df = pd.DataFrame({"oof_acc.vit": [0.98765], "train_time_s.vit": [89.4543], "train_time_s.resnet": [419.38]})
    text = compare.to_text(df).splitlines()[1].split()
    assert text == ["0.9877", "89", "419"]
    assert "| 0.9877 | 89 | 419 |" in compare.to_markdown(df)


def test_unknown_sort_column(tmp_path):
    with pytest.raises(Exception, match="no such column"):
        compare.show_experiments(args(tmp_path, "--sort", "nope"), exp_json=exp_json())


def test_correlation():
    df = ledger.read_ledger("/nonexistent")
    assert compare.correlation(df) is None
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
    assert table.loc["ep5", "oof_acc.ensemble"] == pytest.approx(0.96) and table.loc["ep5", "train.epochs"] == "5"
    assert table.loc["workspace", "oof_acc.ensemble"] == pytest.approx(0.96)


def with_recall(exp, recall):
    """An experiment entry with the report stage's metrics/report.json (recall per source and class)."""
    exp["data"]["metrics"]["metrics/report.json"] = {
        "data": {"ece": {"ensemble": 0.02}, "recall": recall, "support": dict.fromkeys(next(iter(recall.values())), 5)}
    }
    return exp


def per_class_json():
    base = with_recall(
        entry("a" * 40, "main", 6, 2, 0.90, "md5-base", 100.0, 900.0),
        {"ensemble": {"blast": 0.9, "hispa": 0.8, "normal": 1.0}, "vit": {"blast": 0.5, "hispa": 0.5, "normal": 0.5}},
    )
    x1 = with_recall(
        entry("b" * 40, "vit-x1", 6, 1, 0.92, "md5-x1", 110.0, 950.0),
        {"ensemble": {"blast": 0.95, "hispa": 0.7, "normal": 1.0}, "vit": {"blast": 0.6, "hispa": 0.5, "normal": 0.5}},
    )
    old = entry("c" * 40, "old", 12, 2, 0.95, "md5-long", 220.0, 950.0)  # before the report stage existed
    base["experiments"] = [{"revs": [x1]}, {"revs": [old]}]
    return [base]


def test_per_class_recall_side_by_side_with_what_changed_and_the_leaderboard(tmp_path, capsys):
    write_ledger(tmp_path / "submissions.csv", [("vit-x1", "md5-x1", 0.92, 0.975)])
    table, changes = compare.per_class_table(per_class_json(), ledger.read_ledger(tmp_path / "submissions.csv"))
    assert list(table.columns) == ["class", "main", "vit-x1", "vit-x1 vs main", "old", "old vs main"]
    rows = table.set_index("class")
    assert rows.loc["blast", "main"] == pytest.approx(0.9) and rows.loc["hispa", "vit-x1"] == pytest.approx(0.7)
    assert rows["vit-x1 vs main"].tolist()[:3] == ["+0.0500", "-0.1000", "="]
    assert pd.isna(rows.loc["blast", "old"]) and rows["old vs main"].tolist()[:3] == ["-", "-", "-"]
    assert rows.loc["public", "vit-x1"] == pytest.approx(0.975) and pd.isna(rows.loc["public", "main"])
    assert rows.loc["oof_acc.ensemble", "vit-x1"] == pytest.approx(0.92)
    assert changes["vit-x1"] == ([("blast", pytest.approx(0.05))], [("hispa", pytest.approx(-0.1))])
    assert changes["old"] is None

    # The command: two experiments named, in the order given (the first is the reference), a model's own recall.
    a = args(tmp_path, "--per-class", "vit-x1", "main", "--model", "vit", "--md", str(tmp_path / "t.md"))
    assert compare.show_experiments(a, exp_json=per_class_json()) == 0
    out = capsys.readouterr().out
    head = out.splitlines()[1].split()
    assert head == ["class", "vit-x1", "main", "main", "vs", "vit-x1"]
    blast = next(line for line in out.splitlines() if line.startswith("blast")).split()
    assert blast == ["blast", "0.6000", "0.5000", "-0.1000"]
    assert "main vs vit-x1: better none; worse blast -0.1000" in out
    assert (tmp_path / "t.md").read_text().startswith("| class | vit-x1 | main | main vs vit-x1 |")


def test_per_class_refuses_unknown_experiments_and_experiments_without_a_report(tmp_path):
    with pytest.raises(Exception, match="No experiment named nope.*experiments: main, vit-x1, old"):
        compare.show_experiments(args(tmp_path, "--per-class", "nope"), exp_json=per_class_json())
    with pytest.raises(Exception, match="per-class recall.*metrics/report.json.*dvc repro"):
        compare.show_experiments(args(tmp_path, "--per-class", "old"), exp_json=per_class_json())


def test_named_experiments_select_the_plain_table_too(tmp_path):
    write_ledger(tmp_path / "submissions.csv", [("gone", "md5-gone", 0.91, 0.96)])
    df = compare.build_table(exp_json(), ledger.read_ledger(tmp_path / "submissions.csv"), names=["long", "main"])
    assert list(df["experiment"]) == ["long", "main"]  # no workspace, no ledger-only row


def scored(exp, metric, oof, test):
    """The experiment with its ensemble scored by `metric`: oof and test are the ensemble's scores."""
    data = exp["data"]["metrics"]["metrics/ensemble.json"]["data"]
    data |= {
        "metric": metric,
        "oof_score": {"vit": oof + 0.1, "ensemble": oof},
        "test_score": {"vit": test + 0.1, "ensemble": test},
        "fit": {**data["fit"], "oof_score": oof, "cv_score": oof},
        "temperature": {"value": 1.5, "oof_before": oof + 0.1, "oof_after": oof},
    }
    exp["data"]["metrics"]["metrics/report.json"] = {"data": {"metric": metric, "oof_score": {"ensemble": oof}}}
    return exp


def log_loss_json():
    """Three experiments of a log-loss competition: long has the lowest out-of-fold log loss, vit-x1 the highest
    accuracy."""
    base = scored(entry("a" * 40, "main", 6, 2, 0.90, "md5-base", 100.0, 900.0), "log_loss", 0.40, 0.45)
    base["experiments"] = [
        {"revs": [scored(entry("b" * 40, "vit-x1", 6, 1, 0.97, "md5-x1", 110.0, 950.0), "log_loss", 0.50, 0.52)]},
        {"revs": [scored(entry("c" * 40, "long", 12, 2, 0.95, "md5-long", 220.0, 950.0), "log_loss", 0.30, 0.33)]},
    ]
    return [base]


def test_the_competitions_metric_is_shown_by_name_first_and_ranks_the_table(tmp_path, capsys):
    write_ledger(tmp_path / "submissions.csv", [("gone", "md5-gone", 0.25, 0.27)])  # its CV: a log loss
    df = compare.build_table(log_loss_json(), ledger.read_ledger(tmp_path / "submissions.csv"))
    metrics = [c for c in df.columns if "." in c and not c.startswith(("models.", "train."))]
    assert metrics == [
        "oof_log_loss.vit", "oof_log_loss.ensemble", "oof_acc.convnext", "oof_acc.vit", "oof_acc.ensemble",
        "oof_loss.ensemble", "test_log_loss.vit", "test_log_loss.ensemble", "test_acc.vit", "test_acc.ensemble",
        "train_time_s.vit",
    ]  # fmt: skip
    rows = df.set_index("experiment")
    assert rows.loc["long", "oof_log_loss.ensemble"] == 0.30 and rows.loc["main", "test_log_loss.ensemble"] == 0.45
    assert rows.loc["gone", "oof_log_loss.ensemble"] == 0.25 and pd.isna(rows.loc["gone", "oof_acc.ensemble"])
    table = ledger.read_ledger(tmp_path / "submissions.csv").assign(metric="accuracy")  # named by the ledger
    rows = compare.build_table(log_loss_json(), table).set_index("experiment")
    assert rows.loc["gone", "oof_acc.ensemble"] == 0.25 and pd.isna(rows.loc["gone", "oof_log_loss.ensemble"])
    # Best first by default: the lowest log loss, not the highest accuracy; --asc: the worst first
    assert list(compare.sort_table(df)["experiment"]) == ["gone", "long", "main", "vit-x1"]
    assert list(compare.sort_table(df, ascending=True)["experiment"]) == ["vit-x1", "main", "long", "gone"]
    assert list(compare.sort_table(df, "oof_acc.ensemble")["experiment"])[:2] == ["vit-x1", "long"]
    compare.show_experiments(args(tmp_path), exp_json=log_loss_json())
    head = capsys.readouterr().out.splitlines()[0].split()
    assert "oof_log_loss.ensemble" in head and "oof_score.ensemble" not in head


def test_an_accuracy_competition_shows_no_second_accuracy_column():
    df = compare.build_table([scored(entry("a" * 40, "main", 6, 2, 0.9, "m", 1.0, 1.0), "accuracy", 0.9, 0.8)],
                             ledger.read_ledger("/nonexistent"))  # fmt: skip
    assert not [c for c in df.columns if "score" in c or "accuracy" in c] and "oof_acc.ensemble" in df.columns


def test_the_ledgers_cv_is_the_metrics_out_of_fold_score(tmp_path):
    from paddy.leaderboard import submit  # here: the rest of this file does not need `paddy submit`'s imports

    path = tmp_path / "ensemble.json"
    path.write_text(json.dumps({"metric": "log_loss", "oof_score": {"vit": 0.5, "resnet": 0.4, "ensemble": 0.35},
                                "oof_acc": {"vit": 0.8, "resnet": 0.9, "ensemble": 0.91}}))  # fmt: skip
    assert submit.cv_figures(path) == (0.35, "resnet=0.40000;vit=0.50000", "log_loss")
    path.write_text(json.dumps({"oof_acc": {"vit": 0.8, "ensemble": 0.91}}))  # an experiment from before the metric
    assert submit.cv_figures(path) == (0.91, "vit=0.80000", "accuracy")
    assert submit.cv_figures(tmp_path / "none.json") == (None, "", "")


def tags_json():
    """Two experiments of a multi-label competition (mean_f2): the report's recall per tag, the ensemble's mean F2."""
    base = with_recall(
        scored(entry("a" * 40, "main", 6, 2, 0.90, "md5-base", 100.0, 900.0), "mean_f2", 0.88, 0.87),
        {"ensemble": {"clear": 0.95, "haze": 0.6, "water": 0.7}, "vit": {"clear": 0.9, "haze": 0.5, "water": 0.6}},
    )
    x1 = with_recall(
        scored(entry("b" * 40, "vit-x1", 6, 1, 0.99, "md5-x1", 110.0, 950.0), "mean_f2", 0.91, 0.90),
        {"ensemble": {"clear": 0.95, "haze": 0.7, "water": 0.65}, "vit": {"clear": 0.9, "haze": 0.6, "water": 0.6}},
    )
    old = scored(entry("c" * 40, "old", 12, 2, 0.95, "md5-long", 220.0, 950.0), "mean_f2", 0.8, 0.8)  # no report
    base["experiments"] = [{"revs": [x1]}, {"revs": [old]}]
    return [base]


def test_per_class_of_a_multi_label_competition_is_per_tag_beside_its_metric(tmp_path, capsys):
    """report.json keeps recall's shape for tags ({source: {tag: recall}}), so --per-class reads it as it is: one row
    per tag, and the ensemble's out-of-fold mean F2 where a single-label table has its accuracy."""
    table, changes = compare.per_class_table(tags_json(), ledger.read_ledger(tmp_path / "submissions.csv"))
    assert list(table.columns) == ["tag", "main", "vit-x1", "vit-x1 vs main", "old", "old vs main"]
    rows = table.set_index("tag")
    assert rows.index.tolist() == ["clear", "haze", "water", "oof_mean_f2.ensemble", "public"]
    assert rows.loc["oof_mean_f2.ensemble", "vit-x1"] == pytest.approx(0.91)
    assert rows["vit-x1 vs main"].tolist()[:3] == ["=", "+0.1000", "-0.0500"]
    assert changes["vit-x1"] == ([("haze", pytest.approx(0.1))], [("water", pytest.approx(-0.05))])
    assert compare.show_experiments(args(tmp_path, "--per-class"), exp_json=tags_json()) == 0
    out = capsys.readouterr().out
    assert out.startswith("Out-of-fold recall per tag, ensemble") and out.splitlines()[1].split()[0] == "tag"
