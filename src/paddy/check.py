"""The check stage's work: the settings against the data source, the machine and the models, before any other stage
deletes its outputs to run again (stages/check.py says why). Each check raises a PaddyError that names the setting."""

from pathlib import Path

from paddy.data.competition import check_targets
from paddy.data.download import check_source
from paddy.data.split import check_cv
from paddy.settings.preflight import check_devices, model_checks_key, passed_before, record_pass
from paddy.training.digests import verify_models

MODELS = Path("data/models")  # train@MODEL's outputs


def check_everything(settings):
    """settings: load_settings()'s, every value already checked on its own."""
    check_devices(settings.train.devices)  # no more DDP processes than this machine has GPUs, or cores
    found = check_source(settings.data, settings.competition)  # the section against the files, safe to extract
    if found is not None:
        counts, columns = found
        multi_label = settings.competition.multi_label  # counts are then images per tag list: check_cv says why
        check_cv(settings.cv, settings.train, counts, f" in data.source {settings.data.source}", multi_label)
        check_targets(settings.models, columns, f"the train table of data.source {settings.data.source}")
    verify_models(MODELS, settings.models)  # a damaged checkpoint is named, not retrained without a word
    key = model_checks_key(settings)
    if passed_before(key):
        print("models: settings, code and packages as when they last passed their checks")
        return
    # the checks that import timm (seconds): only when something they read changed
    from paddy.training.model_checks import check_archs, check_models_train

    scales = settings.train.progressive.scales  # progressive resizing's sizes: each is checked too
    check_archs(settings.models, scales=scales)  # every architecture and size, and that pretrained weights can be had
    check_models_train(
        settings.models, multi_label=settings.competition.multi_label, scales=scales
    )  # every model with its head: one forward and backward on fake tensors
    record_pass(key)
