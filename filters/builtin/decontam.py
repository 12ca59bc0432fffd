"""Decontamination: drop pool rows whose image is one of the evaluation images.

Not in upstream DataComp's baselines (upstream checked overlap with its eval sets
after the fact). Two detectors: CLIP image embeddings (cosine similarity to the
nearest held-out eval image, faiss) and perceptual hashes of the pixels (pHash, Hamming
distance to the nearest eval image's hash), which survive re-encoding and resizing.
"""
from __future__ import annotations

import numpy as np

from ..api import Batch, Context, Filter, Needs, Param
from ..image_match import MatchParams
from ..registry import register
from .clip import _check_model
from .targets import load_target_embeddings, load_target_images


@register
class Decontaminate(Filter):
    """Drop rows whose image embedding is within `threshold` cosine similarity of an eval image."""

    name = "decontaminate"
    params = (Param("model", str, "fnet", "embeddings: POOL/metadata/*.npz key {model}_img"),
              Param("target", str, "eval", "eval | trusted (POOL/holdout/{target}.{model}.npz) | npz path"),
              Param("threshold", float, 0.95, "drop when similarity to an eval image >= this", min=-1.0, max=1.0))

    def validate(self) -> None:
        _check_model(self)

    def needs(self) -> Needs:
        return Needs(embeddings=[f"{self.model}_img"])

    def setup(self, ctx: Context) -> None:
        self.targets = load_target_embeddings(ctx.pool, self.target, self.model, "img")

    def __call__(self, batch: Batch) -> np.ndarray:
        from ..faiss_ops import max_similarity

        x = batch.embedding(f"{self.model}_img")
        if len(x) == 0:
            return np.ones(0, bool)
        return max_similarity(x, self.targets) < self.threshold


@register
class DecontaminatePHash(Filter):
    """Drop rows whose image's perceptual hash is within `max_distance` bits of an eval image's."""

    name = "decontaminate_phash"
    params = (Param("target", str, "eval", "held-out split whose images to match: POOL/holdout/{target}.parquet",
                    choices=("eval", "trusted")),
              Param("hash", str, "phash", "perceptual hash", choices=("phash", "dhash")),
              Param("max_distance", int, 6, "drop when Hamming distance <= this (of 64 bits; re-encoding and resizing "
                    "move a pHash by 0-6 bits, unrelated offline-pool pictures sit at >= 8)", min=0, max=64))

    def needs(self) -> Needs:
        return Needs(["key"], pixels=True)

    def setup(self, ctx: Context) -> None:
        from ..image_hash import hash_images

        self.target_hashes = hash_images(load_target_images(ctx.pool, self.target), self.hash)

    def __call__(self, batch: Batch) -> np.ndarray:
        from ..image_hash import HASHES, HashIndex

        keep = np.ones(len(batch), bool)
        hashes, rows = [], []
        for i, img in enumerate(batch.images()):
            if img is None:
                continue
            try:
                hashes.append(HASHES[self.hash](img))
                rows.append(i)
            except Exception:  # undecodable bytes cannot be a copy of an eval image
                continue
        if rows:
            index = HashIndex(self.target_hashes)
            keep[np.asarray(rows)] = ~index.matches(np.asarray(hashes, np.uint64), self.max_distance)
        return keep


_DETECTOR = MatchParams()  # the detector's defaults are the filter's


@register
class DecontaminateLocal(Filter):
    """Drop rows whose image contains an eval image, even pasted small onto a new background."""

    name = "decontaminate_local"
    source = ("local features (SIFT, Lowe 2004) + faiss, flat-colour region outlines, and a masked pixel check; "
              "see filters/image_match.py")
    params = (Param("target", str, "eval", "held-out split whose images to find: POOL/holdout/{target}.parquet",
                    choices=("eval", "trusted")),
              Param("max_off", float, _DETECTOR.max_off, "a copy: in every grid cell of the art at most this "
                    "fraction of pixels differ by more than pixel_tol", min=0.0, max=1.0),
              Param("pixel_tol", float, _DETECTOR.pixel_tol, "per-pixel colour difference (0-255) still counted "
                    "as equal (JPEG re-encoding moves flat art by < 20)", min=0.0, max=255.0),
              Param("max_mean_error", float, _DETECTOR.max_mean_error, "a copy: mean colour difference over the "
                    "art at most this", min=0.0, max=255.0),
              Param("min_side", int, _DETECTOR.min_side, "smallest pasted copy sought (pixels)", min=4),
              Param("candidates", int, _DETECTOR.candidates, "eval images pixel-checked per pool image",
                    min=1, max=200),
              Param("deep", int, _DETECTOR.deep, "best candidates searched at every size and place when no "
                    "placement passes (0: off)", min=0, max=50),
              Param("search_error", float, _DETECTOR.search_error, "searched copy: RMS colour difference over the "
                    "art's opaque pixels at most this (planted copies: <= 15; look-alike emoji: 11-24)",
                    min=0.0, max=255.0),
              Param("min_contrast", float, _DETECTOR.min_contrast, "searched copy: the picture around the art's "
                    "outline differs from the art's edge by at least this (a plain region of the art's colour: ~0)",
                    min=0.0, max=255.0),
              Param("whole_error", float, _DETECTOR.whole_error, "whole-picture copy: RMS difference of 32 x 32 "
                    "thumbnails (laid on white) at most this", min=0.0, max=255.0),
              Param("regions", int, _DETECTOR.regions, "placements from flat-colour regions (the art's outline "
                    "found in the picture) fitted per pool image (0: off)", min=0, max=100),
              Param("region_error", float, _DETECTOR.region_error, "region copy: RMS colour difference over the "
                    "art's opaque pixels at most this (planted copies: <= 18)", min=0.0, max=255.0),
              Param("max_local_error", float, _DETECTOR.max_local_error, "any pasted copy: mean colour difference "
                    "over every window of 1/8 the art's side at most this (planted copies: <= 53; look-alike "
                    "emoji that differ in one spot: 55-137)", min=0.0, max=255.0),
              Param("min_art_pixels", int, _DETECTOR.min_art_pixels, "any pasted copy: at least this many "
                    "opaque art pixels agree (fewer fit other art by chance)", min=0),
              Param("sift_contrast", float, _DETECTOR.sift_contrast, "SIFT contrastThreshold on pool images "
                    "(lower: more keypoints on faint outlines)", min=0.001, max=0.2))

    def needs(self) -> Needs:
        return Needs(["key"], pixels=True)

    def setup(self, ctx: Context) -> None:
        from ..image_match import EvalIndex

        params = MatchParams(**{p.name: getattr(self, p.name) for p in self.params if p.name != "target"})
        self.index = EvalIndex(load_target_images(ctx.pool, self.target), params)

    def __call__(self, batch: Batch) -> np.ndarray:
        keep = np.ones(len(batch), bool)
        for i, img in enumerate(batch.images()):
            if img is None:
                continue
            try:
                img.load()
            except Exception:  # undecodable bytes cannot be a copy of an eval image
                continue
            keep[i] = not self.index.is_copy(self.index.find(img))
        return keep
