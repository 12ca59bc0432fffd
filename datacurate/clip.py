"""CLIP models: the one place that knows our model configs, loads a model, decides where it runs and
names a checkpoint by its hash.

Embedding, the filtering network, training and eval all come here: ``register_model_configs``
(our configs, e.g. TinyCLIP-ViT-64, made known to OpenCLIP, as OpenCLIP keeps its own in
``open_clip/model_configs``), ``load_clip`` (model, preprocess, tokenizer), ``pick_device`` (a
device asked for and not present is an error, never a silent fallback to the CPU) and
``sha256_file`` (how a checkpoint is named in results, bundles and caches), and ``parse_model``:
which CLIP model a ``--model`` string names (an OpenCLIP architecture with a pretrained tag,
or a local checkpoint). Its accepted forms:

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

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .layout import NetLayout, RunLayout

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


# ----------------------------------------------------------------------------- --model strings

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
    return f"{spec.arch}:sha256:{sha256_file(spec.pretrained)[:16]}"


def load_spec(spec: ModelSpec, device: str = "cpu"):
    """(model in eval mode on ``device``, image preprocess, tokenizer) for ``spec`` (``datacurate.clip.load_clip``),
    with an error that says what the user asked for."""
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
