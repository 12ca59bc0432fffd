"""faiss building blocks for the embedding filters: k-means, near-duplicates, decontamination.

Pure functions over numpy arrays (rows = samples, L2-normalised float16/float32
embeddings as `embed` writes them). The filter registry wraps them; they know nothing
about pools or parquet. Memory stays bounded: inputs are converted to float32 one
batch at a time, and global steps run in two passes (fit on a sample, then assign
streaming). faiss runs on the GPU when one is present (faiss-gpu, the `gpu` extra) and
never touches a GPU API otherwise.

Upstream facts (mlfoundations/datacomp, baselines/image_based_clustering.py and
baselines/apply_filter.py) are in `UPSTREAM_IMAGE_BASED`.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from datacurate.errors import UserError

# The image-based baseline of DataComp, as upstream runs it:
# - baselines/image_based_clustering.py: faiss.Clustering(d, num_clusters) with L2
#   (GpuIndexFlatL2), niter=20, seed=0, max_points_per_centroid=10_000_000 (no
#   sub-sampling), num_clusters=100_000, on l14_img embeddings of the pool after a
#   caption filter (English, > 1 word, > 5 characters).
# - baselines/apply_filter.py get_centroid_ids_gpu: a sample (and each ImageNet-1k train
#   image embedding) belongs to argmax_j <x, c_j> (inner product with raw centroids);
#   keep the pool samples whose centroid is one of the unique target centroid ids.
UPSTREAM_IMAGE_BASED = {
    "num_clusters": 100_000,
    "niter": 20,
    "seed": 0,
    "spherical": False,
    "max_points_per_centroid": 10_000_000,
    "embedding_key": "l14_img",
    "assign_metric": "ip",
    "target": "ImageNet-1k train images (in1k_clip_vit_l14)",
}

DEFAULT_BATCH = 65_536
# near-duplicate search is exact (flat index) up to this many rows, IVF above.
FLAT_MAX_ROWS = 20_000
# faiss' own default: k-means trains on at most this many points per centroid.
DEFAULT_MAX_POINTS_PER_CENTROID = 256


# --------------------------------------------------------------------------- device


def use_gpu() -> bool:
    """True when faiss was built with GPU support and sees at least one GPU."""
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    try:
        return bool(get is not None and get() > 0 and hasattr(faiss, "StandardGpuResources"))
    except Exception:  # a CPU build may raise instead of answering 0
        return False


_GPU_RES = None


def _gpu_resources():
    global _GPU_RES
    import faiss

    if _GPU_RES is None:
        _GPU_RES = faiss.StandardGpuResources()
    return _GPU_RES


def flat_index(d: int, metric: str = "ip", gpu: bool | None = None):
    """An exact (flat) faiss index of dimension `d`; `metric` is "ip" or "l2".

    On a GPU when `gpu` is True, or None and `use_gpu()`; a CPU index otherwise.
    """
    import faiss

    if metric not in ("ip", "l2"):
        raise UserError(f"faiss metric must be 'ip' or 'l2', not {metric!r}")
    cpu = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
    if gpu is None:
        gpu = use_gpu()
    if gpu:
        return faiss.index_cpu_to_gpu(_gpu_resources(), 0, cpu)
    return cpu


# --------------------------------------------------------------------------- helpers


def as_matrix(x, name: str = "embeddings") -> np.ndarray:
    """Check `x` is a 2-D numeric array with at least one column; no copy."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] == 0:
        raise UserError(f"{name}: expected a 2-D array (rows, dim), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise UserError(f"{name}: expected float16/float32 embeddings, got {x.dtype}")
    return x


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def iter_batches(x: np.ndarray, batch_size: int = DEFAULT_BATCH) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start, float32 contiguous block) over the rows of `x`."""
    if batch_size <= 0:
        raise UserError(f"batch_size must be positive, got {batch_size}")
    for start in range(0, len(x), batch_size):
        yield start, _f32(x[start : start + batch_size])


def sample_rows(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a uniform sample of `size` rows out of `n` (all if size >= n)."""
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=size, replace=False))


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """float32 copy of `x` with unit L2 rows (zero rows stay zero)."""
    x = _f32(x).copy()
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


# --------------------------------------------------------------------------- k-means


KMEANS_PP_MAX_K = 1024


def kmeans_pp_init(x: np.ndarray, k: int, seed: int = 0, max_rows: int = 65_536) -> np.ndarray:
    """Greedy k-means++ seeding on up to `max_rows` rows of `x`.

    Arthur & Vassilvitskii 2007, with 2 + log(k) candidates per step keeping the one
    that lowers the potential most (the variant scikit-learn uses).
    """
    rng = np.random.default_rng(seed)
    x = _f32(x[sample_rows(len(x), max_rows, seed)])
    sq = np.einsum("ij,ij->i", x, x)

    def dist2(c: np.ndarray) -> np.ndarray:  # (m, d) centres -> (m, n) squared distances
        return np.maximum(sq[None, :] - 2 * (c @ x.T) + np.einsum("ij,ij->i", c, c)[:, None], 0)

    trials = 2 + int(np.log(k))
    centers = np.empty((k, x.shape[1]), dtype=np.float32)
    centers[0] = x[rng.integers(len(x))]
    d2 = dist2(centers[:1])[0]
    for j in range(1, k):
        total = float(d2.sum())
        if total <= 0:
            cand = rng.integers(len(x), size=trials)
        else:
            cand = np.searchsorted(np.cumsum(d2), rng.random(trials) * total)
            cand = np.minimum(cand, len(x) - 1)
        new = np.minimum(d2[None, :], dist2(x[cand]))
        best = int(np.argmin(new.sum(axis=1)))
        centers[j] = x[cand[best]]
        d2 = new[best]
    return centers


def fit_kmeans(
    sample: np.ndarray,
    k: int,
    niter: int = 20,
    seed: int = 0,
    spherical: bool = True,
    max_points_per_centroid: int = DEFAULT_MAX_POINTS_PER_CENTROID,
    nredo: int = 1,
    init: str = "auto",
    verbose: bool = False,
) -> np.ndarray:
    """Train faiss k-means on `sample` (n, d); return centroids float32 (k, d).

    `spherical` renormalises centroids each iteration (cosine k-means); upstream's
    image-based baseline uses plain L2 (spherical=False). faiss sub-samples to
    `max_points_per_centroid * k` rows itself (upstream sets 10M to disable that).
    `nredo` > 1 runs k-means that many times and keeps the best objective. `init`:
    "random" (faiss' own: k random rows), "kmeans++" (seeded k-means++ on the sample,
    which avoids merged clusters on well-separated data), or "auto" = k-means++ up to
    `KMEANS_PP_MAX_K` clusters, random above (k-means++ costs k passes over the sample).
    Runs on the GPU when one is present.
    """
    import faiss

    sample = as_matrix(sample, "k-means sample")
    n, d = sample.shape
    if not 1 <= k <= n:
        raise UserError(f"k-means: k={k} clusters needs 1 <= k <= rows ({n})")
    km = faiss.Kmeans(
        d,
        int(k),
        niter=int(niter),
        seed=int(seed),
        spherical=bool(spherical),
        max_points_per_centroid=int(max_points_per_centroid),
        min_points_per_centroid=1,
        nredo=int(nredo),
        verbose=verbose,
        gpu=use_gpu(),
    )
    if init not in ("auto", "random", "kmeans++"):
        raise UserError(f"k-means init must be auto, random or kmeans++, not {init!r}")
    sample = _f32(sample)
    with _one_blas_thread():
        if init == "kmeans++" or (init == "auto" and k <= KMEANS_PP_MAX_K):
            km.train(sample, init_centroids=kmeans_pp_init(sample, int(k), seed))
        else:
            km.train(sample)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def _one_blas_thread():
    """k-means (its start and faiss's training) on one BLAS thread: OpenBLAS's products on 2 threads
    gave other centroids than on 1, so a subset depended on the machine's core count (the tiny
    pool's image-based filter kept 7,665 rows with OPENBLAS_NUM_THREADS=2, 7,926 with 1). One thread
    is the same answer everywhere. Also with a GPU: the k-means++ start is numpy's, on the CPU."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _search_top1(index, x: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(nearest id int64, its score float32) for every row of ``x``, searched in batches."""
    ids = np.empty(len(x), dtype=np.int64)
    scores = np.empty(len(x), dtype=np.float32)
    for start, block in iter_batches(x, batch_size):
        D, I = index.search(block, 1)
        ids[start : start + len(block)] = I[:, 0]
        scores[start : start + len(block)] = D[:, 0]
    return ids, scores


def assign_to_centroids(
    x: np.ndarray,
    centroids: np.ndarray,
    metric: str = "ip",
    batch_size: int = DEFAULT_BATCH,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row of `x`, streaming in batches.

    Returns (assign int64 (n,), score float32 (n,)): score is the inner product for
    metric "ip" (upstream's argmax <x, c>) or the squared L2 distance for "l2".
    """
    x = as_matrix(x)
    centroids = as_matrix(centroids, "centroids")
    if x.shape[1] != centroids.shape[1]:
        raise UserError(
            f"embeddings have dim {x.shape[1]} but centroids have dim {centroids.shape[1]}"
        )
    index = flat_index(centroids.shape[1], metric)
    index.add(_f32(centroids))
    assign, score = _search_top1(index, x, batch_size)
    return assign, score


def kmeans(
    x: np.ndarray,
    k: int,
    niter: int = 20,
    seed: int = 0,
    spherical: bool = True,
    sample_size: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    metric: str | None = None,
    nredo: int = 1,
    init: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Two-pass k-means: fit on a sample of rows, then assign every row in batches.

    `sample_size` defaults to min(n, 256 * k) rows (faiss' own cap); pass n to train on
    everything. Assignment uses inner product when spherical (metric "ip"), L2
    otherwise, unless `metric` says. Returns (centroids float32 (k, d), assign int64 (n,)).
    """
    x = as_matrix(x)
    n = len(x)
    if sample_size is None:
        sample_size = min(n, DEFAULT_MAX_POINTS_PER_CENTROID * int(k))
    rows = sample_rows(n, int(sample_size), seed)
    sample = _f32(x[rows])
    centroids = fit_kmeans(
        sample, k, niter=niter, seed=seed, spherical=spherical, nredo=nredo, init=init,
        max_points_per_centroid=max(DEFAULT_MAX_POINTS_PER_CENTROID, -(-len(sample) // int(k))),
    )
    del sample
    assign, _ = assign_to_centroids(
        x, centroids, metric or ("ip" if spherical else "l2"), batch_size
    )
    return centroids, assign


# --------------------------------------------------------------------------- image-based baseline


def nearest_centroid(
    centroids: np.ndarray, targets: np.ndarray, batch_size: int = DEFAULT_BATCH
) -> set[int]:
    """Ids of the clusters that are the nearest (argmax inner product) to some target row.

    Upstream image-based filter: targets are ImageNet-1k train image embeddings, the
    kept clusters are torch.unique(argmax <target, centroid>).
    """
    assign, _ = assign_to_centroids(targets, centroids, "ip", batch_size)
    return {int(i) for i in np.unique(assign)}


def keep_clusters(assign: np.ndarray, cluster_ids: Iterable[int]) -> np.ndarray:
    """Boolean keep-mask: True where the row's cluster is in `cluster_ids`."""
    ids = np.fromiter((int(i) for i in cluster_ids), dtype=np.int64)
    return np.isin(np.asarray(assign, dtype=np.int64), ids)


# --------------------------------------------------------------------------- near duplicates


def _search_index(x: np.ndarray, batch_size: int, nlist: int, nprobe: int):
    """An inner-product index over all rows of `x`: flat for `nlist` <= 1, IVF-flat otherwise."""
    import faiss

    n, d = x.shape
    if nlist <= 1:
        index = faiss.IndexFlatIP(d)
    else:
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, int(nlist), faiss.METRIC_INNER_PRODUCT)
        train = _f32(x[sample_rows(n, min(n, 64 * int(nlist)), 0)])
        index.train(train)
        index.nprobe = int(nprobe)
    for _, block in iter_batches(x, batch_size):
        index.add(block)
    return index


def _probe_cells(x: np.ndarray, nlist: int, nprobe: int, batch_size: int, seed: int = 0) -> np.ndarray:
    """(n, nprobe) int64: every row's `nprobe` nearest coarse cells, nearest (its home) first.

    The cells are spherical k-means centroids (faiss, random init) fit on 64 rows per cell in
    5 iterations: a partition for pruning, not a clustering anyone reads. The sample size
    decides recall (16 rows per cell lost 1 % of the pairs at 60 k rows, 64 none); more
    iterations did not change it."""
    n, d = x.shape
    cent = fit_kmeans(_f32(x[sample_rows(n, min(n, 64 * nlist), seed)]), nlist, niter=5, seed=seed,
                      spherical=True, init="random")
    index = flat_index(d, "ip", gpu=False)
    index.add(cent)
    probe = np.empty((n, nprobe), dtype=np.int64)
    for start, block in iter_batches(x, batch_size):
        probe[start : start + len(block)] = index.search(block, nprobe)[1]
    return probe


def _cell_join_pairs(x: np.ndarray, threshold: float, nlist: int, nprobe: int, batch_size: int):
    """IVF range search as a join of cells: the same pairs, with BLAS instead of one query at a time.

    Row i meets row j when j's home cell is among i's `nprobe` nearest cells, exactly what
    an IVF-flat index with `nprobe` probes finds for query i. Per cell, the rows probing it
    times the rows living in it is one matrix product (float32, gathered from `x` one cell
    at a time: no float32 copy of the whole matrix). Each pair comes out once, as (i, j)
    with i < j, because j has one home cell (scripts/bench/dedup_speed.py times it)."""
    probe = _probe_cells(x, nlist, nprobe, batch_size)
    home = probe[:, 0]
    residents = np.argsort(home, kind="stable")
    res_at = np.searchsorted(home[residents], np.arange(nlist + 1))
    flat = probe.ravel()
    visitors = np.argsort(flat, kind="stable")
    vis_at = np.searchsorted(flat[visitors], np.arange(nlist + 1))
    visitors //= nprobe                                   # position in probe.ravel() -> row
    del probe, flat
    src, dst = [], []
    for c in range(nlist):
        res = residents[res_at[c] : res_at[c + 1]]
        if len(res) == 0:
            continue
        vis = visitors[vis_at[c] : vis_at[c + 1]]
        sim = _f32(x[vis]) @ _f32(x[res]).T
        qi, ri = np.nonzero(sim >= threshold)
        q, r = vis[qi], res[ri]
        hit = r > q
        src.append(q[hit])
        dst.append(r[hit])
    if not src:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(src), np.concatenate(dst)


def similar_pairs(
    x: np.ndarray,
    threshold: float = 0.95,
    batch_size: int = 16_384,
    nlist: int | None = None,
    nprobe: int = 8,
    k: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i, j), i < j, with cosine similarity >= `threshold`, as two int64 arrays.

    Exact (flat index, range search) up to `FLAT_MAX_ROWS` rows; above that IVF semantics
    with `nlist` = 4 sqrt(n) cells and `nprobe` probes (approximate: a pair split across
    unprobed cells is missed), run on the CPU as a join of cells (`_cell_join_pairs`). On
    a GPU, an IVF-flat k-NN search (`k` neighbours) replaces the range search, which
    faiss-gpu lacks. Memory: the data, one cell's product and the pairs found.
    """
    import faiss

    x = as_matrix(x)
    n = len(x)
    if nlist is None:
        nlist = 0 if n <= FLAT_MAX_ROWS else int(4 * np.sqrt(n))
    gpu = use_gpu()
    if nlist > 1 and not gpu:
        return _cell_join_pairs(x, float(threshold), int(nlist), max(1, min(int(nprobe), int(nlist))),
                                batch_size)
    index = _search_index(x, batch_size, nlist, nprobe)
    if gpu:  # flat and IVF-flat both move to the GPU; searched by k-NN there
        index = faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)
    src, dst = [], []
    for start, block in iter_batches(x, batch_size):
        rows = np.arange(start, start + len(block), dtype=np.int64)
        if gpu:
            D, I = index.search(block, min(int(k), index.ntotal))
            hit = (D >= threshold) & (I > rows[:, None])
            src.append(np.broadcast_to(rows[:, None], I.shape)[hit])
            dst.append(I[hit].astype(np.int64))
        else:
            lims, D, I = index.range_search(block, float(threshold))
            q = np.repeat(rows, np.diff(lims.astype(np.int64)))
            hit = I > q
            src.append(q[hit])
            dst.append(I[hit].astype(np.int64))
    if not src:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(src), np.concatenate(dst)


def group_representatives(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """For edges (src, dst) over n rows, the lowest row index of each row's connected group."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(src) == 0:
        return np.arange(n, dtype=np.int64)
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    lowest = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(lowest, labels, np.arange(n, dtype=np.int64))
    return lowest[labels]


def near_duplicates(
    x: np.ndarray,
    threshold: float = 0.95,
    batch_size: int = 16_384,
    nlist: int | None = None,
    nprobe: int = 8,
) -> np.ndarray:
    """Representative row of every row: the lowest index of its near-duplicate group.

    Rows are linked when their cosine similarity is >= `threshold` (embeddings must be
    L2-normalised); groups are the connected components of those links. Keep rows with
    `rep == np.arange(n)`: one per group, deterministically the first. See
    `similar_pairs` for exactness and memory.
    """
    x = as_matrix(x)
    src, dst = similar_pairs(x, threshold, batch_size, nlist, nprobe)
    return group_representatives(len(x), src, dst)


def semantic_dedup(
    x: np.ndarray,
    clusters: np.ndarray,
    eps: float = 0.05,
    max_block_elems: int = 32_000_000,
) -> np.ndarray:
    """SemDeDup-style keep-mask: within each k-means cluster, drop near-duplicates.

    Rows of a cluster are visited in row order; a row is dropped when its cosine
    similarity to an earlier *kept* row of the same cluster is > 1 - eps (SemDeDup,
    Abbas et al. 2023, uses eps in 0.01-0.1 on pairwise similarity inside k-means
    clusters). `clusters` is the cluster id per row (e.g. from `kmeans`). Memory: one
    block of at most `max_block_elems` float32 similarities.
    """
    x = as_matrix(x)
    clusters = np.asarray(clusters)
    if clusters.shape != (len(x),):
        raise UserError(
            f"semantic_dedup: {len(clusters)} cluster ids for {len(x)} embedding rows"
        )
    thr = 1.0 - float(eps)
    keep = np.ones(len(x), dtype=bool)
    order = np.argsort(clusters, kind="stable")
    bounds = np.flatnonzero(np.diff(clusters[order])) + 1
    for members in np.split(order, bounds):
        if len(members) < 2:
            continue
        xc = _f32(x[members])
        m = len(members)
        # candidates: rows with ANY earlier row above the threshold (a superset of drops)
        step = max(1, max_block_elems // m)
        candidate_rows: list[np.ndarray] = []
        for a in range(0, m, step):
            s = xc[a : a + step] @ xc.T
            s[np.arange(s.shape[0])[:, None] <= (np.arange(m)[None, :] - a)] = -np.inf
            candidate_rows.append(a + np.flatnonzero((s > thr).any(axis=1)))
        cand = np.concatenate(candidate_rows)
        if len(cand) == 0:
            continue
        # greedy pass over candidates only: dropped iff similar to an earlier KEPT row
        kept_local = np.ones(m, dtype=bool)
        for j in cand:
            earlier = np.flatnonzero(kept_local[:j])
            if len(earlier) and float((xc[earlier] @ xc[j]).max()) > thr:
                kept_local[j] = False
        keep[members[~kept_local]] = False
    return keep


# --------------------------------------------------------------------------- decontamination


def nearest_eval(
    x_pool: np.ndarray, x_eval: np.ndarray, batch_size: int = DEFAULT_BATCH
) -> tuple[np.ndarray, np.ndarray]:
    """For every pool row, (max cosine similarity float32, index of that eval row int64).

    Exact: a flat inner-product index over the (small) eval set, pool streamed in batches.
    """
    x_pool = as_matrix(x_pool, "pool embeddings")
    x_eval = as_matrix(x_eval, "eval embeddings")
    if x_pool.shape[1] != x_eval.shape[1]:
        raise UserError(
            f"pool embeddings have dim {x_pool.shape[1]}, eval embeddings {x_eval.shape[1]}"
        )
    if len(x_eval) == 0:
        raise UserError("decontamination needs at least one eval embedding")
    index = flat_index(x_eval.shape[1], "ip")
    for _, block in iter_batches(x_eval, batch_size):
        index.add(block)
    idx, sim = _search_top1(index, x_pool, batch_size)
    return sim, idx


def max_similarity(
    x_pool: np.ndarray, x_eval: np.ndarray, batch_size: int = DEFAULT_BATCH
) -> np.ndarray:
    """Max cosine similarity (float32) of every pool row to any eval row."""
    return nearest_eval(x_pool, x_eval, batch_size)[0]
