"""Stage profile@MODEL: peak GPU memory per micro-batch (measured on CUDA, estimated without), and the micro-batch
and gradient accumulation that fit `profile.budget_gb`. Named so it never shadows the standard `profile` module."""

import argparse

import pandas as pd

from paddy import memory
from paddy.device import pick_device
from paddy.errors import exit_on_error
from paddy.fileio import write_csv, write_json
from paddy.params import load_params


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="a key of `models` in params.yaml")
    parser.add_argument("labels_json", help="the label vocabulary: its length is the head size")
    parser.add_argument("out_json", help="the profile: table, device, chosen micro-batch and accumulation")
    parser.add_argument("metrics_json", help="figures for `dvc exp show`")
    parser.add_argument("plot_csv", help="bars for `dvc plots`: peak per micro-batch against the limit")
    args = parser.parse_args()
    params = load_params()
    num_classes = memory.read_num_classes(args.labels_json)
    profile = memory.profile_from_params(args.model, params, num_classes, pick_device())
    write_json(args.out_json, profile)
    write_json(args.metrics_json, memory.metrics_of(profile))
    write_csv(pd.DataFrame(memory.plot_rows(profile)), args.plot_csv)
    print(memory.format_table([profile]))
    # Only `auto` depends on the choice; an explicit micro-batch always wins, so there a warning is enough.
    if params["models"][args.model]["micro_batch"] == "auto":
        memory.require_fit(profile)
    elif profile["micro_batch"] is None:
        print(
            f"warning: {args.model} does not fit profile.budget_gb at any micro-batch; training uses the explicit one"
        )


if __name__ == "__main__":
    main()
