"""One checkpoint per fold/bag: safetensors weights plus a JSON of what is needed to rebuild the model."""

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from paddy.files import atomic_path, write_json
from paddy.training.models import create_model, input_normalization


def save_checkpoint(model, meta, out_dir, split):
    out_dir = Path(out_dir)
    # safetensors refuses non-contiguous tensors, and channels_last weights are not contiguous in its sense
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / f"{split}.safetensors") as tmp:
        save_file(state, str(tmp))
    write_json(out_dir / "meta.json", meta)


def read_meta(ckpt_dir):
    return json.loads((Path(ckpt_dir) / "meta.json").read_text())


def checkpoint_normalization(meta):
    """The input normalisation the checkpoint's model was trained with. Checkpoints from before it was recorded
    were always normalised with the architecture's mean/std."""
    if "normalization" in meta:
        return meta["normalization"]
    return input_normalization(meta["arch"], True)


def load_checkpoint(ckpt_dir, split, device="cpu"):
    """Rebuild the model from meta.json (no pretrained download: the weights are ours) and load split's weights."""
    meta = read_meta(ckpt_dir)
    outputs = sum(len(classes) for classes in meta["targets"].values())
    model = create_model(meta["arch"], outputs, pretrained=False, head=meta["head"])
    model.load_state_dict(load_file(str(Path(ckpt_dir) / f"{split}.safetensors"), device=str(device)))
    return model.to(device).eval(), meta
