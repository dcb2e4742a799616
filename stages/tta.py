"""Stage tta@MODEL: TTA probabilities for the test set (averaged over folds/bags) and out-of-fold rows."""

import argparse
from pathlib import Path

from paddy.errors import exit_on_error
from paddy.files import write_csv
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
    write_csv(test, Path(args.out_dir) / "test_probs.csv", float_format="%.6f")
    write_csv(oof, Path(args.out_dir) / "oof_probs.csv", float_format="%.6f")
    print(f"{args.out_dir}: {len(test)} test and {len(oof)} out-of-fold rows")


if __name__ == "__main__":
    main()
