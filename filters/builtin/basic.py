"""no_filter, random, basic, caption: the metadata-only baselines.

Thresholds are upstream DataComp's (baselines/apply_filter.py,
``load_uids_with_basic_filter_helper`` and ``caption_filter``). Upstream's image-size
rule (min side >= 200 px, aspect ratio <= 3) fits 224 px web crawls; the offline
pools hold smaller pictures, so their recipes set ``min_side`` lower (see
filters/recipes/basic_offline.yaml).
"""
from __future__ import annotations

import re

import numpy as np

from ..api import Batch, Filter, Needs, Param, pack_uids
from ..registry import register
from .language import BACKENDS, is_language

LANG_PARAMS = (
    Param("english", bool, True, "keep only captions identified as `language`"),
    Param("language", str, "en", "ISO 639-1 code to keep"),
    Param("lang_backend", str, "fasttext", "language-id model bundled in a package", choices=BACKENDS),
)


TOKENIZERS = ("whitespace", "fasttext")
# fastText's word separators (Dictionary::readWord): ASCII space, \n \r \t \v \f and NUL. Each
# newline also yields an end-of-sentence token "</s>"; NBSP and other Unicode spaces are not separators.
_FASTTEXT_WORD = re.compile("[^ \n\r\t\v\f\x00]+")


def fasttext_token_count(text: str) -> int:
    """``len(fasttext.tokenize(text))``, as upstream's caption_filter counts words.

    Re-stated from fastText's ``Dictionary::readWord`` (the pybind ``tokenize`` calls it until
    EOF): a token is a run of non-separator bytes, and every ``\n`` adds one ``</s>``.
    """
    return len(_FASTTEXT_WORD.findall(text)) + text.count("\n")


def words_and_chars(texts: list[str], tokenizer: str = "whitespace") -> tuple[np.ndarray, np.ndarray]:
    """Words per caption (``str.split()`` as upstream's basic filter, or fastText's tokenizer as its
    caption filter) and characters (``len``, code points, as upstream)."""
    count = fasttext_token_count if tokenizer == "fasttext" else (lambda t: len(t.split()))
    words = np.fromiter((count(t) for t in texts), dtype=np.int64, count=len(texts))
    chars = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    return words, chars


def language_ok(f, texts: list[str]) -> np.ndarray:
    if not f.english:
        return np.ones(len(texts), bool)
    return is_language(texts, f.language, f.lang_backend)


def _english_where_kept(f, texts: list[str], keep: np.ndarray) -> np.ndarray:
    """Run language id only on rows the other rules kept (it is the slow part)."""
    idx = np.flatnonzero(keep)
    if len(idx) and f.english:
        keep[idx] = language_ok(f, [texts[i] for i in idx])
    return keep


def caption_keep(f, texts: list[str], english: bool = True) -> np.ndarray:
    """Upstream's caption rules: enough words and characters (and English unless ``english`` is False)."""
    words, chars = words_and_chars(texts, getattr(f, "tokenizer", "whitespace"))
    keep = (words >= f.min_words) & (chars >= f.min_chars)
    return _english_where_kept(f, texts, keep) if english else keep


@register
class NoFilter(Filter):
    """Keep everything (upstream baseline `no_filter`)."""

    name = "no_filter"
    source = "datacomp baselines/apply_filter.py load_uids"

    def __call__(self, batch: Batch) -> np.ndarray:
        return np.ones(len(batch), bool)


def uid_uniform(uids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per uid, fixed by (uid, seed): independent of order and batching."""
    x = uids[:, 0] ^ (uids[:, 1] * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(seed * 0xBF58476D1CE4E5B9 % 2**64)
    # splitmix64 finaliser
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


@register
class RandomSubset(Filter):
    """A random subset of a fixed fraction: scores each uid by a seeded hash, keeps the top `fraction`."""

    name = "random"
    output = "score"
    params = (Param("fraction", float, 0.3, "fraction of the rows reaching the step to keep", min=0.0, max=1.0),
              Param("seed", int, 0, "random seed (`datacurate filter --seed` sets it unless the recipe does)"))

    def needs(self) -> Needs:
        return Needs(["uid"])

    def __call__(self, batch: Batch) -> np.ndarray:
        return uid_uniform(pack_uids(batch.table.column("uid").to_pylist()), self.seed)

    def default_selection(self):
        return {"top_fraction": self.fraction}


@register
class Basic(Filter):
    """Upstream's basic filter: caption words and characters, English, image size and aspect ratio."""

    name = "basic"
    source = "datacomp baselines/apply_filter.py load_uids_with_basic_filter_helper"
    params = (
        Param("min_words", int, 3, "keep captions with at least this many words (upstream: > 2)", min=0),
        Param("min_chars", int, 6, "keep captions with at least this many characters (upstream: > 5)", min=0),
        *LANG_PARAMS,
        Param("min_side", int, 200, "keep images whose shorter side is >= this (upstream: 200 px)", min=0),
        Param("max_aspect", float, 3.0, "keep images with long/short side <= this (upstream: 3.0)", min=1.0),
    )

    def needs(self) -> Needs:
        return Needs(["text", "original_width", "original_height"])

    def __call__(self, batch: Batch) -> np.ndarray:
        texts = batch.texts()
        keep = caption_keep(self, texts, english=False)
        w = batch.column("original_width").astype(np.float64)
        h = batch.column("original_height").astype(np.float64)
        lo, hi = np.minimum(w, h), np.maximum(w, h)
        with np.errstate(divide="ignore", invalid="ignore"):
            aspect = np.where(lo > 0, hi / lo, np.inf)
        keep &= (lo >= self.min_side) & (aspect <= self.max_aspect)
        return _english_where_kept(self, texts, keep)


@register
class Caption(Filter):
    """Upstream's caption filter of the image-based baseline: English, > 1 word, > 5 characters."""

    name = "caption"
    source = "datacomp baselines/apply_filter.py caption_filter"
    params = (
        Param("min_words", int, 2, "keep captions with at least this many words (upstream: > 1)", min=0),
        Param("min_chars", int, 6, "keep captions with at least this many characters (upstream: > 5)", min=0),
        Param("tokenizer", str, "fasttext", "how words are counted: fastText's tokenizer as upstream's "
              "caption_filter (a newline counts as a word, NBSP does not split), or str.split()",
              choices=TOKENIZERS),
        *LANG_PARAMS,
    )

    def needs(self) -> Needs:
        return Needs(["text"])

    def __call__(self, batch: Batch) -> np.ndarray:
        return caption_keep(self, batch.texts())


@register
class UidList(Filter):
    """Keep the rows whose uid is in an upstream subset file (.npy of sorted u8,u8 uids)."""

    name = "uid_list"
    source = "datacomp subset format (baselines/apply_filter.py np.save of u8,u8 uids)"
    params = (Param("path", str, doc="subset .npy (e.g. another recipe's output or an upstream baseline)"),
              Param("exclude", bool, False, "drop the listed uids instead of keeping them"))

    def needs(self) -> Needs:
        return Needs(["uid"])

    def setup(self, ctx) -> None:
        from datacurate.uids import read_subset

        arr = read_subset(self.path)
        self.listed = np.stack([arr["f0"], arr["f1"]], axis=1).astype(np.uint64) if len(arr) else \
            np.empty((0, 2), np.uint64)

    def __call__(self, batch: Batch) -> np.ndarray:
        u = np.ascontiguousarray(pack_uids(batch.table.column("uid").to_pylist()))
        dt = [("h", np.uint64), ("l", np.uint64)]
        hit = np.isin(u.view(dt).ravel(), np.ascontiguousarray(self.listed).view(dt).ravel())
        return ~hit if self.exclude else hit
