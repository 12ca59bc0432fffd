"""WinoGAViL, the suite's 38th task: pick a cue's associated images among 5-12 candidates.

Upstream (datacomp ``eval_utils/wino_eval.py``) reads ``nlphuji/winogavil``'s test split with the
``datasets`` library; its rows have ``cue`` (a word), ``candidates`` (the candidate names),
``associations`` (the names that go with the cue) and ``candidate_images`` (one image per
candidate). Its rule, re-stated here: the prompt is "An <cue>" when the lowercased cue starts with
a vowel, else "A <cue>"; image and prompt features are normalised; the k candidates with the
highest similarity are picked, k being how many associations the row has; the row's score is the
Jaccard index of picked and true sets. Reported: the mean over all rows and per candidate count
(5, 6, 10, 12, 5-6, 10-12); the main metric is ``jaccard_score_10-12`` (tasklist.yml).

Here the same rows are read from the dataset's Parquet export (what the Hub serves for it under
``refs/convert/parquet``, and what ``datasets`` writes with ``to_parquet``): any ``*.parquet``
below the task folder, images as the ``datasets`` Image feature stores them (a struct of
``bytes`` and ``path``). No ``datasets`` dependency; ``datacurate eval --download`` fetches the
export with ``huggingface_hub``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

from datacurate.errors import UserError

COLUMNS = ("cue", "candidates", "associations", "candidate_images")
GROUPS = {"5": (5, 5), "6": (6, 6), "10": (10, 10), "12": (12, 12), "5-6": (5, 6), "10-12": (10, 12)}
PARQUET_REVISION = "refs/convert/parquet"   # the Hub's Parquet export of a dataset


def parquet_files(folder: Path) -> list[Path]:
    """The export's Parquet files below ``folder``, in path order (a split's shards are numbered)."""
    return sorted(p for p in Path(folder).rglob("*.parquet") if not any(s.startswith(".") for s in p.parts))


def missing_data(folder: Path) -> Optional[str]:
    if not parquet_files(folder):
        return (f"no data at {folder}/**/*.parquet (the Parquet export of nlphuji/winogavil's test split; "
                "`datacurate eval --download` fetches it)")
    return None


def clip_prompt(cue: str) -> str:
    """Upstream's ``get_clip_prompt``: "An <cue>" before a vowel, else "A <cue>", the cue lowercased."""
    cue = cue.lower()
    return f"An {cue}" if cue[:1] in ("a", "e", "i", "o", "u") else f"A {cue}"


def iter_rows(folder: Path) -> Iterator[tuple[str, list[str], list[str], list[bytes], str]]:
    """(cue, candidates, associations, candidate image bytes, where) per row; errors name file and row."""
    import pyarrow.parquet as pq

    for path in parquet_files(folder):
        pf = pq.ParquetFile(path)
        absent = [c for c in COLUMNS if c not in pf.schema_arrow.names]
        if absent:
            raise UserError(f"{path}: no column(s) {', '.join(absent)} (WinoGAViL's rows have {', '.join(COLUMNS)})")
        row = 0
        for batch in pf.iter_batches(columns=list(COLUMNS), batch_size=64):
            for cue, cands, assoc, imgs in zip(*(batch.column(c).to_pylist() for c in COLUMNS)):
                where = f"{path}: row {row}"
                row += 1
                if not isinstance(cue, str) or not cue or not cands or imgs is None or len(imgs) != len(cands):
                    raise UserError(f"{where}: expected a cue and one image per candidate "
                                    f"({0 if not cands else len(cands)} candidates, "
                                    f"{0 if imgs is None else len(imgs)} images)")
                raw = [im.get("bytes") if isinstance(im, dict) else im for im in imgs]
                if any(not isinstance(b, (bytes, bytearray)) for b in raw):
                    raise UserError(f"{where}: candidate_images must hold the image bytes (the datasets "
                                    "Image feature's struct of bytes and path)")
                yield cue, list(cands), list(assoc or []), raw, where


def jaccard(truth, picked) -> float:
    """|truth ∩ picked| / |truth ∪ picked| of two boolean vectors (sklearn's binary jaccard_score; 0 when
    both are empty, as sklearn returns with its warning)."""
    import numpy as np

    union = np.logical_or(truth, picked).sum()
    return float(np.logical_and(truth, picked).sum() / union) if union else 0.0


def evaluate(lm, folder: Path) -> dict:
    """Upstream's metrics over every row, and the main metric's bootstrap se over rows."""
    import numpy as np
    import torch

    from . import metrics as M
    from .data import decode_image

    scores, sizes = [], []
    for cue, cands, assoc, raw, where in iter_rows(folder):
        truth = np.isin(cands, assoc)
        images = torch.stack([lm.preprocess(decode_image(b, f"{where}: candidate {i}")) for i, b in enumerate(raw)])
        with torch.no_grad():
            img = lm.model.encode_image(images.to(lm.device), normalize=True)
            txt = lm.model.encode_text(lm.tokenizer([clip_prompt(cue)]).to(lm.device), normalize=True)
        sims = (txt @ img.T).squeeze(0).cpu().numpy()
        k = int(truth.sum())
        picked = np.isin(np.arange(len(cands)), np.argsort(sims)[-k:] if k else [])
        scores.append(jaccard(truth, picked))
        sizes.append(len(cands))
    scores, sizes = np.asarray(scores, dtype=float), np.asarray(sizes)
    out: dict = {"avg_jaccard_score": float(scores.mean()) if len(scores) else None, "num_samples": len(scores)}
    for name, (lo, hi) in GROUPS.items():
        sel = (sizes >= lo) & (sizes <= hi)
        out[f"jaccard_score_{name}"] = float(scores[sel].mean()) if sel.any() else None
    main = scores[(sizes >= 10) & (sizes <= 12)]
    out[M.SE_KEY] = M.bootstrap_se(lambda idx: main[idx].mean(axis=1), len(main))
    return out
