"""Deduplication: exact (sha256 of the image bytes), near-duplicate and semantic (embeddings).

Not in upstream DataComp's baselines; common practice since (SemDeDup, Abbas et al.
2023). All three are global: pass 1 collects a small key per row (the hash, or the
embedding), ``fit`` decides which uids to drop, pass 2 drops them. Within a group of
duplicates the row with the smallest uid is kept, so the result does not depend on
the order the shards were read in.
"""
from __future__ import annotations

import numpy as np

from ..api import Batch, Context, Filter, Needs, Param, pack_uids
from ..registry import register
from .clip import _check_model


def _uids(batch: Batch) -> np.ndarray:
    return pack_uids(batch.table.column("uid").to_pylist())


def _uid_order(uids: np.ndarray) -> np.ndarray:
    return np.lexsort((uids[:, 1], uids[:, 0]))


class _DropByUid(Filter):
    """Shared pass 2: drop the uids ``fit`` put in ``self.drop`` (an (n, 2) uint64 array)."""

    is_global = True

    def __call__(self, batch: Batch) -> np.ndarray:
        u = _uids(batch)
        if len(self.drop) == 0:
            return np.ones(len(u), bool)
        d = self.drop.view([("h", np.uint64), ("l", np.uint64)]).ravel()
        q = np.ascontiguousarray(u).view([("h", np.uint64), ("l", np.uint64)]).ravel()
        return ~np.isin(q, d)


@register
class ExactDedup(_DropByUid):
    """Drop exact duplicates: rows with the same sha256 of the image bytes (keeps the smallest uid)."""

    name = "exact_dedup"
    params = (Param("column", str, "sha256", "metadata column holding the content hash"),)

    def needs(self) -> Needs:
        return Needs(["uid", self.column])

    def collect(self, batch: Batch):
        """(uids, first 128 bits of the hash) of the rows that have a hash."""
        import pyarrow.compute as pc

        col = batch.table.column(self.column)
        ok = pc.fill_null(pc.greater_equal(pc.utf8_length(col), 32), False).to_numpy(zero_copy_only=False)
        head = pc.utf8_lower(pc.utf8_slice_codeunits(col.filter(pa_bool(ok)), 0, 32)).to_pylist()
        return _uids(batch)[ok], pack_uids(head)

    def fit(self, parts, ctx: Context) -> None:
        uids = np.concatenate([p[0] for p in parts]) if parts else np.empty((0, 2), np.uint64)
        keys = np.concatenate([p[1] for p in parts]) if parts else np.empty((0, 2), np.uint64)
        order = _uid_order(uids)
        uids, keys = uids[order], np.ascontiguousarray(keys[order])
        _, first = np.unique(keys.view([("h", np.uint64), ("l", np.uint64)]).ravel(), return_index=True)
        dup = np.ones(len(uids), bool)
        dup[first] = False
        self.drop = np.ascontiguousarray(uids[dup])


def pa_bool(mask: np.ndarray):
    import pyarrow as pa

    return pa.array(mask, pa.bool_())


class _EmbeddingDedup(_DropByUid):
    def needs(self) -> Needs:
        return Needs(["uid"], [f"{self.model}_{self.kind}"])

    def validate(self) -> None:
        _check_model(self)

    def collect(self, batch: Batch):
        return _uids(batch), batch.embedding(f"{self.model}_{self.kind}")

    def _gathered(self, parts):
        if not parts:
            return np.empty((0, 2), np.uint64), np.empty((0, 1), np.float32)
        uids = np.concatenate([p[0] for p in parts])
        x = np.concatenate([p[1] for p in parts])
        order = _uid_order(uids)
        return uids[order], x[order]


EMB_PARAMS = (Param("model", str, "fnet", "embeddings: POOL/metadata/*.npz key {model}_{kind}"),
              Param("kind", str, "img", "which embeddings", choices=("img", "txt")))


@register
class NearDedup(_EmbeddingDedup):
    """Drop near-duplicates: rows linked by cosine similarity >= threshold (faiss); one kept per group."""

    name = "near_dedup"
    params = (*EMB_PARAMS,
              Param("threshold", float, 0.95, "cosine similarity at which two rows are duplicates", min=-1.0, max=1.0))

    def fit(self, parts, ctx: Context) -> None:
        from ..faiss_ops import near_duplicates

        uids, x = self._gathered(parts)
        if len(uids) == 0:
            self.drop = uids
            return
        rep = near_duplicates(x, self.threshold)
        self.drop = np.ascontiguousarray(uids[rep != np.arange(len(uids))])


@register
class SemanticDedup(_EmbeddingDedup):
    """SemDeDup: k-means on embeddings, then drop rows within each cluster closer than 1 - eps to a kept row."""

    name = "semantic_dedup"
    params = (*EMB_PARAMS,
              Param("clusters", int, 100, "k-means clusters (SemDeDup uses ~ n / 10000 on LAION)", min=1),
              Param("eps", float, 0.05, "drop when cosine similarity > 1 - eps (SemDeDup: 0.01 .. 0.1)", min=0.0, max=1.0),
              Param("niter", int, 20, "k-means iterations", min=1),
              Param("seed", int, 0, "k-means seed"))

    def fit(self, parts, ctx: Context) -> None:
        from ..faiss_ops import kmeans, semantic_dedup

        uids, x = self._gathered(parts)
        if len(uids) == 0:
            self.drop = uids
            return
        k = min(self.clusters, len(uids))
        _, assign = kmeans(x, k, niter=self.niter, seed=self.seed, spherical=True)
        keep = semantic_dedup(x, assign, self.eps)
        self.drop = np.ascontiguousarray(uids[~keep])


@register
class PHashDedup(_DropByUid):
    """Drop near-duplicate pictures (pHash close, embeddings alike, pixels aligned); one row kept per group.

    Pairs within ``max_distance`` bits (and, with a model, ``min_similarity`` alike) are
    candidates; the pixel check (``min_alignment``) confirms them."""

    name = "phash_dedup"
    params = (Param("hash", str, "phash", "perceptual hash", choices=("phash", "dhash")),
              Param("max_distance", int, 18, "Hamming distance (of 64 bits) at which two pictures may be copies; "
                    "crops, resizes and re-encodings of the offline pool move pHash by 0-20 bits", min=0, max=64),
              Param("model", str, "fnet", "also require embedding similarity: POOL/metadata/*.npz key {model}_img "
                    "(empty string: hashes alone)"),
              Param("min_similarity", float, 0.9, "cosine similarity the embeddings need (with a model)",
                    min=-1.0, max=1.0),
              Param("min_alignment", float, 0.9, "pixel check: correlation the centre of one picture needs, slid "
                    "over the other at the scales their sizes allow (filters/image_align.py); -1: no pixel check",
                    min=-1.0, max=1.0))

    def validate(self) -> None:
        if self.model:
            _check_model(self)

    def needs(self) -> Needs:
        return Needs(["uid", "key"], [f"{self.model}_img"] if self.model else [], pixels=True)

    def collect(self, batch: Batch):
        from ..image_hash import HASHES

        fn = HASHES[self.hash]
        ok, hashes = [], []
        for i, img in enumerate(batch.images()):
            try:
                hashes.append(fn(img))
                ok.append(i)
            except Exception:  # undecodable: nothing to compare
                continue
        ok = np.asarray(ok, np.int64)
        emb = batch.embedding(f"{self.model}_img")[ok] if self.model else None
        keys = [str(k) for k in batch.column("key")[ok]]
        return _uids(batch)[ok], np.asarray(hashes, np.uint64), emb, (str(batch.tar_path), batch.shard, keys)

    def fit(self, parts, ctx: Context) -> None:
        from ..faiss_ops import group_representatives

        parts = [p for p in parts if len(p[0])]
        if not parts:
            self.drop = np.empty((0, 2), np.uint64)
            return
        uids = np.concatenate([p[0] for p in parts])
        hashes = np.concatenate([p[1] for p in parts])
        where = [(tar, shard, k) for p in parts for tar, shard, keys in [p[3]] for k in keys]
        order = _uid_order(uids)
        uids, hashes = uids[order], hashes[order]
        where = [where[i] for i in order]
        x = np.concatenate([p[2] for p in parts])[order].astype(np.float32) if self.model else None
        src, dst = hash_pairs(hashes, x, self.max_distance, self.min_similarity)
        if self.min_alignment > -1 and len(src):
            ok = _pixel_check(src, dst, where, self.min_alignment)
            ctx.notes[f"{self.name}.pairs"] = {"candidates": int(len(src)), "confirmed": int(ok.sum())}
            src, dst = src[ok], dst[ok]
        rep = group_representatives(len(uids), src, dst)
        self.drop = np.ascontiguousarray(uids[rep != np.arange(len(uids))])


def hash_pairs(hashes: np.ndarray, x, max_distance: int, min_similarity: float,
               block_rows: int = 4096, chunk: int = 1 << 18) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (i, j), i < j, whose 64-bit hashes are within ``max_distance`` bits and, when ``x``
    (float32 embeddings, one row per hash) is given, whose embeddings are ``min_similarity`` alike.

    ``block_rows`` query rows at a time, and the similarity of their pairs ``chunk`` pairs at a time:
    the emoji pool puts 1 % of all pairs within 18 bits, which at 97 k rows is 44 M pairs, 45 GB as
    gathered float32 embeddings in one go (the base study was killed for memory on it)."""
    import faiss

    from ..image_hash import _as_codes

    codes = _as_codes(np.asarray(hashes, np.uint64))
    index = faiss.IndexBinaryFlat(64)
    index.add(codes)
    found_src, found_dst = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for rows in _blocks(len(codes), block_rows):
        lims, _, nbr = index.range_search(codes[rows], int(max_distance) + 1)  # binary radius is strict
        src = np.repeat(np.arange(rows.start, rows.stop, dtype=np.int64), np.diff(lims.astype(np.int64)))
        dst = nbr.astype(np.int64)
        sel = dst > src
        src, dst = src[sel], dst[sel]
        if x is not None and len(src):
            keep = np.empty(len(src), dtype=bool)
            for c in _blocks(len(src), chunk):
                keep[c] = np.einsum("ij,ij->i", x[src[c]], x[dst[c]]) >= min_similarity
            src, dst = src[keep], dst[keep]
        found_src.append(src)
        found_dst.append(dst)
    return np.concatenate(found_src), np.concatenate(found_dst)


def _blocks(n: int, size: int) -> list[slice]:
    return [slice(s, min(n, s + size)) for s in range(0, n, size)]


def _pixel_check(src: np.ndarray, dst: np.ndarray, where: list, min_alignment: float) -> np.ndarray:
    """Which candidate pairs (row indices into ``where``: (tar, shard, key)) are the same picture.

    Pairs are checked on every core, in chunks on threads (OpenCV releases the GIL; its own
    threads are held to one meanwhile so the cores are not oversubscribed); each pair's answer
    is its own, so the result does not depend on the thread count."""
    import os
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    import cv2
    from tqdm import tqdm

    from datacurate.images import read_tar_images
    from ..image_align import Thumb, aligned

    rows = np.unique(np.concatenate([src, dst]))
    by_tar: dict = {}
    for r in rows.tolist():
        tar, shard, key = where[r]
        by_tar.setdefault((tar, shard), []).append((r, key))
    thumbs = {}
    for (tar, shard), items in by_tar.items():  # one read per shard, small thumbnails kept
        blobs = read_tar_images(Path(tar), [k for _, k in items], shard)
        for r, k in items:
            thumbs[r] = Thumb(blobs[k])
    pairs = list(zip(src.tolist(), dst.tolist()))
    chunks = [pairs[i: i + 256] for i in range(0, len(pairs), 256)]
    out: list[bool] = []
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool, \
                tqdm(total=len(pairs), desc="phash_dedup pixel check", unit="pair", mininterval=2.0,
                     leave=False) as bar:
            for done in pool.map(lambda c: [aligned(thumbs[a], thumbs[b], min_alignment) for a, b in c], chunks):
                out.extend(done)
                bar.update(len(done))
    finally:
        cv2.setNumThreads(before)
    return np.asarray(out, dtype=bool)
