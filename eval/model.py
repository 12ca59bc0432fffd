"""Load the model a training run produced: RUN/info.json names the OpenCLIP config and checkpoint."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from datacurate.clip import load_clip, pick_device, sha256_file
from datacurate.errors import UserError
from datacurate.layout import RunLayout


@dataclass
class LoadedModel:
    model: Any                 # has encode_image(images) and encode_text(tokens)
    preprocess: Callable       # PIL image -> tensor (open_clip's eval transform)
    tokenizer: Callable        # list[str] -> token tensor
    device: str
    name: str
    checkpoint: Path
    checkpoint_sha256: str


def read_info(run: str | os.PathLike) -> tuple[dict, Path]:
    """(info.json, absolute checkpoint path), with errors naming the file and field."""
    run = Path(run)
    f = RunLayout(run).info
    try:
        info = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{f}: missing (written by `datacurate train`)") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{f}: not valid JSON ({e})") from None
    for fld in ("model", "checkpoint"):
        if not isinstance(info.get(fld), str) or not info[fld]:
            raise UserError(f"{f}: field {fld!r} must be a non-empty string")
    ckpt = Path(info["checkpoint"])
    if not ckpt.is_absolute():
        ckpt = run / ckpt
    if not ckpt.is_file():
        raise UserError(f"{f}: field 'checkpoint' points at {ckpt}, which does not exist")
    return info, ckpt


def load_run_model(run: str | os.PathLike, device: str = "auto") -> LoadedModel:
    """The run's model (``datacurate.clip.load_clip`` of info['model'] with the run's checkpoint), in eval mode."""
    import torch

    info, ckpt = read_info(run)
    dev = pick_device(device)
    torch.manual_seed(0)
    try:
        model, preprocess, tokenizer = load_clip(info["model"], str(ckpt), dev)
    except RuntimeError as e:
        raise UserError(f"{ckpt}: cannot load into model {info['model']!r} ({str(e).splitlines()[0]})") from None
    return LoadedModel(model=model, preprocess=preprocess, tokenizer=tokenizer,
                       device=dev, name=info["model"], checkpoint=ckpt, checkpoint_sha256=sha256_file(ckpt))
