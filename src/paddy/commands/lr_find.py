"""`paddy lr-find MODEL [-S key=value ...] [--unfrozen]`: fastai's learning-rate finder on a model of params.yaml, with
the data, augmentation, precision, accumulation and (if train.frozen_epochs > 0) frozen body its training would use.
--unfrozen (2018 lesson 2's step): train the recipe's frozen epochs first, as training does, then sweep the whole
model from those weights (without frozen epochs: the whole model from its start).

Writes lr_find/<model>.csv (lr, loss: `dvc plots show lr_find/<model>.csv -x lr -y loss`), lr_find/<model>.png and
lr_find/<model>.json (the suggestions); nothing of the pipeline's outputs changes.
"""

from pathlib import Path

from paddy.errors import PaddyError

HELP = "fastai's learning-rate finder on a model's real training step, with suggestions"


def arguments(parser):
    parser.add_argument("model", help="a key of `models` in params.yaml")
    parser.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting for this run only, as `dvc exp run -S` does (repeatable)")  # fmt: skip
    parser.add_argument("--start-lr", type=float, default=1e-7)
    parser.add_argument("--end-lr", type=float, default=10.0)
    parser.add_argument("--num-it", type=int, default=100, help="optimizer steps of the sweep (fastai: 100)")
    parser.add_argument(
        "--unfrozen", action="store_true", help="train the frozen epochs first, then sweep the whole model from there"
    )
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--split", type=Path, default=Path("data/split.csv"))
    parser.add_argument("--out", type=Path, default=Path("lr_find"))


def run(args):
    import pandas as pd

    from paddy.files import write_csv, write_json
    from paddy.memory.profile import resolve_batches
    from paddy.settings import load_settings
    from paddy.training import lr_find
    from paddy.training.gpus import claim_device
    from paddy.training.model_checks import check_archs
    from paddy.training.run import create_run
    from paddy.training.step import seed_everything

    settings = load_settings(overrides=args.overrides)
    check_archs(settings.models)
    settings.model(args.model)
    for path in (args.prepared / "index.csv", args.split):
        if not path.exists():
            raise PaddyError(f"{path} does not exist: run `dvc repro split` first (lr-find uses the prepared data).")
    batches = Path("data/profile") / f"{args.model}.batches.json"  # profile@MODEL's, or profiled now if auto
    run = create_run(settings, args.model, claim_device(), args.prepared, args.split)
    run.micro_batch, run.eval_batch = resolve_batches(run, batches)
    train, data = run.train, run.data
    rows = data.rows(data.splits[0])[0]  # the first split's training rows
    loader = data.loader(rows, train.effective_batch, shuffle=True, drop_last=train.drop_last, seed=settings.seed)
    seed_everything(settings.seed)  # split 0's, as training's
    model = data.create_model()
    frozen = ", body frozen" if train.frozen_epochs > 0 and not args.unfrozen else ""
    if args.unfrozen:
        frozen = ", whole model"
        if train.frozen_epochs:
            print(f"lr-find {args.model}: training the {train.frozen_epochs} frozen epoch(s) first")
            valid = data.loader(data.rows(data.splits[0])[1], run.eval_batch)
            for e, metrics in enumerate(lr_find.train_frozen(run, model, (loader, valid))):
                print(f"  frozen epoch {e + 1}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            frozen += " after the frozen epochs"
        else:
            frozen += " from the start (train.frozen_epochs is 0: nothing to train frozen first)"
    print(f"lr-find {args.model}: {args.num_it} steps of {train.effective_batch} ({run.micro_batch} per micro-batch), "
          f"{run.device.type}, {run.precision}{frozen}")  # fmt: skip
    lrs, losses = lr_find.sweep(run, model, loader, args.start_lr, args.end_lr, args.num_it, args.unfrozen)
    found = lr_find.suggestions(lrs, losses, args.num_it)
    out = args.out / args.model
    write_csv(pd.DataFrame({"lr": lrs, "loss": losses}), out.with_suffix(".csv"))
    write_json(out.with_suffix(".json"), {k: v[0] for k, v in found.items()})
    lr_find.plot(lrs, losses, found, out.with_suffix(".png"))
    for name, (lr, _) in found.items():
        print(f"  {name:<8} {lr:.2e}")
    if not found:
        print("  no suggestion: the sweep stopped too early (the loss diverged at once); lower --start-lr")
    print(f"wrote {out}.csv, .json and .png (train.lr is {train.lr})")
    return 0
