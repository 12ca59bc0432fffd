"""Read OpenCLIP's training log (``RUN/out.log``) into rows for the training curves."""
from __future__ import annotations

import re
from pathlib import Path

# open_clip_train/train.py logs one line per log step:
# "Train Epoch: E [N/M (P%)] Data (t): .. Batch (t): .., S/s, S/s/gpu LR: X Logit Scale: Y Contrastive_loss: A (B) Loss: C (D)"
_LINE = re.compile(
    r"Train Epoch: (?P<epoch>\d+) \[\s*(?P<n>\d+)/(?P<per_epoch>\d+).*?"
    r"(?P<sps>[\d.e+]+)/s, .*?LR: (?P<lr>[\d.e+-]+) Logit Scale: (?P<scale>[\d.]+) .*?"
    r"Loss: (?P<loss>[\d.e+-]+) \(")


def parse_training_log(path: str | Path) -> list[dict]:
    """Rows with samples seen, learning rate, loss and throughput, in log order."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        m = _LINE.search(line)
        if not m:
            continue
        epoch, n, per_epoch = int(m["epoch"]), int(m["n"]), int(m["per_epoch"])
        rows.append({
            "epoch": epoch,
            "samples_seen": epoch * per_epoch + n,
            "lr": float(m["lr"]),
            "loss": float(m["loss"]),
            "logit_scale": float(m["scale"]),
            "samples_per_s": float(m["sps"]),
        })
    return rows
