"""Stage train@MODEL: fine-tune one model on every fold/bag; checkpoints, dvclive metrics and learning curves
(paddy.train). Interrupted, the same command or `dvc repro` continues from the checkpoint in --resume-dir;
with train.devices N > 1 it starts itself again under torchrun as N DDP processes."""

import argparse
from pathlib import Path

from paddy.errors import exit_on_error
from paddy.train import train_stage


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("prepared_dir")
    parser.add_argument("split_csv")
    parser.add_argument("out_dir")
    parser.add_argument("live_dir")
    parser.add_argument("--batches", type=Path, help="profile@MODEL's batch sizes, for auto")
    parser.add_argument("--resume-dir", type=Path, help="checkpoints to continue an interrupted run from")
    train_stage(parser.parse_args())


if __name__ == "__main__":
    main()
