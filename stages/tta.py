"""Stage tta@MODEL: TTA probabilities for the test set (averaged over folds/bags) and out-of-fold rows."""

import argparse

from paddy.errors import exit_on_error
from paddy.predict.tables import write_table
from paddy.predict.tta import predict_model
from paddy.settings import load_settings
from paddy.training.gpus import claim_device
from paddy.training.models import check_archs
from paddy.training.precision import resolve_precision


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prepared_dir")
    parser.add_argument("split_csv")
    parser.add_argument("ckpt_dir")
    parser.add_argument("out_dir")
    args = parser.parse_args()
    settings = load_settings()
    check_archs(settings.models)
    device = claim_device()  # a GPU no other run holds, or the CPU
    precision = resolve_precision(settings.train.precision, device)
    test, oof = predict_model(settings, args.prepared_dir, args.split_csv, args.ckpt_dir, device, precision)
    for kind, table in (("test", test), ("oof", oof)):
        write_table(args.out_dir, kind, table.ids, table.probs, table.classes)
    print(f"{args.out_dir}: {len(test.ids)} test and {len(oof.ids)} out-of-fold rows")


if __name__ == "__main__":
    main()
