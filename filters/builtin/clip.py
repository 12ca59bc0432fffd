"""CLIP-score filters: the score column of a model, LAION-2B's rule, the filtering network.

Upstream DataComp (baselines/apply_filter.py ``load_uids_with_clip_score``): keep rows
whose ``clip_{b32,l14}_similarity_score`` is >= a threshold (0.3 for B/32 in the paper's
tables) or in the top fraction of the pool (30 %), and ``laion2b``: B/32 score >= 0.28
and English (gcld3 upstream; fasttext lid.176 here).
"""
from __future__ import annotations

import re

import numpy as np

from ..api import Batch, Filter, Needs, Param, RecipeError
from ..registry import register
from .basic import LANG_PARAMS, language_ok


def score_column(model: str) -> str:
    return f"clip_{model}_similarity_score"


def _check_model(f) -> None:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", f.model):
        raise RecipeError(f"{f.where}: field 'model' = {f.model!r} is not a model name "
                          "(lowercase letters, digits, '_': b32, l14, fnet, ...)")


@register
class ClipScore(Filter):
    """CLIP image-text similarity of a model (column clip_{model}_similarity_score); use with top_fraction or threshold."""

    name = "clip_score"
    output = "score"
    source = "datacomp baselines/apply_filter.py load_uids_with_clip_score"
    params = (Param("model", str, "b32", "short model name: b32, l14 (upstream columns), fnet (filtering network)"),)

    def validate(self) -> None:
        _check_model(self)

    def needs(self) -> Needs:
        return Needs([score_column(self.model)])

    def __call__(self, batch: Batch) -> np.ndarray:
        return batch.column(score_column(self.model))    # in the column's dtype: see engine.select


@register
class FilterNetScore(ClipScore):
    """Score of the trained filtering network (DFN-style, `datacurate filter-net train`); top 30 % unless told."""

    name = "fnet_score"
    source = "Fang et al. 2023, Data Filtering Networks"
    params = (Param("model", str, "fnet", "name the filtering network's embeddings were stored under"),
              Param("fraction", float, 0.3, "top fraction kept when the step gives no top_fraction/threshold",
                    min=0.0, max=1.0))

    def default_selection(self):
        return {"top_fraction": self.fraction}


@register
class Laion2B(Filter):
    """LAION-2B's rule as upstream reproduces it: CLIP B/32 score >= 0.28 and English caption."""

    name = "laion2b"
    source = "datacomp baselines/apply_filter.py (name == 'laion2b')"
    params = (Param("model", str, "b32", "model whose score column is used (upstream: b32)"),
              Param("threshold", float, 0.28, "keep score >= this (upstream: 0.28)"),
              *LANG_PARAMS)

    def validate(self) -> None:
        _check_model(self)

    def needs(self) -> Needs:
        return Needs(["text", score_column(self.model)])

    def __call__(self, batch: Batch) -> np.ndarray:
        score = batch.column(score_column(self.model))
        if not np.issubdtype(score.dtype, np.floating):
            score = score.astype(np.float64)
        keep = score >= score.dtype.type(self.threshold)     # in the column's dtype, as upstream
        idx = np.flatnonzero(keep)
        if len(idx) and self.english:
            texts = batch.texts()
            keep[idx] = language_ok(self, [texts[i] for i in idx])
        return keep
