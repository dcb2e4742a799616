"""The settings, each declared once: params.yaml's sections as frozen dataclasses whose fields carry the setting's
default, its check (paddy.settings.checks: allowed values, the error a bad one gets), the comment params.yaml shows
and the DVC stages that rerun when it changes (their `params:` in dvc.yaml).

paddy.settings.parse reads params.yaml through these declarations (unknown keys refused, every value checked);
tests/settings/test_settings_declared.py holds params.yaml's defaults and comments and dvc.yaml's `params:` lists
against them; docs/settings.md is generated from them (`python -m paddy.settings.docs`). Adding a setting: declare
it here, give it its default in params.yaml, use it."""

import re
from dataclasses import MISSING, dataclass, field, fields, is_dataclass

from paddy.errors import PaddyError
from paddy.settings.checks import Either, Flag, Number, OneOf, Size, Template, Text

ITEM_METHODS = ("squish", "crop", "pad")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
HEADS = ("fastai", "timm")
LR_GROUPS = ("body_head", "layers")
RECIPES = ("fastai", "sgdr")
CV_SCHEMES = ("kfold", "bag")
DIFFICULTIES = ("easy", "hard")  # paddy.data.synthetic
# paddy.data.synthetic's layout families: each writes a competition laid out like one Kaggle competition
LAYOUTS = (
    "paddy", "cassava", "dog_breed", "dogs_vs_cats", "plant_seedlings", "cactus", "aptos", "plant_pathology", "planet"
)  # fmt: skip
LABELS_FROM = ("column", "one_hot", "folders", "file_names")  # where a competition's training labels are
FORMS = ("label", "probabilities", "probability", "tags")  # what a submission sends per test image
# paddy.metrics computes them: those of a label score the argmax class alone, those of probabilities the columns
LABEL_METRICS = ("accuracy", "f1_micro", "f1_macro", "qwk")
PROBABILITY_METRICS = ("log_loss", "roc_auc", "mean_roc_auc")
METRICS = LABEL_METRICS + PROBABILITY_METRICS
ENSEMBLE_WEIGHTS = ("params", "fit")
TAG_FITS = ("none", "global", "per_tag")  # multi-label thresholds (paddy.tags)
# Kaggle's GPU machines for `paddy kaggle run`: name -> (the API's machine_shape, GPUs). Neither has bf16.
ACCELERATORS = {"t4x2": ("NvidiaTeslaT4", 2), "p100": ("NvidiaTeslaP100", 1)}
# form tags' metrics, a family rather than a list: mean_f<beta> (mean_f2, mean_f1), the mean over images
# of F-beta between the true and the predicted tag sets (Planet's mean F2); micro_f<beta>, F-beta of every (image, tag)
# pair pooled (iMet 2020's micro F1)
# An integer beta: a name with a dot (mean_f0.5) would be a nested key of DVC's metrics and `dvc exp show` columns
TAG_METRIC = re.compile(r"(mean|micro)_f(\d+)")


def fbeta_of(metric):
    """The beta of a mean_f<beta> or micro_f<beta> metric's name (mean_f2 -> 2.0, micro_f1 -> 1.0); None for any other
    metric (and for beta 0, which would score precision alone)."""
    match = TAG_METRIC.fullmatch(metric) if isinstance(metric, str) else None
    beta = float(match[2]) if match else 0.0
    return beta if beta > 0 else None


def tag_average(metric):
    """How a tags metric averages F-beta (paddy.tags.tag_fbeta): micro (micro_f<beta>) or samples (mean_f<beta>)."""
    return "micro" if metric.startswith("micro_") else "samples"


def _metric_ok(value):
    return value in METRICS or fbeta_of(value) is not None


# Upper bounds: what no run can use, refused before it costs hours, memory or a crash
SEED_MAX = 2**31 - 1  # numpy takes seeds below 2**32; the pipeline adds a split's number (and 1000 per split for TTA)
SEED_WHY = " (numpy's seeds are 32-bit; the pipeline adds a split's number to it)"
MAX_SIDE = 4096  # pixels a side: a generated photo, an item, a model's input
MAX_BATCH = 65_536  # samples in one step or one prediction batch
MAX_WORKERS = 256  # processes
INIT = " `paddy init SOURCE` writes this section from the competition's files (docs/competitions.md)."

# The DVC stages a setting reruns (dvc.yaml `params:`); the check stage reads the whole file, so it is not named
SOURCE = ("fingerprint", "download")
FILES = ("download", "prepare", "ensemble")  # where the competition's files are
MODEL = ("profile", "train", "ensemble")  # what a model is: its memory, its training, the ensemble's members
STEP = ("profile", "train")  # what the training step does, so its memory
AUG = ("profile", "train", "tta")  # the augmentation: training, its memory, and the TTA passes


AGAIN = ("train", "tta", "ensemble")  # what the pseudo stage's second round does again: it reruns on their settings


def setting(doc, default=MISSING, check=None, stages=()):
    """A setting's declaration: the comment params.yaml shows, its default, its check, the stages it reruns (the
    pseudo stage among them wherever a stage of AGAIN is)."""
    stages = tuple(stages) + (("pseudo",) if set(stages) & set(AGAIN) and "pseudo" not in stages else ())
    return field(default=default, metadata={"doc": doc, "check": check, "stages": stages})


def section(cls):
    return field(default_factory=cls)


def settings_of(cls):
    """The declared settings of a section: {name: dataclasses.Field}, sections included (their type a dataclass)."""
    return {f.name: f for f in fields(cls) if f.metadata or is_dataclass(f.type)}


def read_by(cls, stage):
    """The names of the settings of section `cls` that DVC stage `stage` reruns on; a section is named when any of
    its settings is."""
    return [
        name
        for name, f in settings_of(cls).items()
        if (read_by(f.type, stage) if is_dataclass(f.type) else stage in f.metadata["stages"])
    ]


@dataclass(frozen=True)
class SyntheticSettings:
    """A generated competition with the real labels, varieties and class imbalance (`data.synthetic`)."""

    n_train: int = setting(
        "training images",
        800, Number(lo=1, hi=10_000_000, integer=True, why=" (generated images)"), SOURCE,
    )  # fmt: skip
    n_test: int = setting(
        "large, so one test image is 0.1 point: seeds, TTA and ensembles differ by a few points here",
        1000, Number(lo=1, hi=10_000_000, integer=True, why=" (generated images)"), SOURCE,
    )  # fmt: skip
    width: int = setting("pixels", 192, Number(lo=1, hi=MAX_SIDE, integer=True, why=" (pixels)"), SOURCE)
    height: int = setting("pixels", 256, Number(lo=1, hi=MAX_SIDE, integer=True, why=" (pixels)"), SOURCE)
    seed: int = setting(
        "of the generated photos and labels", 0, Number(lo=0, hi=SEED_MAX, integer=True, why=SEED_WHY), SOURCE
    )
    difficulty: str = setting(
        "hard: diseases that share a look, normal as the absence of lesions, per-photo shade, distance, lighting, "
        "blur, 4% wrong training labels, so the tiny default models leave room to win (their scores: "
        "docs/ensemble.md) | easy: each disease its own colour and shape (every model is always right: for tests of "
        "the plumbing)",
        "hard", OneOf(DIFFICULTIES), SOURCE,
    )  # fmt: skip
    layout: str = setting(
        "the Kaggle competition whose files it imitates (docs/competitions.md): paddy | cassava | dog_breed | "
        "dogs_vs_cats | plant_seedlings | cactus | aptos | plant_pathology | planet (multi-label tags); after "
        "changing it, `paddy init synthetic`",
        "paddy", OneOf(LAYOUTS), SOURCE,
    )  # fmt: skip
    classes: int = setting(
        "0: the layout's own number of classes (paddy 10, dog_breed 120, ...)",
        0, Number(lo=0, hi=100_000, integer=True, why=" (0: the layout's own number of classes)"), SOURCE,
    )  # fmt: skip


@dataclass(frozen=True)
class DataSettings:
    """Where the competition comes from (`data`): synthetic, kaggle, or a folder or zip laid out like it."""

    source: str = setting(
        "synthetic | kaggle | a path to a folder or .zip laid out like the Kaggle competition",
        "synthetic", Text(empty=False, why=": synthetic, kaggle, or a path to a folder or .zip"), SOURCE,
    )  # fmt: skip
    competition: str = setting(
        "the Kaggle competition's slug: what data.source kaggle downloads and `paddy submit` submits to",
        "paddy-disease-classification", Text(), SOURCE,
    )  # fmt: skip
    synthetic: SyntheticSettings = section(SyntheticSettings)


def _label_column(value):
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class CompetitionSettings:
    """What a competition's files hold and how Kaggle scores it (`competition`; `paddy init` writes it).

    Image paths are templates relative to the competition folder: {id} is an id of the train table (or of the
    sample submission, for the test images), {label} a training image's class folder."""

    train_table: str = setting(
        "the training labels' CSV, in the competition folder; '' for class folders or file names",
        "train.csv", Text(why=" (the training labels' CSV, or empty)"), FILES,
    )  # fmt: skip
    id_column: str = setting(
        "its column of image ids", "image_id", Text(why=" (the train table's column of image ids)"), FILES
    )
    labels_from: str = setting(
        "column (label_column) | one_hot (a 0/1 column per class) | folders ({label}) | file_names",
        "column", OneOf(LABELS_FROM), FILES,
    )  # fmt: skip
    label_column: str | tuple[str, ...] = setting(
        "column: the labels' column; one_hot: [the class columns]; folders, file_names: ''",
        "label", Either(lambda v: isinstance(v, (str, list)), "a text or a list of texts", _label_column), FILES,
    )  # fmt: skip
    train_images: str = setting(
        "where a training image is: {id} its id, {label} its class folder",
        "train_images/{label}/{id}",
        Template(True, "with {id} where an image's id goes and {label} for a class folder, e.g. "
                 "train_images/{label}/{id} or train/{id}.jpg", INIT),
        FILES,
    )  # fmt: skip
    test_images: str = setting(
        "where a test image is: {id} an id of the sample submission",
        "test_images/{id}",
        Template(False, "with {id} where a test image's id goes, e.g. test_images/{id} or test/{id}.jpg", INIT),
        FILES,
    )  # fmt: skip
    sample_submission: str = setting(
        "its first column: the test ids, in the order the submission keeps",
        "sample_submission.csv", Text(empty=False), FILES,
    )  # fmt: skip
    form: str = setting(
        "what is sent per test image: label | probabilities (a column per class) | probability (of positive) | tags "
        "(its tags, space-separated: a multi-label competition, label_column the train table's column of them)",
        # tags changes everything from the classes on: prepare's vocabulary, split's stratification, the loss
        "label", OneOf(FORMS), ("prepare", "split", "profile", "train", "tta", "ensemble", "report"),
    )  # fmt: skip
    positive: str = setting(
        "form probability: the class whose probability is sent (dog, 1, ...)",
        "", Text(), ("train", "ensemble", "report"),
    )  # fmt: skip
    metric: str = setting(
        "what Kaggle scores, and what the metrics, the fitted ensemble weights and `paddy compare` show: accuracy | "
        "log_loss | f1_micro | f1_macro | roc_auc | mean_roc_auc (mean of each class column's ROC AUC) | qwk | "
        "mean_f<beta> (form tags: the mean over images of F-beta between the true and predicted tag sets; mean_f2 "
        "is Planet's) | micro_f<beta> (form tags: F-beta of every image's tags pooled; micro_f1 is iMet 2020's)",
        "accuracy",
        Either(_metric_ok, f"one of {', '.join(METRICS)}, or mean_f<beta> or micro_f<beta> for form tags (mean_f2: "
               "the mean over images of F2 between the true and predicted tags, as Planet scores; micro_f1: F1 of the "
               "tags pooled, as iMet 2020 scores)"),
        ("train", "ensemble", "report"),
    )  # fmt: skip

    @property
    def multi_label(self):
        """A multi-label competition: each image has a set of tags (form tags)."""
        return self.form == "tags"

    @classmethod
    def of(cls, section):
        """The settings of a competition section as params.yaml holds it (label_column a list for one_hot)."""
        return cls(**dict(section, label_column=_label_column(section["label_column"])))


@dataclass(frozen=True)
class PrepareSettings:
    """Pre-resizing the competition's images once, like fastai's resize_images (`prepare`)."""

    max_size: int = setting(
        "longest side after pre-resizing, like fastai's resize_images (256 in the seed, 640 keeps full size)",
        160,
        Number(lo=8, hi=65_500, integer=True, why=" (prepare writes JPEGs, whose sides stop at 65,535 pixels)"),
        ("prepare",),
    )  # fmt: skip
    workers: int = setting("processes", 2, Number(lo=1, hi=MAX_WORKERS, integer=True, why=" (processes)"), ("prepare",))
    max_pixels: int = setting(
        "an image of more pixels is left out as a possible decompression bomb (a small file that decodes to "
        "gigabytes), listed in bad_files.csv: 200 megapixels, a 200 MP phone's photo, is the default",
        200_000_000,
        Number(lo=16 * 16, hi=10**10, integer=True, why=" (an image of more pixels is left out: PIL's guard against "
               "decompression bombs; 200000000 by default)"),
        ("prepare",),
    )  # fmt: skip


@dataclass(frozen=True)
class CVSettings:
    """The split table shared by every model (`cv`): bag, n random stratified validation sets, or kfold, stratified
    folds covering every row."""

    scheme: str = setting(
        "bag: n random stratified splits, one seed each (the seed's bagging) | kfold: stratified k folds",
        "bag", OneOf(CV_SCHEMES), ("split",),
    )  # fmt: skip
    n_splits: int = setting(
        "bags, or folds for kfold (out-of-fold CV over every row: -S cv.scheme=kfold -S cv.n_splits=5)",
        1, Number(lo=1, hi=100, integer=True, why=" (every split trains every model once more: 100 are days of "
                  "training already)"),
        ("split",),
    )  # fmt: skip
    valid_pct: float = setting("bag only", 0.2, Number(lo=0.01, hi=0.99), ("split",))
    seed: int = setting("of the splits", 42, Number(lo=0, hi=SEED_MAX, integer=True, why=SEED_WHY), ("split",))


@dataclass(frozen=True)
class AugmentSettings:
    """fastai's aug_transforms arguments (`train.aug`); the defaults are fastai's."""

    min_scale: float = setting(
        "random resized crop: min_scale..1 of the item's area, aspect ratio 1", 0.75, Number(lo=0.05, hi=1.0), AUG
    )
    do_flip: bool = setting("horizontal flip, p 0.5", True, Flag(), AUG)
    flip_vert: bool = setting(
        "true: any of the 8 flips/rotations by 90 degrees (fastai's Dihedral)", False, Flag(),
        AUG,
    )  # fmt: skip
    max_rotate: float = setting("degrees", 10.0, Number(lo=0.0, hi=180.0), AUG)
    min_zoom: float = setting("zoom: a scale drawn from min_zoom..max_zoom", 1.0, Number(lo=0.1, hi=1.0),
                              AUG)  # fmt: skip
    max_zoom: float = setting("at least min_zoom", 1.1, Number(lo=1.0, hi=4.0), AUG)
    max_warp: float = setting("perspective warp", 0.2, Number(lo=0.0, hi=0.9), AUG)
    max_lighting: float = setting("brightness and contrast", 0.2, Number(lo=0.0, hi=0.9), AUG)
    p_affine: float = setting("probability of each of warp, rotate, zoom", 0.75, Number(lo=0.0, hi=1.0), AUG)
    p_lighting: float = setting("probability of each of brightness, contrast", 0.75, Number(lo=0.0, hi=1.0), AUG)


def _scales_ok(value):
    return (isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1
                                            for v in value) and value == sorted(set(value)))  # fmt: skip


def _epochs_ok(value):
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1000
                                           for v in value)  # fmt: skip


@dataclass(frozen=True)
class ProgressiveSettings:
    """Progressive resizing (`train.progressive`; the 2018 lessons' "train small, then set the data to a bigger size
    and keep training"): fine_tune phases at growing sizes, the same weights carried across (docs/techniques.md)."""

    scales: tuple = setting(
        "the sizes of the phases before the full-size one, as fractions of models.<name>.size, growing, each below "
        "1 (e.g. [0.5]: half the size, then the full size); []: the model's size only",
        (),
        Either(_scales_ok, "a list of growing fractions between 0 and 1, e.g. [0.5] or [0.5, 0.75] (the phases' "
               "sizes before the full-size one, as fractions of models.<name>.size), or [] for none", tuple),
        STEP,
    )  # fmt: skip
    epochs: tuple = setting(
        "the epochs (after the frozen ones) of each of those phases, one per scale; the last, full-size phase "
        "trains train.epochs. Each phase is a whole fine_tune: the schedule restarts, as fastai's does when called "
        "again.",
        (),
        Either(_epochs_ok, "a list of whole numbers of epochs (1 to 1000), one per entry of "
               "train.progressive.scales, e.g. [5]", tuple),
        ("train",),
    )  # fmt: skip


@dataclass(frozen=True)
class TrainSettings:
    """How every model trains (`train`): fastai's fine_tune recipe, batches, precision, devices."""

    recipe: str = setting(
        "recipe fastai: the seed's `vision_learner(dls, arch).fine_tune(epochs, lr, freeze_epochs, lr_mult)`, step "
        "for step (docs/training.md): frozen_epochs of one-cycle (pct_start 0.99, div 25) training the head, the "
        "body's norm layers at lr/10; then one-cycle over everything (pct_start 0.3, div 5) with the body at "
        "lr/2/lr_mult and the head at lr/2. Adam(0.9->sched, 0.99, eps 1e-5), decoupled weight decay, none on norm "
        "layers and biases. recipe sgdr: 2018's fastai 0.7 fit with cycle_len and cycle_mult: frozen_epochs "
        "one-epoch cosine cycles training the head, then cosine annealing with restarts over everything, the body at "
        "lr/lr_mult and the head at lr, momentum 0.9 (docs/techniques.md).",
        "fastai", OneOf(RECIPES), ("train",),
    )  # fmt: skip
    epochs: int = setting(
        "epochs of the whole model, after the frozen ones", 15, Number(lo=1, hi=1000, integer=True), ("train",)
    )
    frozen_epochs: int = setting(
        "The seed (pretrained) used frozen_epochs 1 and lr_mult 100; the default models start from random weights, "
        "where a frozen body and tiny early rates only slow learning down.",
        0, Number(lo=0, hi=1000, integer=True), ("train",),
    )  # fmt: skip
    lr: float = setting(
        "the head's peak learning rate (fastai's base_lr)",
        0.01, Number(above=0, hi=10, why=" (a rate of 0 cannot train)"), ("train",),
    )  # fmt: skip
    lr_mult: float = setting(
        "the body trains at lr / lr_mult",
        1, Number(lo=1, hi=10_000, why=" (the body's rate is lr / lr_mult; fastai's is 100)"), STEP,
    )  # fmt: skip
    lr_groups: str = setting(
        "body_head: fastai's split (body lr/lr_mult, head lr) | layers: timm's layers, lr/lr_mult..lr",
        "body_head", OneOf(LR_GROUPS), STEP,
    )  # fmt: skip
    weight_decay: float = setting("decoupled (AdamW's)", 0.01, Number(lo=0, hi=1), STEP)
    effective_batch: int = setting(
        "samples per optimizer step; micro-batches accumulate up to it. 32 here: 20 steps an epoch on the 640 "
        "default training images, which 15 epochs from random weights need to settle the same way on every seed "
        "(64: the seed's)",
        32, Number(lo=1, hi=MAX_BATCH, integer=True), STEP,
    )  # fmt: skip
    eval_batch: int | str = setting(
        "validation/TTA batch: auto (the profile's choice, up to 4 x effective_batch) or a number",
        "auto", Number(lo=1, hi=MAX_BATCH, integer=True, auto=True), STEP,
    )  # fmt: skip
    drop_last: bool = setting(
        "leave out each epoch's short last batch, as fastai's training loader does", True, Flag(), ("train",)
    )
    aug: AugmentSettings = section(AugmentSettings)
    precision: str = setting(
        "auto (bf16 or fp16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32",
        "auto", OneOf(PRECISIONS), AUG,
    )  # fmt: skip
    compile: bool | str = setting(
        "torch.compile the model: auto (on CUDA only: code generation takes minutes, which a GPU run of large "
        "models wins back and a CPU run of tiny ones never does) | true | false. The compile time is logged and in "
        "the metrics.",
        "auto",
        Either(lambda v: v == "auto" or isinstance(v, bool), "auto (torch.compile on CUDA only), true (always, the "
               "CPU included: slow to start there) or false (never: eager PyTorch)"),
        ("train",),
    )  # fmt: skip
    workers: int | str = setting(
        "loader processes: auto (every usable core on CUDA, none on the CPU) or a number",
        "auto", Number(lo=0, hi=MAX_WORKERS, integer=True, auto=True, why=" (loader processes)"),
    )  # fmt: skip
    devices: int = setting(
        "GPUs one model trains on at once (DistributedDataParallel under torchrun, docs/scale.md): each takes a "
        "share of every effective_batch; 1 trains in the stage's own process. Without CUDA, N gloo processes on "
        "the CPU.",
        1,
        Number(lo=1, integer=True, why=" (processes training one model with DistributedDataParallel: GPUs on "
               "CUDA, gloo processes on the CPU; 1 trains in this process, docs/scale.md)"),
        ("train",),
    )  # fmt: skip
    cycle_len: int = setting(
        "recipe sgdr: epochs of the first cosine cycle after the frozen epochs", 1,
        Number(lo=1, hi=1000, integer=True, why=" (epochs of SGDR's first cycle)"), ("train",),
    )  # fmt: skip
    cycle_mult: int = setting(
        "recipe sgdr: each cycle is cycle_mult times as long as the one before; the cycles must add up to "
        "train.epochs (cycle_len 1, cycle_mult 2: 1 + 2 + 4 = 7 epochs)",
        2, Number(lo=1, hi=10, integer=True, why=" (each SGDR cycle's length over the one before)"), ("train",),
    )  # fmt: skip
    snapshots: bool = setting(
        "recipe sgdr: the weights at the end of each cycle join TTA as one more member of the model (a snapshot "
        "ensemble); false: the last cycle's only",
        False, Flag(), ("train",),
    )  # fmt: skip
    progressive: ProgressiveSettings = section(ProgressiveSettings)
    mixup: float = setting(
        "alpha of mixup's beta distribution (timm.data.Mixup on the device batch, after the augmentation); 0: off",
        0.0, Number(lo=0, hi=10, why=" (the beta distribution's alpha; 0.2 to 0.4 is usual, 0 turns mixup off)"),
        ("train",),
    )  # fmt: skip
    cutmix: float = setting(
        "alpha of CutMix's beta distribution; 0: off. With mixup on too, each step takes one of them (half and half)",
        0.0, Number(lo=0, hi=10, why=" (the beta distribution's alpha; 1.0 is usual, 0 turns CutMix off)"),
        ("train",),
    )  # fmt: skip
    mix_prob: float = setting(
        "share of optimizer steps mixed when mixup or cutmix is on", 1.0, Number(lo=0, hi=1), ("train",)
    )
    label_smoothing: float = setting(
        "share of each target's probability spread over every class (with mixup/cutmix, timm's mixed soft targets)",
        0.0, Number(lo=0, below=1, why=" (0.1 is usual; 0 turns it off)"), ("train",),
    )  # fmt: skip
    ema: bool = setting(
        "keep an exponential moving average of the weights (timm.utils.ModelEmaV3): validated, saved and used for "
        "TTA instead of the last weights",
        False, Flag(), STEP,
    )  # fmt: skip
    ema_decay: float = setting(
        "ema: the average's decay per optimizer step (with timm's warmup, which lowers it over the first steps)",
        0.999, Number(above=0, below=1, why=" (the weight the average keeps at each step)"), ("train",),
    )  # fmt: skip
    swa_epochs: int = setting(
        "average the weights at the end of each of the last swa_epochs epochs (torch.optim.swa_utils, BatchNorm's "
        "statistics recomputed on the training images) into the model's final weights; 0: off",
        0, Number(lo=0, hi=1000, integer=True, why=" (the last epochs whose weights are averaged; 0: none)"),
        STEP,
    )  # fmt: skip
    checkpoint_minutes: float = setting(
        "a resumable checkpoint after every epoch and at least this often within one",
        10, Number(above=0, hi=1440, why=" (and after every epoch anyway)"),
    )  # fmt: skip


@dataclass(frozen=True)
class TagSettings:
    """Multi-label competitions (`tags`; competition.form tags): which tags an image is given, from each tag's sigmoid
    probability (docs/competitions.md)."""

    threshold: float = setting(
        "a tag is predicted above it where fit is none; the fits' starting point and their `fixed` score",
        0.5, Number(above=0, below=1, why=" (a probability: 0 would give every image every tag, 1 none)"),
        ("ensemble",),
    )  # fmt: skip
    fit: str = setting(
        "thresholds fitted on the out-of-fold probabilities to maximise the metric: none (threshold) | global (one "
        "for every tag) | per_tag (one per tag, from the global one)",
        "per_tag", OneOf(TAG_FITS), ("ensemble",),
    )  # fmt: skip
    min_positives: int = setting(
        "per_tag: a tag with fewer out-of-fold positive images keeps the global threshold (a fit on a few follows "
        "their noise)",
        20, Number(lo=1, hi=10**9, integer=True, why=" (out-of-fold images that have the tag)"), ("ensemble",),
    )  # fmt: skip
    allow_empty: bool = setting(
        "false: an image with no tag above its threshold is given its most probable one",
        False, Flag(), ("ensemble",),
    )  # fmt: skip


@dataclass(frozen=True)
class TTASettings:
    """Test-time augmentation (`tta`): n augmented passes blended with one plain pass,
    beta x plain + (1 - beta) x augmented mean."""

    n: int = setting(
        "augmented passes",
        4, Number(lo=0, hi=100, integer=True, why=" (augmented passes over the test and out-of-fold images, each as "
                  "long as the plain one)"),
        ("tta",),
    )  # fmt: skip
    beta: float = setting(
        "weight of the plain pass: 0.75 x augmented mean + 0.25 x plain", 0.25, Number(lo=0.0, hi=1.0), ("tta",)
    )


@dataclass(frozen=True)
class EnsembleSettings:
    """How the ensemble weighs its models (`ensemble`): ENSEMBLE_WEIGHTS, and the folds that cross-validate a fit."""

    weights: str = setting(
        "params: each model's models.<name>.weight | fit: non-negative weights summing to 1 that minimise the "
        "out-of-fold log loss, over the rows every model predicted. metrics/ensemble.json reports both either way; "
        "this picks the one the submission uses.",
        "params",
        OneOf(ENSEMBLE_WEIGHTS, "params (each model's `models.<name>.weight`) or fit (non-negative weights summing "
              "to 1, fitted to the out-of-fold log loss), e.g. `dvc exp run -S ensemble.weights=fit`"),
        ("ensemble",),
    )  # fmt: skip
    cv_folds: int = setting(
        "Fitting and scoring on the same rows flatters the fit, so it is also cross-validated: fitted on some "
        "out-of-fold rows, scored on the rest, rotating. kfold rotates over its own folds; bagging (one validation "
        "set, or several that overlap) splits the out-of-fold rows into this many stratified folds, seeded by "
        "`seed`.",
        5, Number(lo=2, hi=100, integer=True, why=" (folds of the fitted weights' cross-validation)"), ("ensemble",),
    )  # fmt: skip


@dataclass(frozen=True)
class PseudoSettings:
    """Pseudo-labels (`pseudo`; docs/techniques.md): the pseudo stage, after the ensemble, labels the test images the
    ensemble is confident of and trains every model again on the training images and those."""

    enabled: bool = setting("false: the pseudo stage only notes that it is off", False, Flag(), ("pseudo",))
    max_error: float = setting(
        "the confidence threshold is the lowest at which the out-of-fold images the ensemble is at least that "
        "confident of are wrong this often at most: the kept pseudo-labels' expected error",
        0.05, Number(above=0, below=1, why=" (a share of wrong pseudo-labels)"), ("pseudo",),
    )  # fmt: skip
    threshold: float | str = setting(
        "auto (from max_error) | a confidence, used as is: the test images whose top probability is above it are kept",
        "auto",
        Either(lambda v: v == "auto" or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1),
               "auto (chosen from pseudo.max_error and the out-of-fold calibration) or a probability between 0 and 1 "
               "(exclusive)"),
        ("pseudo",),
    )  # fmt: skip


@dataclass(frozen=True)
class ReportSettings:
    """What the report stage draws from the out-of-fold probabilities (`report`)."""

    top_losses: int = setting(
        "out-of-fold images with the highest loss drawn, and as many least confident test images; 0: none",
        16,
        Number(lo=0, hi=1000, integer=True, why=" (the out-of-fold images with the highest loss the report draws, "
               "and as many least confident test images)"),
        ("report",),
    )  # fmt: skip
    calibration_bins: int = setting(
        "equal-width confidence bins of the reliability diagram and its expected calibration error",
        10, Number(lo=2, hi=100, integer=True, why=" (equal-width confidence bins of the reliability diagram)"),
        ("report",),
    )  # fmt: skip
    max_classes: int = setting(
        "classes that get their own metrics/report.json columns (so `dvc exp show` columns) and confusion picture "
        "rows; a competition with more gets macro averages there and the classes most involved in confusions drawn",
        30,
        Number(lo=2, hi=200, integer=True, why=" (classes with their own report.json columns and confusion rows; "
               "above it, macro averages)"),
        ("report",),
    )  # fmt: skip


@dataclass(frozen=True)
class ProfileSettings:
    """The memory profile (`profile`): the GPU memory a training step may use, less a fraction kept free, and the
    smallest micro-batch it may choose."""

    budget_gb: float = setting(
        "GiB of GPU memory a training step may use: Kaggle's 16 GB card",
        16, Number(above=0, hi=10_000, why=" (the GB of GPU memory a training step may use)"), ("profile",),
    )  # fmt: skip
    headroom: float = setting(
        "fraction of the budget kept free (fragmentation over a long run, validation, other processes)",
        0.1, Number(lo=0, hi=0.9, why=" (the fraction of the budget kept free)"), ("profile",),
    )  # fmt: skip
    min_micro_batch: int = setting(
        "candidates: train.effective_batch / 1, 2, 4, ... down to this (eval: 4x, 2x, then the same)",
        8,
        Number(lo=1, integer=True, why=" (the smallest micro-batch the profile tries, and out-of-memory halving "
               "stops at: a slice of one step)"),
        ("profile",),
    )  # fmt: skip


def _kernel_slug(value):
    return isinstance(value, str) and re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{3,48})[a-z0-9]", value) is not None


@dataclass(frozen=True)
class KaggleSettings:
    """Training on Kaggle's GPUs with `paddy kaggle run` (`kaggle`; docs/kaggle.md): no stage reads these, so
    changing one reruns nothing; they are in params.yaml so an experiment records where it ran."""

    kernel: str = setting(
        "the kernel's slug under your account (--name sets it)",
        "paddy-train",
        Either(_kernel_slug, "a kernel slug: 5 to 50 lowercase letters, digits and hyphens, not starting or ending "
               "with a hyphen (e.g. paddy-train), the name Kaggle's address shows"),
    )  # fmt: skip
    accelerator: str = setting(
        "t4x2 (two T4s: train.devices 2 trains on both) | p100 (--accelerator sets it); fp16 on both",
        "t4x2", OneOf(tuple(ACCELERATORS)),
    )  # fmt: skip
    keep_weights: bool = setting(
        "true: the kernel's output keeps data/models too (GBs for large models)", False, Flag()
    )


def _targets_ok(value):
    return (isinstance(value, list) and value and value[0] == "label" and len(set(value)) == len(value)
            and all(isinstance(t, str) and t for t in value))  # fmt: skip


@dataclass(frozen=True)
class ModelSettings:
    """One `models.<name>`: the architecture, its head and targets, the item and model sizes, its batch and weight.
    Every model names each of these (no defaults: params.yaml's models are examples)."""

    name: str
    arch: str = setting("a timm architecture (timm.list_models)", check=Text(empty=False), stages=MODEL)
    pretrained: bool | str = setting(
        "true: timm's weights (the Hugging Face hub or its local cache) | a weights file's path",
        check=Either(lambda v: isinstance(v, (bool, str)) and v != "", "true (timm's weights), false (random "
                     "initialisation) or the path of a weights file"),
        stages=("train", "ensemble"),
    )  # fmt: skip
    head: str = setting(
        "fastai: vision_learner's head (concat pool, BatchNorm, dropout, 512 hidden) | timm: the arch's own",
        check=OneOf(HEADS, "fastai (fastai's vision_learner head: concat pooling, BatchNorm, dropout, a hidden layer "
                    "of 512) or timm (the architecture's own classifier)"),
        stages=MODEL,
    )  # fmt: skip
    targets: tuple[str, ...] = setting(
        "[label] | [label, variety]: also predict the variety (the seed's multi-target model)",
        check=Either(_targets_ok, "[label] (the competition's label), or label then other columns of the train "
                     "table, each once (e.g. [label, variety], the seed's multi-target model: one output per label "
                     "and per variety, the sum of both losses)", tuple),
        stages=MODEL,
    )  # fmt: skip
    item_size: tuple[int, int] = setting(
        "[height, width] the image is resized to on the CPU before augmentation", check=Size(MAX_SIDE), stages=MODEL
    )
    item_method: str = setting("squish | crop | pad", check=OneOf(ITEM_METHODS), stages=("train", "ensemble"))
    size: tuple[int, int] = setting("[height, width] the model sees", check=Size(MAX_SIDE), stages=MODEL)
    micro_batch: int | str = setting(
        "samples per forward/backward pass, accumulated to train.effective_batch: a number, or auto (the memory "
        "profile's choice)",
        check=Either(lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
                     "a positive integer, or auto (the largest micro-batch the memory profile says fits the budget)"),
        stages=MODEL,
    )  # fmt: skip
    weight: float = setting(
        "its weight in the ensemble (ensemble.weights params)",
        check=Either(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < float("inf"),
                     "a number >= 0"),
        stages=("ensemble",),
    )  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """Every setting of params.yaml, checked."""

    seed: int = setting(
        "of every model's training (split s trains with seed + s), its TTA and the fitted ensemble's folds",
        42, Number(lo=0, hi=SEED_MAX, integer=True, why=SEED_WHY), ("train", "tta", "ensemble"),
    )  # fmt: skip
    data: DataSettings = section(DataSettings)
    competition: CompetitionSettings = section(CompetitionSettings)
    prepare: PrepareSettings = section(PrepareSettings)
    cv: CVSettings = section(CVSettings)
    train: TrainSettings = section(TrainSettings)
    tta: TTASettings = section(TTASettings)
    tags: TagSettings = section(TagSettings)
    ensemble: EnsembleSettings = section(EnsembleSettings)
    pseudo: PseudoSettings = section(PseudoSettings)
    report: ReportSettings = section(ReportSettings)
    profile: ProfileSettings = section(ProfileSettings)
    kaggle: KaggleSettings = section(KaggleSettings)
    models: dict[str, ModelSettings] = field(default_factory=dict)  # in params.yaml's order; checked model by model

    def model(self, name, path="params.yaml"):
        """models.<name>, or a PaddyError naming the models there are."""
        if name not in self.models:
            raise PaddyError(f"{path} has no `models.{name}`; models: {', '.join(self.models)}.")
        return self.models[name]


MODEL_KEYS = tuple(settings_of(ModelSettings))  # every model names each
