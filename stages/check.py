"""Stage check: every setting in params.yaml, once, before any other stage deletes its outputs to run again.

DVC removes a stage's outputs before running it, git-tracked metrics included, so a bad value found by a later
stage would cost what that stage had written. Every other stage depends on this one's output, whose content never
changes: the check runs on every repro (always_changed, dvc.yaml says why), then only the stages whose own settings
or inputs changed run.
"""

import argparse
from pathlib import Path

from paddy.data.competition import check_targets
from paddy.data.download import check_source
from paddy.data.split import check_cv
from paddy.errors import exit_on_error, say_on_interrupt
from paddy.files import write_text
from paddy.settings import load_settings
from paddy.settings.preflight import check_devices, model_checks_key, passed_before, record_pass
from paddy.training.digests import verify_models

MODELS = Path("data/models")  # train@MODEL's outputs


@exit_on_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", help="written once every setting passed; the same text every time")
    args = parser.parse_args()
    say_on_interrupt("check", "It writes nothing but data/checked, which the next repro writes again.")
    settings = load_settings()  # every setting's presence, type and range; no unknown key
    check_devices(settings.train.devices)  # no more DDP processes than this machine has GPUs, or cores
    found = check_source(settings.data, settings.competition)  # the section against the files, safe to extract
    if found is not None:
        counts, columns = found
        check_cv(settings.cv, settings.train, counts, f" in data.source {settings.data.source}")  # split, train's
        check_targets(settings.models, columns, f"the train table of data.source {settings.data.source}")
    verify_models(MODELS, settings.models)  # a damaged checkpoint is named, not retrained without a word
    key = model_checks_key(settings, [Path(__file__)])
    if passed_before(key):
        print("models: settings, code and packages as when they last passed their checks")
    else:  # the checks that import timm (seconds): only when something they read changed
        from paddy.training.model_checks import check_archs, check_models_train

        check_archs(settings.models)  # every architecture and size, and that pretrained weights can be had
        check_models_train(settings.models)  # every model with its head: one forward and backward on fake tensors
        record_pass(key)
    write_text(args.out, "params.yaml passed every check\n")


if __name__ == "__main__":
    main()
