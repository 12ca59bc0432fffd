"""Training: the fixed OpenCLIP recipe per scale (see ``datacurate.scales``)."""
from __future__ import annotations

from pathlib import Path

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


def register_model_configs() -> list[str]:
    """Register our model configs (e.g. TinyCLIP-ViT-64) with OpenCLIP; idempotent."""
    import open_clip

    names = sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json"))
    missing = [n for n in names if n not in open_clip.list_models()]
    if missing:
        open_clip.add_model_config(MODEL_CONFIG_DIR)
    return names
