"""`paddy lr-find MODEL [-S key=value ...]`: fastai's learning-rate finder on a model of params.yaml, with the data,
augmentation, precision, accumulation and (if train.frozen_epochs > 0) frozen body its training would use.

Writes lr_find/<model>.csv (lr, loss: `dvc plots show lr_find/<model>.csv -x lr -y loss`), lr_find/<model>.png and
lr_find/<model>.json (the suggestions); nothing of the pipeline's outputs changes.
"""

from pathlib import Path

import pandas as pd

from paddy.data.loaders import ItemDataset, create_loader, open_items, resolve_workers
from paddy.data.prepare import read_index, read_targets
from paddy.data.split import read_splits
from paddy.errors import PaddyError
from paddy.files import write_csv, write_json
from paddy.memory.profile import profile_from_params, require_fit, resolve_batches
from paddy.settings.parse import as_hw, check_params, load_params, override
from paddy.training import lr_find
from paddy.training.augment import model_augment
from paddy.training.folds import target_table
from paddy.training.gpus import claim_device
from paddy.training.models import check_archs, create_model
from paddy.training.precision import resolve_precision


def run(args):
    params = override(load_params(), args.overrides)
    check_params(params)
    check_archs(params)
    if args.model not in params["models"]:
        raise PaddyError(f"params.yaml has no `models.{args.model}`; models: {', '.join(params['models'])}.")
    for path in (args.prepared / "index.csv", args.split):
        if not path.exists():
            raise PaddyError(f"{path} does not exist: run `dvc repro split` first (lr-find uses the prepared data).")
    cfg, train = params["models"][args.model], params["train"]
    device = claim_device()
    precision = resolve_precision(train["precision"], device)
    vocab = read_targets(args.prepared)
    batches = Path("data/profile") / f"{args.model}.batches.json"
    micro = cfg["micro_batch"]
    if micro == "auto" and batches.exists():
        micro = resolve_batches(args.model, params, batches, device, vocab)[0]
    elif micro == "auto":  # no profile yet: make one now
        profile = profile_from_params(args.model, params, vocab, device)
        require_fit(profile, ["micro_batch"])
        micro = profile["micro_batch"]
    index, (table, splits) = read_index(args.prepared), read_splits(args.split)
    names = cfg["targets"]
    targets = target_table(table, index, names, vocab)
    rows = (table[splits[0]].to_numpy() == 0).nonzero()[0]  # the first split's training rows
    workers = resolve_workers(train["workers"], device)
    paths = [f"images/train/{i}" for i in table.image_id]
    items = open_items(args.prepared, index, paths, as_hw(cfg["item_size"]), cfg["item_method"], workers)
    loader = create_loader(ItemDataset(items, rows, targets[rows]), train["effective_batch"], device, shuffle=True,
                           drop_last=train["drop_last"], workers=workers, seed=params["seed"])  # fmt: skip
    model = create_model(cfg["arch"], sum(len(vocab[n]) for n in names), cfg["pretrained"], cfg["head"]).to(device)
    augment = model_augment(cfg, train["aug"])
    frozen = train["frozen_epochs"] > 0
    print(f"lr-find {args.model}: {args.num_it} steps of {train['effective_batch']} ({micro} per micro-batch), "
          f"{device.type}, {precision}{', body frozen' if frozen else ''}")  # fmt: skip
    lrs, losses = lr_find.sweep(model, loader, augment, micro, precision, train, frozen, params["seed"],
                                args.start_lr, args.end_lr, args.num_it)  # fmt: skip
    found = lr_find.suggestions(lrs, losses, args.num_it)
    out = args.out / args.model
    write_csv(pd.DataFrame({"lr": lrs, "loss": losses}), out.with_suffix(".csv"))
    write_json(out.with_suffix(".json"), {k: v[0] for k, v in found.items()})
    lr_find.plot(lrs, losses, found, out.with_suffix(".png"))
    for name, (lr, _) in found.items():
        print(f"  {name:<8} {lr:.2e}")
    if not found:
        print("  no suggestion: the sweep stopped too early (the loss diverged at once); lower --start-lr")
    print(f"wrote {out}.csv, .json and .png (train.lr is {train['lr']})")
    return 0
