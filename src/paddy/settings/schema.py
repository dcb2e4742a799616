"""The typed settings: params.yaml's sections as frozen dataclasses, and the choices each setting may take.

paddy.settings.parse builds them once, after checking every value, so a function takes the settings it needs
(`TrainSettings`, `ModelSettings`, ...) and reads them as attributes: sizes are already (height, width) tuples."""

from dataclasses import dataclass, field

from paddy.errors import PaddyError

MODEL_KEYS = ("arch", "pretrained", "head", "targets", "item_size", "item_method", "size", "micro_batch", "weight")
ITEM_METHODS = ("squish", "crop", "pad")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
HEADS = ("fastai", "timm")
LR_GROUPS = ("body_head", "layers")
RECIPES = ("fastai",)
CV_SCHEMES = ("kfold", "bag")
DIFFICULTIES = ("easy", "hard")  # paddy.data.synthetic
# paddy.data.synthetic's layout families: each writes a competition laid out like one Kaggle competition
LAYOUTS = (
    "paddy", "cassava", "dog_breed", "dogs_vs_cats", "plant_seedlings", "cactus", "aptos", "plant_pathology"
)  # fmt: skip
LABELS_FROM = ("column", "one_hot", "folders", "file_names")  # where a competition's training labels are
FORMS = ("label", "probabilities", "probability")  # what a submission sends per test image
# paddy.metrics computes them: those of a label score the argmax class alone, those of probabilities the columns
LABEL_METRICS = ("accuracy", "f1_micro", "f1_macro", "qwk")
PROBABILITY_METRICS = ("log_loss", "roc_auc", "mean_roc_auc")
METRICS = LABEL_METRICS + PROBABILITY_METRICS
ENSEMBLE_WEIGHTS = ("params", "fit")
# Kaggle's GPU machines for `paddy kaggle run`: name -> (the API's machine_shape, GPUs). Neither has bf16.
ACCELERATORS = {"t4x2": ("NvidiaTeslaT4", 2), "p100": ("NvidiaTeslaP100", 1)}


@dataclass(frozen=True)
class SyntheticSettings:
    """A generated competition with the real labels, varieties and class imbalance (`data.synthetic`)."""

    n_train: int
    n_test: int
    width: int
    height: int
    seed: int
    difficulty: str  # DIFFICULTIES: easy (every model scores 1.000) | hard (headroom, like the real photos)
    layout: str  # LAYOUTS: the Kaggle competition whose files it imitates
    classes: int  # 0: the layout's own number of classes


@dataclass(frozen=True)
class CompetitionSettings:
    """What a competition's files hold and how Kaggle scores it (`competition`; `paddy init` writes it).

    Image paths are templates relative to the competition folder: {id} is an id of the train table (or of the
    sample submission, for the test images), {label} a training image's class folder."""

    train_table: str  # the training labels' CSV; "" when labels are class folders or file names
    id_column: str  # its column of image ids
    labels_from: str  # LABELS_FROM
    label_column: str | tuple[str, ...]  # column: its name; one_hot: one column per class; else ""
    train_images: str  # e.g. train_images/{label}/{id}, train/{id}.jpg
    test_images: str  # e.g. test_images/{id}
    sample_submission: str  # its first column: the test ids, in the order a submission keeps
    form: str  # FORMS: label | probabilities (a column per class) | probability (of `positive`)
    positive: str  # form probability: the class whose probability is sent
    metric: str  # METRICS

    @classmethod
    def of(cls, section):
        """The settings of a competition section as params.yaml holds it (label_column a list for one_hot)."""
        column = section["label_column"]
        return cls(**dict(section, label_column=tuple(column) if isinstance(column, list) else column))


@dataclass(frozen=True)
class DataSettings:
    """Where the competition comes from (`data`): synthetic, kaggle, or a folder or zip laid out like it."""

    source: str
    competition: str
    synthetic: SyntheticSettings


@dataclass(frozen=True)
class PrepareSettings:
    """Pre-resizing the competition's images once, like fastai's resize_images (`prepare`)."""

    max_size: int  # the longest side after pre-resizing
    workers: int  # processes
    max_pixels: int  # an image above it is left out (paddy.data.images)


@dataclass(frozen=True)
class CVSettings:
    """The split table shared by every model (`cv`): bag, n random stratified validation sets, or kfold, stratified
    folds covering every row."""

    scheme: str  # CV_SCHEMES
    n_splits: int
    valid_pct: float  # bag only
    seed: int


@dataclass(frozen=True)
class AugmentSettings:
    """fastai's aug_transforms arguments (`train.aug`); the defaults are fastai's, as in params.yaml."""

    min_scale: float = 0.75
    do_flip: bool = True
    flip_vert: bool = False
    max_rotate: float = 10.0
    min_zoom: float = 1.0
    max_zoom: float = 1.1
    max_warp: float = 0.2
    max_lighting: float = 0.2
    p_affine: float = 0.75
    p_lighting: float = 0.75


# (key, kind, low, high) of each AugmentSettings field, for the checks; kind "bool" or "number"
AUG_RANGES = (
    ("min_scale", "number", 0.05, 1.0),
    ("do_flip", "bool", None, None),
    ("flip_vert", "bool", None, None),
    ("max_rotate", "number", 0.0, 180.0),
    ("min_zoom", "number", 0.1, 1.0),
    ("max_zoom", "number", 1.0, 4.0),
    ("max_warp", "number", 0.0, 0.9),
    ("max_lighting", "number", 0.0, 0.9),
    ("p_affine", "number", 0.0, 1.0),
    ("p_lighting", "number", 0.0, 1.0),
)


@dataclass(frozen=True)
class TrainSettings:
    """How every model trains (`train`): fastai's fine_tune recipe, batches, precision, devices."""

    recipe: str
    epochs: int
    frozen_epochs: int
    lr: float
    lr_mult: float
    lr_groups: str
    weight_decay: float
    effective_batch: int
    eval_batch: int | str  # or "auto"
    drop_last: bool
    aug: AugmentSettings
    precision: str
    compile: bool | str  # or "auto"
    workers: int | str  # or "auto"
    devices: int
    checkpoint_minutes: float


@dataclass(frozen=True)
class TTASettings:
    """Test-time augmentation (`tta`): n augmented passes blended with one plain pass,
    beta x plain + (1 - beta) x augmented mean."""

    n: int
    beta: float


@dataclass(frozen=True)
class EnsembleSettings:
    """How the ensemble weighs its models (`ensemble`): ENSEMBLE_WEIGHTS, and the folds that cross-validate a fit."""

    weights: str
    cv_folds: int


@dataclass(frozen=True)
class ReportSettings:
    """What the report stage draws from the out-of-fold probabilities (`report`): how many images with the highest
    loss (and test images with the least confidence), the bins of the reliability diagram, and how many classes
    get a column of `dvc exp show` and a row of the confusion picture."""

    top_losses: int  # 0: no pictures of images
    calibration_bins: int
    max_classes: int  # above it: macro averages in report.json, the most confused classes in the pictures


@dataclass(frozen=True)
class ProfileSettings:
    """The memory profile (`profile`): the GPU memory a training step may use, less a fraction kept free, and the
    smallest micro-batch it may choose."""

    budget_gb: float
    headroom: float  # a fraction of budget_gb
    min_micro_batch: int


@dataclass(frozen=True)
class KaggleSettings:
    """Training on Kaggle's GPUs with `paddy kaggle run` (`kaggle`; docs/kaggle.md): no stage reads these, so
    changing one reruns nothing; they are in params.yaml so an experiment records where it ran."""

    kernel: str  # the kernel's slug under your account
    accelerator: str  # ACCELERATORS
    keep_weights: bool  # the kernel's output keeps data/models (GBs for large models)


@dataclass(frozen=True)
class ModelSettings:
    """One `models.<name>`: the architecture, its head and targets, the item and model sizes, its batch and weight."""

    name: str
    arch: str
    pretrained: bool | str  # or a weights file's path
    head: str
    targets: tuple[str, ...]
    item_size: tuple[int, int]  # (height, width)
    item_method: str
    size: tuple[int, int]  # (height, width)
    micro_batch: int | str  # or "auto"
    weight: float


@dataclass(frozen=True)
class Settings:
    """Every setting of params.yaml, checked."""

    seed: int
    data: DataSettings
    competition: CompetitionSettings
    prepare: PrepareSettings
    cv: CVSettings
    train: TrainSettings
    tta: TTASettings
    ensemble: EnsembleSettings
    report: ReportSettings
    profile: ProfileSettings
    kaggle: KaggleSettings
    models: dict[str, ModelSettings] = field(default_factory=dict)  # in params.yaml's order

    def model(self, name, path="params.yaml"):
        """models.<name>, or a PaddyError naming the models there are."""
        if name not in self.models:
            raise PaddyError(f"{path} has no `models.{name}`; models: {', '.join(self.models)}.")
        return self.models[name]
