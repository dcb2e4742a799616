"""Stage profile@MODEL: peak GPU memory of the training and prediction steps per batch size (measured on CUDA,
estimated without), and the micro-batch, accumulation and eval batch that fit `profile.budget_gb`. Named so it never
shadows the standard `profile` module."""

import argparse
from pathlib import Path

from paddy import charts
from paddy.errors import exit_on_error, say_on_interrupt
from paddy.files import write_json
from paddy.memory import display
from paddy.memory.profile import ESTIMATE, batches_of, profile_settings, require_fit, write_profile
from paddy.settings import load_settings
from paddy.training.gpus import claim_device
from paddy.training.model_checks import check_archs
from paddy.training.run import create_run


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="a key of `models` in params.yaml")
    parser.add_argument("targets_json", help="each target's classes: the head's size")
    parser.add_argument("out_json", help="the profile: tables, device, choices")
    parser.add_argument("batches_json", help="what train takes from the profile: the batch sizes set to auto")
    parser.add_argument("summary_json", help="the choices and the peak at each candidate, in short")
    parser.add_argument("plot_png", help="for `dvc plots show`: peak per batch size against the limit")
    args = parser.parse_args()
    say_on_interrupt(f"profile@{args.model}", "Its outputs are still the last profile's (written at the end).")
    settings = load_settings()
    check_archs(settings.models)
    run = create_run(settings, args.model, claim_device(), Path(args.targets_json).parent)
    profile = profile_settings(run)
    print(display.format_table([profile]))
    # Only `auto` depends on the choice; an explicit batch size always wins, so there a warning is enough.
    auto = [k for k, v in batches_of(profile, settings).items() if k != "device"]
    require_fit(profile, auto)
    for key in {"micro_batch", "eval_batch"} - set(auto):
        if profile[key] is None:
            print(f"warning: {args.model}'s explicit {key} does not fit profile.budget_gb at any candidate")
    write_profile(profile, settings, args.out_json, args.batches_json)
    write_json(args.summary_json, display.summary_of(profile))
    source = "estimated for a CUDA card" if profile["device"] == ESTIMATE else f"measured on {profile['device']}"
    title = f"{args.model} ({profile['arch']}): peak memory per batch\n{source}, {display.precision_label(profile)}"
    charts.memory(display.plot_rows(profile), profile["limit_gb"], args.plot_png, title)


if __name__ == "__main__":
    main()
