"""Which CLIP model `embed` runs: an OpenCLIP architecture with a pretrained tag, or a local checkpoint.

Accepted forms of ``--model``:

* ``ARCH:TAG``      e.g. ``ViT-B-32:openai`` -- OpenCLIP's hub weights (the real
  path; it needs network access to a model hub, so offline it fails with a clear message);
* ``ARCH:FILE``     e.g. ``TinyCLIP-ViT-64:runs/x/checkpoints/epoch_latest.pt``;
* ``DIR``           a filtering network written by ``datacurate filter-net train``
  (``DIR/checkpoint.pt`` + ``DIR/info.json``) or an open_clip_train run
  (``DIR/checkpoints/epoch_latest.pt`` + ``DIR/params.txt``);
* ``FILE``          a checkpoint with ``info.json`` beside it.

The embeddings are stored under a short name (``--arch``): upstream DataComp calls
OpenAI's ViT-B/32 ``b32`` and ViT-L/14 ``l14`` (npz keys ``b32_img`` ..., column
``clip_b32_similarity_score``); a filtering network is ``fnet``.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from datacurate.clip import FILTER_NET_NAME, known_models
from datacurate.errors import UserError
from datacurate.layout import NetLayout, RunLayout

# upstream DataComp's names for the two models it ships scores for (datacomp README, metadata columns)
UPSTREAM_NAMES = {("ViT-B-32", "openai"): "b32", ("ViT-L-14", "openai"): "l14"}


class ModelLoadError(UserError):
    """The model named by --model cannot be found or loaded."""


@dataclass(frozen=True)
class ModelSpec:
    arch: str            # OpenCLIP model config name
    pretrained: str      # hub tag or path to a checkpoint file
    name: str            # short name used in npz keys and the score column
    local: bool          # True: weights come from a local file

    @property
    def score_column(self) -> str:
        return f"clip_{self.name}_similarity_score"

    @property
    def img_key(self) -> str:
        return f"{self.name}_img"

    @property
    def txt_key(self) -> str:
        return f"{self.name}_txt"


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", name):
        raise ModelLoadError(f"--arch {name!r}: use lowercase letters, digits and '_' "
                             "(it becomes the npz keys NAME_img/NAME_txt)")
    return name


def _default_name(arch: str, tag: str) -> str:
    if (arch, tag) in UPSTREAM_NAMES:
        return UPSTREAM_NAMES[(arch, tag)]
    return re.sub(r"[^a-z0-9]+", "_", arch.lower()).strip("_")


def _from_dir(d: Path, name: str | None) -> ModelSpec:
    net, run = NetLayout(d), RunLayout(d)
    if net.is_trained():
        try:
            arch = json.loads(net.info.read_text())["model"]
        except (ValueError, KeyError) as e:
            raise ModelLoadError(f"{net.info}: not a filtering-network info file ({e})") from None
        return ModelSpec(arch, str(net.checkpoint), _check_name(name or FILTER_NET_NAME), True)
    ckpt, params = run.checkpoint, run.params
    if ckpt.is_file() and params.is_file():
        m = re.search(r"^model:\s*(\S+)\s*$", params.read_text(), re.M)
        if not m:
            raise ModelLoadError(f"{params}: no 'model: NAME' line")
        return ModelSpec(m.group(1), str(ckpt), _check_name(name or _default_name(m.group(1), "")), True)
    raise ModelLoadError(f"{d}: not a model directory (expected {net.checkpoint.name} + {net.info.name} "
                         f"from `datacurate filter-net train`, or {run.checkpoint.relative_to(d)} + "
                         f"{run.params.name} from `datacurate train`)")


def parse_model(model: str, name: str | None = None) -> ModelSpec:
    """Turn a --model string into a ModelSpec, with a clear error for every wrong form."""
    p = Path(model)
    if p.is_dir():
        return _from_dir(p, name)
    if p.is_file():
        if NetLayout(p.parent).info.is_file():
            spec = _from_dir(p.parent, name)
            return ModelSpec(spec.arch, str(p), spec.name, True)
        raise ModelLoadError(f"{model}: a checkpoint file needs its architecture: pass ARCH:{model} "
                             "(e.g. TinyCLIP-ViT-64:path/to/checkpoint.pt)")
    arch, sep, tag = model.partition(":")
    archs = known_models()
    if arch not in archs:
        raise ModelLoadError(f"--model {model!r}: no such file or directory, and {arch!r} is not an "
                             f"OpenCLIP architecture (e.g. ViT-B-32, ViT-L-14, TinyCLIP-ViT-64)")
    if not sep or not tag:
        raise ModelLoadError(f"--model {model!r}: give pretrained weights as {arch}:TAG or {arch}:CHECKPOINT "
                             "(random weights make meaningless scores)")
    if Path(tag).is_file():
        return ModelSpec(arch, tag, _check_name(name or _default_name(arch, "")), True)
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag not in tags:
        looks_like_path = "/" in tag or tag.endswith((".pt", ".pth", ".bin", ".safetensors"))
        what = "no such checkpoint file" if looks_like_path else "unknown pretrained tag"
        raise ModelLoadError(f"--model {model!r}: {what} {tag!r} for {arch}; "
                             f"known tags: {', '.join(tags) or '(none)'}")
    return ModelSpec(arch, tag, _check_name(name or _default_name(arch, tag)), False)


def fingerprint(spec: ModelSpec) -> str:
    """What identifies the weights: sha256 of a local checkpoint, else ARCH:TAG (stored with the embeddings)."""
    if not spec.local:
        return f"{spec.arch}:{spec.pretrained}"
    import hashlib

    h = hashlib.sha256()
    with open(spec.pretrained, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{spec.arch}:sha256:{h.hexdigest()[:16]}"


def load_spec(spec: ModelSpec, device: str = "cpu"):
    """(model in eval mode on ``device``, image preprocess, tokenizer) for ``spec`` (``datacurate.clip.load_clip``),
    with an error that says what the user asked for."""
    from datacurate.clip import load_clip

    try:
        return load_clip(spec.arch, spec.pretrained, device)
    except RuntimeError as e:
        if spec.local:
            raise ModelLoadError(f"{spec.pretrained}: cannot load as {spec.arch} weights ({e})") from None
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        why = ("the weights are not in the local cache and cannot be downloaded offline (HF_HUB_OFFLINE=1)"
               if offline else f"the download failed ({e})")
        raise ModelLoadError(
            f"model {spec.arch} with pretrained tag {spec.pretrained!r}: {why}. Put the weights file on disk "
            f"and pass --model {spec.arch}:/path/to/weights, or use a local checkpoint "
            "(e.g. a filtering network from `datacurate filter-net train`)") from None
