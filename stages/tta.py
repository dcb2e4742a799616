"""Stage tta@MODEL: TTA probabilities for the test set (averaged over folds/bags) and out-of-fold rows; with several
folds/bags, each one's own test probabilities too (test_<split>: the pseudo stage's labels for that split)."""

import argparse
from pathlib import Path

from paddy.errors import exit_on_error, say_on_interrupt
from paddy.files import built_beside
from paddy.predict.tables import write_table
from paddy.predict.tta import predict_model
from paddy.settings import load_settings
from paddy.training.gpus import claim_device
from paddy.training.model_checks import check_archs
from paddy.training.run import checkpoint_run


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prepared_dir")
    parser.add_argument("split_csv")
    parser.add_argument("ckpt_dir")
    parser.add_argument("out_dir")
    args = parser.parse_args()
    say_on_interrupt(f"tta@{Path(args.ckpt_dir).name}", f"{args.out_dir} is still the last complete one.")
    settings = load_settings()
    check_archs(settings.models)
    device = claim_device()  # a GPU no other run holds, or the CPU
    test, oof, per_split = predict_model(
        checkpoint_run(settings, args.ckpt_dir, device, args.prepared_dir, args.split_csv), args.ckpt_dir, True
    )
    tables = [("test", test), ("oof", oof)]
    if len(per_split) > 1:  # one split's own table is `test` itself
        tables += [(f"test_{split}", table) for split, table in per_split.items()]
    with built_beside(args.out_dir) as out:  # swapped in whole: Ctrl-C or an error keeps the last good one
        for kind, table in tables:
            write_table(out, kind, table.ids, table.probs, table.classes)
    print(f"{args.out_dir}: {len(test)} test and {len(oof)} out-of-fold rows")


if __name__ == "__main__":
    main()
