"""CLIP models: the one place that decides where a model runs.

Embedding, filtering network, training and eval all ask ``pick_device``; a device that is
asked for and not present is an error, never a silent fallback to the CPU.
"""
from __future__ import annotations

from .errors import UserError


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
