"""The probability tables the tta stage writes and the ensemble and the report read (`paddy predict` mixes its own
the same way, Stack): one row per image, one column per class (data/prepared/labels.json's order), per model and
kind (test, oof).

A table is a float32 .npy (`<kind>_probs.npy`) beside its rows' ids (`<kind>_ids.csv`) and classes
(`classes.json`): a competition of 300,000 images and 10,000 classes has out-of-fold tables of gigabytes, which a
CSV would take minutes to write and RAM to read, where a .npy is written at disk speed and read memory-mapped, row
chunk by row chunk (`chunks`), so no stage holds more than one model's table and a chunk of each other.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from paddy.errors import PaddyError
from paddy.files import atomic_path, write_csv, write_json
from paddy.metrics import CLIP

CHUNK_CELLS = 2**24  # cells (rows x classes) a row chunk holds: 64 MB of float32, whatever the number of classes


@dataclass
class Table:
    """One model's probabilities: ids (rows), probs [row, class] (memory-mapped float32), classes (columns)."""

    ids: np.ndarray
    probs: np.ndarray
    classes: list

    def __len__(self):
        return len(self.ids)

    def rows(self, ids):
        """Positions of `ids` in this table (every one must be there)."""
        return pd.Index(self.ids).get_indexer(ids)

    def frame(self):
        """The table as a DataFrame (image_id, then one column per class): for small tables and tests."""
        return pd.DataFrame(np.asarray(self.probs), columns=self.classes).assign(image_id=self.ids)[
            ["image_id", *self.classes]
        ]


def write_table(folder, kind, ids, probs, classes):
    """`folder`/<kind>_probs.npy, <kind>_ids.csv and classes.json, each written whole or not at all."""
    folder = Path(folder)
    probs = np.asarray(probs, dtype=np.float32)
    if probs.shape != (len(ids), len(classes)):
        raise ValueError(f"{kind} probabilities of shape {probs.shape} for {len(ids)} ids and {len(classes)} classes")
    with atomic_path(folder / f"{kind}_probs.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, probs)
    write_csv(pd.DataFrame({"image_id": list(ids)}), folder / f"{kind}_ids.csv")
    write_json(folder / "classes.json", list(classes))


def read_table(preds_dir, name, kind):
    """Model `name`'s `kind` table (test or oof) in preds_dir, its probabilities memory-mapped."""
    folder = Path(preds_dir) / name
    paths = [folder / f"{kind}_probs.npy", folder / f"{kind}_ids.csv", folder / "classes.json"]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise PaddyError(
            f"{missing[0]} is missing: model {name!r} has no TTA predictions yet. Run `dvc repro tta@{name}` (or "
            "`dvc repro`) first."
        )
    probs = np.load(paths[0], mmap_mode="r")
    ids = pd.read_csv(paths[1], dtype=str, keep_default_na=False)["image_id"].to_numpy()
    classes = json.loads(paths[2].read_text())
    if probs.shape != (len(ids), len(classes)):
        raise PaddyError(
            f"{paths[0]} holds {probs.shape[0]} x {probs.shape[1]} probabilities, but {paths[1].name} lists "
            f"{len(ids)} images and classes.json {len(classes)} classes: the folder is damaged. Run `dvc repro -f "
            f"tta@{name}`."
        )
    return Table(ids, probs, classes)


def read_tables(preds_dir, names, kind, classes):
    """{name: Table} of every model, each checked to have `classes` (labels.json) as its columns."""
    tables = {name: read_table(preds_dir, name, kind) for name in names}
    for name, table in tables.items():
        if list(table.classes) != list(classes):
            raise PaddyError(
                f"The {kind} predictions of {name!r} have the classes {table.classes[:5]}... ({len(table.classes)}), "
                f"not the prepared ones ({len(classes)}): they are from another competition or preparation. Run "
                "`dvc repro` to predict again."
            )
    return tables


def common_ids(tables, keep=None):
    """The ids every table has (and `keep` has, when given), in the first table's order."""
    ids = pd.Index(next(iter(tables.values())).ids)
    for table in tables.values():
        ids = ids[ids.isin(table.ids)]
    if keep is not None:
        ids = ids[ids.isin(keep)]
    return ids.to_numpy()


def chunks(n_rows, n_classes):
    """Row slices of at most CHUNK_CELLS cells."""
    step = max(1, CHUNK_CELLS // max(n_classes, 1))
    return [slice(start, min(start + step, n_rows)) for start in range(0, n_rows, step)]


class Stack:
    """Several models' tables over the same rows (`ids`, in that order), mixed by weights chunk by chunk: only the
    mixture asked for is ever whole in memory."""

    def __init__(self, tables, ids, tags=False):
        self.names, self.ids = list(tables), np.asarray(ids)
        self.probs = [tables[n].probs for n in self.names]
        self.rows = [tables[n].rows(self.ids) for n in self.names]
        self.n_classes = self.probs[0].shape[1]
        self.tags = tags  # a multi-label model's tables: each tag's sigmoid probability, rows that do not sum to 1
        self._shortlist = None

    @classmethod
    def of(cls, probs):
        """A Stack of a dense [model, row, class] array, rows numbered 0..n-1 (small tables, tests)."""
        ids = np.arange(probs.shape[1]).astype(str)
        classes = [str(k) for k in range(probs.shape[2])]
        return cls({f"m{i}": Table(ids, p, classes) for i, p in enumerate(probs)}, ids)

    def subset(self, positions):
        """The same models over the rows at `positions` of this stack, in that order."""
        out = object.__new__(Stack)
        out.names, out.ids, out.probs, out.n_classes = self.names, self.ids[positions], self.probs, self.n_classes
        out.tags = self.tags
        out.rows = [rows[positions] for rows in self.rows]
        out._shortlist = None if self._shortlist is None else self._shortlist.subset(positions)
        return out

    def __len__(self):
        return len(self.ids)

    def chunk(self, m, positions):
        """Model m's probabilities of the rows at `positions`, each rescaled to sum to 1 (float32 rounding) unless
        they are tags'."""
        p = np.asarray(self.probs[m][self.rows[m][positions]], dtype=np.float32)
        return p if self.tags else p / p.sum(1, keepdims=True)

    def mix(self, weights, positions=None):
        """The weighted mean (weights summing to 1) of the rows at `positions` (all), [row, class] float32."""
        positions = np.arange(len(self)) if positions is None else np.asarray(positions)
        out = np.zeros((len(positions), self.n_classes), dtype=np.float32)
        for part in chunks(len(positions), self.n_classes):
            for m, w in enumerate(weights):
                if w:
                    out[part] += np.float32(w) * self.chunk(m, positions[part])
        return out

    def true_probs(self, y):
        """p[row, model] of each row's true class y, for the log-loss fit (which sees nothing else)."""
        out = np.empty((len(self), len(self.names)))
        for part in chunks(len(self), self.n_classes):
            positions = np.arange(part.start, part.stop)
            for m in range(len(self.names)):
                out[part, m] = self.chunk(m, positions)[np.arange(len(positions)), y[part]]
        return out

    def tag_loss(self, y, weights):
        """(the mean binary cross-entropy of the tags' mixture by `weights`, its gradient in the weights), chunk by
        chunk: each model's probability of each tag's true value (p where the tag is there, 1 - p where not) is
        linear in the weights, and an [image x tag, model] table of them would be gigabytes at iMet's size."""
        y = np.asarray(y, dtype=bool)
        total, grad = 0.0, np.zeros(len(self.names))
        for part in chunks(len(self), self.n_classes):
            positions = np.arange(part.start, part.stop)
            right = [np.where(y[part], p, 1 - p) for p in (self.chunk(m, positions) for m in range(len(self.names)))]
            mix = np.clip(sum(np.float32(w) * q for w, q in zip(weights, right)), CLIP, None)
            total -= np.log(mix, dtype=np.float64).sum()
            grad -= [(q / mix).sum(dtype=np.float64) for q in right]
        cells = max(y.size, 1)
        return total / cells, grad / cells

    def only(self, m):
        """Weights that take model m alone."""
        w = np.zeros(len(self.names))
        w[m] = 1.0
        return w

    def argmax(self, weights):
        """The mixture's most probable class per row, what stack.mix(weights).argmax(1) gives, found from each row's
        shortlist of classes (Shortlist): a weight search scores a hundred mixtures, each a pass over every class
        of every row without it."""
        if self._shortlist is None:
            self._shortlist = Shortlist(self)
        return self._shortlist.argmax(self, weights)


class Shortlist:
    """Each row's TOP most probable classes under each model, with every model's probabilities of them. The
    mixture's argmax is among them unless a class outside every model's top TOP could beat them, which it cannot
    when the best of them is above the weighted sum of each model's TOP-th probability: such rows (few) are
    mixed whole. Ties go to the lowest class index, as numpy's argmax breaks them."""

    TOP = 5

    def __init__(self, stack):
        n, top = len(stack), min(self.TOP, stack.n_classes)
        self.classes = np.empty((n, top * len(stack.names)), dtype=np.int64)
        self.probs = np.empty((len(stack.names), n, top * len(stack.names)), dtype=np.float32)
        self.kth = np.empty((len(stack.names), n), dtype=np.float32)
        for part in chunks(n, stack.n_classes):
            positions = np.arange(part.start, part.stop)
            rows = np.arange(len(positions))[:, None]
            whole = [stack.chunk(m, positions) for m in range(len(stack.names))]
            tops = [np.argpartition(-p, top - 1, axis=1)[:, :top] for p in whole]
            classes = np.sort(np.concatenate(tops, axis=1), axis=1)  # lowest class first: numpy's tie order
            self.classes[part] = classes
            for m, p in enumerate(whole):
                self.probs[m, part] = p[rows, classes]
                self.kth[m, part] = p[rows, tops[m]].min(1)

    def subset(self, positions):
        out = object.__new__(Shortlist)
        out.classes, out.probs, out.kth = self.classes[positions], self.probs[:, positions], self.kth[:, positions]
        return out

    def argmax(self, stack, weights):
        mix = np.zeros(self.classes.shape, dtype=np.float32)
        bound = np.zeros(len(self.classes), dtype=np.float32)
        for m, w in enumerate(weights):
            if w:  # the same float32 sums, in the same order, as Stack.mix
                mix += np.float32(w) * self.probs[m]
                bound += np.float32(w) * self.kth[m]
        j = mix.argmax(1)
        best = mix[np.arange(len(mix)), j]
        predicted = self.classes[np.arange(len(mix)), j]
        unsure = np.flatnonzero(best <= bound * np.float32(1 + 1e-5))  # a class outside might tie or win
        if len(unsure):
            predicted[unsure] = stack.mix(weights, unsure).argmax(1)
        return predicted
