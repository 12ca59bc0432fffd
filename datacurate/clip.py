"""CLIP models: the one place that knows our model configs, loads a model, decides where it runs and
names a checkpoint by its hash.

Embedding, the filtering network, training and eval all come here: ``register_model_configs``
(our configs, e.g. TinyCLIP-ViT-64, made known to OpenCLIP, as OpenCLIP keeps its own in
``open_clip/model_configs``), ``load_clip`` (model, preprocess, tokenizer), ``pick_device`` (a
device asked for and not present is an error, never a silent fallback to the CPU) and
``sha256_file`` (how a checkpoint is named in results, bundles and caches).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import UserError

# the configs themselves are the training recipe's (training/model_configs, as DESIGN.md lays out); a data
# folder beside this package in the same distribution, found by path: nothing of training is imported
MODEL_CONFIG_DIR = Path(__file__).resolve().parent.parent / "training" / "model_configs"


def register_model_configs() -> list[str]:
    """Register our model configs with OpenCLIP (idempotent); their names."""
    import open_clip

    names = sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json"))
    if any(n not in open_clip.list_models() for n in names):
        open_clip.add_model_config(MODEL_CONFIG_DIR)
    return names


FILTER_NET_NAME = "fnet"   # the filtering network's name in npz keys and its score column (clip_fnet_similarity_score)


def pick_threads(requested: int | None = None) -> int:
    """torch CPU threads: ``requested``, else torch's default (the machine's cores), never the load.

    The thread count changes the arithmetic's rounding, so it must not depend on what else
    runs: picking 1 thread under load (as this did until 2026-12-02) made the tiny demo's
    filtering network, trained right after the Spark download had raised the load, differ
    from the same seed's network trained on an idle machine. Oversubscription is handled by
    ``OMP_WAIT_POLICY=PASSIVE`` (:data:`datacurate.env.OFFLINE_ENV`): waiting threads sleep
    instead of spinning.
    """
    import torch

    if requested:
        return int(requested)
    return torch.get_num_threads()


def known_models() -> list[str]:
    """Every model name OpenCLIP can build here, ours included."""
    import open_clip

    register_model_configs()
    return open_clip.list_models()


def load_clip(arch: str, pretrained: str | None = None, device: str = "cpu"):
    """(model in eval mode on ``device``, its eval preprocess, its tokenizer).

    ``pretrained``: an OpenCLIP tag (from the local cache: nothing is downloaded offline) or a
    checkpoint file (ours: ``{"state_dict": ...}``), None for a fresh initialisation. OpenCLIP's
    own errors pass through for the caller to phrase (it knows what the user asked for)."""
    import open_clip

    register_model_configs()
    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=device)
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(arch)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """A checkpoint's (or any file's) name by content: results, bundles and caches key on it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def pick_device(device: str | None = "auto") -> str:
    """'auto' (or None) -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda[:N]' without that GPU is an error."""
    import torch

    device = device or "auto"
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: torch sees no CUDA GPU here; use --device auto or cpu")
        index = device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise UserError(f"--device {device}: torch sees {torch.cuda.device_count()} GPU(s) (cuda:0.."
                            f"cuda:{torch.cuda.device_count() - 1}); pick one of those")
        return device
    if device != "cpu":
        raise UserError(f"--device {device!r}: expected auto, cpu or cuda[:N]")
    return device
