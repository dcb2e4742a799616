"""Stage train@MODEL: fine-tune one model on every fold/bag; checkpoints, dvclive metrics and learning curves."""

import argparse
from pathlib import Path

from dvclive import Live
from paddy.device import pick_device, resolve_precision
from paddy.errors import exit_on_error
from paddy.fit import train_model
from paddy.models import check_archs
from paddy.params import load_params
from paddy.prepare import read_labels
from paddy.profile import accumulation, resolve_batches


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("prepared_dir")
    parser.add_argument("split_csv")
    parser.add_argument("out_dir")
    parser.add_argument("live_dir")
    parser.add_argument(
        "--batches", type=Path, help="profile@MODEL's choice of batch sizes, read where params say auto"
    )
    args = parser.parse_args()
    params = load_params()
    check_archs(params)
    device = pick_device()
    precision = resolve_precision(params["train"]["precision"], device)
    num_classes = len(read_labels(args.prepared_dir))
    micro, evals = resolve_batches(args.model, params, args.batches, device, num_classes)  # explicit values win
    effective = params["train"]["effective_batch"]
    print(
        f"{args.model}: {device.type}, {precision}, micro-batch {micro} x {accumulation(effective, micro)} "
        f"accumulated to {effective} samples per step, eval batch {evals}"
    )

    # dvcyaml=False: dvc.yaml declares these metrics and plots; letting dvclive rewrite dvc.yaml mid-run corrupts it
    with Live(args.live_dir, dvcyaml=False, save_dvc_exp=False, report=None) as live:

        def on_epoch(split, epoch, metrics):
            live.step = epoch
            for key, value in metrics.items():
                live.log_metric(f"split{split}/{key}", value)
            print(f"split {split} epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

        results = train_model(
            args.model,
            params,
            args.prepared_dir,
            args.split_csv,
            args.out_dir,
            (micro, evals),
            device,
            precision,
            on_epoch,
        )
        live.summary = {f"split{s}/{k}": v for s, m in enumerate(results) for k, v in m.items() if k != "epoch_time_s"}
        live.summary["valid_acc"] = sum(m["valid_acc"] for m in results) / len(results)
        live.summary["train_time_s"] = sum(m["train_time_s"] for m in results)
        live.summary["micro_batch"] = micro
        live.summary["accumulation"] = accumulation(effective, micro)
        live.summary["eval_batch"] = evals
        if device.type == "cuda":
            live.summary["peak_memory_gb"] = max(m["peak_memory_gb"] for m in results)


if __name__ == "__main__":
    main()
