"""The one table of competition scales.

Upstream numbers (pool size, samples seen, model, global batch, learning rate,
warm-up, beta2) are copied from DataComp's ``scale_configs.py`` and the fixed
arguments it passes to OpenCLIP (``train.py``: ``--num_checkpoints`` default 5,
``--dataset-resampled``, weight decay left at OpenCLIP's default 0.2).
Source: https://github.com/mlfoundations/datacomp (scale_configs.py, train.py).

``micro`` and ``tiny`` are ours: the same code path, sized for 2 CPU cores.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Scale:
    name: str
    pool_size: int            # samples in the pool the participant filters
    samples_seen: int         # training budget (train_num_samples in upstream)
    model: str                # OpenCLIP model config name
    batch_size: int           # global batch size
    learning_rate: float
    warmup: int               # warm-up steps
    beta2: Optional[float] = None  # None: OpenCLIP's default for the model
    weight_decay: float = 0.2      # OpenCLIP default, never overridden upstream
    num_checkpoints: int = 5       # upstream train.py --num_checkpoints default
    precision: str = "amp"         # upstream default; CPU scales use fp32
    image_size: int = 224
    upstream: bool = True
    where: str = "GPU cluster"
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


SCALES: dict[str, Scale] = {
    # --- ours: same code path, CPU sized -------------------------------------------------
    "micro": Scale(
        name="micro", pool_size=1_000, samples_seen=4_096, model="TinyCLIP-ViT-64",
        batch_size=64, learning_rate=1e-3, warmup=8, num_checkpoints=2,
        precision="fp32", image_size=64, upstream=False, where="tests, CI (CPU)",
    ),
    "tiny": Scale(
        name="tiny", pool_size=20_000, samples_seen=65_536, model="TinyCLIP-ViT-64",
        batch_size=256, learning_rate=1e-3, warmup=50, num_checkpoints=4,
        precision="fp32", image_size=64, upstream=False, where="make demo, 2 CPU cores",
    ),
    # --- upstream DataComp (scale_configs.py) --------------------------------------------
    "small": Scale(
        name="small", pool_size=12_800_000, samples_seen=12_800_000, model="ViT-B-32",
        batch_size=4096, learning_rate=5e-4, warmup=500,
    ),
    "medium": Scale(
        name="medium", pool_size=128_000_000, samples_seen=128_000_000, model="ViT-B-32",
        batch_size=4096, learning_rate=5e-4, warmup=500,
    ),
    "large": Scale(
        name="large", pool_size=1_280_000_000, samples_seen=1_280_000_000, model="ViT-B-16",
        batch_size=8192, learning_rate=5e-4, warmup=500,
    ),
    "xlarge": Scale(
        name="xlarge", pool_size=12_800_000_000, samples_seen=12_800_000_000, model="ViT-L-14",
        batch_size=90_112, learning_rate=1e-3, warmup=10_000, beta2=0.95,
    ),
}


def get_scale(name: str) -> Scale:
    """Return the scale called ``name`` or fail with the list of known ones."""
    try:
        return SCALES[name]
    except KeyError:
        raise ValueError(f"unknown scale {name!r}; known scales: {', '.join(SCALES)}") from None


def format_table() -> str:
    """The scale table as aligned text (what ``datacurate scales`` prints)."""
    cols = ["name", "pool_size", "samples_seen", "model", "batch_size", "learning_rate",
            "warmup", "beta2", "weight_decay", "num_checkpoints", "precision", "where"]
    rows = []
    for s in SCALES.values():
        d = s.as_dict()
        rows.append([_fmt(d[c]) for c in cols])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()
    return "\n".join([line(cols), line(["-" * w for w in widths]), *map(line, rows)])


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, int) and not isinstance(v, bool) and v >= 10_000:
        return f"{v:,}"
    return str(v)
