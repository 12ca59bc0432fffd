"""Text-based filter: keep captions that name a class of a target vocabulary.

Upstream DataComp (baselines/apply_filter.py ``load_uids_with_text_entity``) keeps
English captions with a word whose first WordNet synset is one of ImageNet-21k's
classes: ``vocabulary: in21k_wordnet`` is that rule exactly (filters/wordnet.py: NLTK's
reader over WordNet 3.0 from a registry package, upstream's ImageNet-21k list from its
cache). The other vocabularies are lists of class names matched as whole words (a plural
's'/'es' allowed): ``imagenet1k`` (the class names open_clip ships in
``open_clip.zero_shot_metadata``), ``eval`` (the names of the pool's held-out evaluation
items, POOL/holdout/eval.parquet column ``name``: the offline benchmark's target) or a text
file with one name per line.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from datacurate.layout import PoolLayout

from ..api import Batch, Context, Filter, Needs, Param, PoolDataError
from ..registry import register
from .basic import LANG_PARAMS, language_ok

_WORD = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _singular(w: str) -> str:
    if len(w) > 4 and w.endswith("es") and w[-3] in "sxz":
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


def phrase_set(names) -> tuple[set, int]:
    """Class names -> set of token tuples (singular forms), and the longest length."""
    out = set()
    for n in names:
        t = tuple(_singular(w) for w in tokens(str(n)))
        if t:
            out.add(t)
    return out, max((len(t) for t in out), default=0)


def contains_any(text: str, phrases: set, longest: int) -> bool:
    ws = [_singular(w) for w in tokens(text)]
    for i in range(len(ws)):
        for n in range(1, min(longest, len(ws) - i) + 1):
            if tuple(ws[i:i + n]) in phrases:
                return True
    return False


def imagenet_classnames() -> list[str]:
    """open_clip's ImageNet-1k class names, read from its data module without importing
    open_clip (whose package import pulls in torch: ~30 s on a busy 2-core machine)."""
    import importlib.util
    import sys

    if "open_clip.zero_shot_metadata" in sys.modules:
        return list(sys.modules["open_clip.zero_shot_metadata"].IMAGENET_CLASSNAMES)
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise PoolDataError("vocabulary 'imagenet1k' needs open_clip_torch installed (it ships the class names)")
    path = Path(list(spec.submodule_search_locations)[0]) / "zero_shot_metadata.py"
    mod_spec = importlib.util.spec_from_file_location("_datacurate_zero_shot_metadata", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return list(mod.IMAGENET_CLASSNAMES)


IN21K = "in21k_wordnet"   # upstream's rule itself: WordNet first synsets in ImageNet-21k (filters.wordnet)


def load_vocabulary(vocabulary: str, pool: Path) -> list[str]:
    if vocabulary == "imagenet1k":
        return imagenet_classnames()
    if vocabulary == "eval":
        import pyarrow.parquet as pq

        src = PoolLayout.at(pool).holdout_parquet("eval")
        if not src.is_file():
            raise PoolDataError(f"{src}: no held-out evaluation set to take class names from")
        names = pq.read_table(src, columns=["name"]).column("name").to_pylist()
        return sorted({str(n) for n in names if n})
    p = Path(vocabulary)
    if not p.is_file():
        raise PoolDataError(f"vocabulary {vocabulary!r}: use imagenet1k, eval, or a text file (one name per line)")
    return [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]


@register
class TextBased(Filter):
    """Keep English captions naming a class of the target vocabulary (upstream's text-based baseline)."""

    name = "text_based"
    source = "datacomp baselines/apply_filter.py load_uids_with_text_entity"
    params = (Param("vocabulary", str, IN21K, "in21k_wordnet (upstream's rule: a whitespace word whose first "
                    "WordNet 3.0 synset is an ImageNet-21k class) | imagenet1k (open_clip's class names as "
                    "phrases) | eval (POOL/holdout/eval.parquet names) | FILE (one name per line)"),
              *LANG_PARAMS)

    def needs(self) -> Needs:
        return Needs(["text"])

    def setup(self, ctx: Context) -> None:
        if self.vocabulary == IN21K:
            from ..wordnet import in21k_offsets, wordnet

            self.offsets = in21k_offsets()
            wordnet()   # the reader, now: a missing package is an error before the pass, not in it
            return
        self.phrases, self.longest = phrase_set(load_vocabulary(self.vocabulary, ctx.pool))

    def __call__(self, batch: Batch) -> np.ndarray:
        texts = batch.texts()
        if self.vocabulary == IN21K:
            from ..wordnet import names_an_entity

            keep = np.fromiter((names_an_entity(t, self.offsets) for t in texts), bool, len(texts))
        else:
            if not hasattr(self, "phrases"):
                raise RuntimeError("text_based: setup() was not called")
            keep = np.fromiter((contains_any(t, self.phrases, self.longest) for t in texts), bool, len(texts))
        idx = np.flatnonzero(keep)
        if len(idx) and self.english:
            keep[idx] = language_ok(self, [texts[i] for i in idx])
        return keep
