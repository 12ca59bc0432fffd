"""faiss building blocks on constructed inputs whose right answer is known."""
from __future__ import annotations

import numpy as np
import pytest

from datacurate.errors import UserError
from filters import faiss_ops as F


def unit(rng, n, d):
    return F.normalize_rows(rng.normal(size=(n, d)))


def blobs(seed=0, k=5, n=2000, d=32, noise=0.05):
    rng = np.random.default_rng(seed)
    centres = unit(rng, k, d)
    label = rng.integers(0, k, n)
    x = F.normalize_rows(centres[label] + noise * rng.normal(size=(n, d)))
    return centres, label, x.astype(np.float16)


def same_partition(a, b) -> bool:
    """True when two labelings define the same clusters (up to renaming)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_use_gpu_false_without_gpu():
    import faiss

    assert F.use_gpu() == (faiss.get_num_gpus() > 0)
    if not F.use_gpu():
        assert type(F.flat_index(8)).__name__ == "IndexFlatIP"


@pytest.mark.parametrize("spherical", [True, False])
def test_kmeans_recovers_separated_blobs(spherical):
    centres, label, x = blobs()
    got_centres, assign = F.kmeans(x, 5, seed=0, spherical=spherical, batch_size=300)
    assert got_centres.shape == (5, 32) and got_centres.dtype == np.float32
    assert assign.shape == (2000,)
    assert same_partition(label, assign)
    # streaming assignment of new points from the same blobs agrees with their blob
    rng = np.random.default_rng(1)
    new = F.normalize_rows(centres[[0, 1, 2, 3, 4]] + 0.05 * rng.normal(size=(5, 32)))
    new_assign, _ = F.assign_to_centroids(new, got_centres)
    first = {int(label[i]): int(assign[i]) for i in range(2000)}
    assert new_assign.tolist() == [first[j] for j in range(5)]


def test_kmeans_two_pass_on_sample_matches_full():
    _, label, x = blobs(seed=3, n=4000)
    _, assign = F.kmeans(x, 5, seed=0, sample_size=500, batch_size=512)
    assert same_partition(label, assign)


def test_kmeans_runs_on_one_blas_thread_whatever_the_caller_allows(monkeypatch):
    """OpenBLAS's products on 2 threads gave the k-means++ start other centroids than on 1 (the tiny
    pool's image-based filter kept 7,665 rows with OPENBLAS_NUM_THREADS=2, 7,926 with 1): a subset
    depended on the machine's cores. The start and faiss's training run on one BLAS thread."""
    from threadpoolctl import threadpool_info, threadpool_limits

    seen = []
    start = F.kmeans_pp_init

    def watched(*a, **kw):
        seen.append(max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"))
        return start(*a, **kw)

    monkeypatch.setattr(F, "kmeans_pp_init", watched)
    x = np.random.default_rng(0).standard_normal((2000, 16)).astype(np.float32)
    with threadpool_limits(limits=2, user_api="blas"):
        F.fit_kmeans(x, 10, seed=0, init="kmeans++")
        assert max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas") == 2
    assert seen == [1]


def test_image_based_keeps_clusters_nearest_to_targets():
    centres, label, x = blobs(seed=2)
    cent, assign = F.kmeans(x, 5, seed=0)
    rng = np.random.default_rng(5)
    # targets drawn around blobs 1 and 3 only
    targets = F.normalize_rows(centres[[1, 1, 3, 3, 3]] + 0.05 * rng.normal(size=(5, 32)))
    ids = F.nearest_centroid(cent, targets)
    assert len(ids) == 2
    mask = F.keep_clusters(assign, ids)
    assert mask.dtype == bool
    assert np.array_equal(mask, np.isin(label, [1, 3]))


def planted(seed=0, n=3000, d=64):
    rng = np.random.default_rng(seed)
    x = unit(rng, n, d)
    dup_of = {}
    for j, i in [(2900, 10), (2950, 10), (1500, 7), (2000, 1999)]:
        x[j] = F.normalize_rows(x[i : i + 1] + 0.01 * rng.normal(size=(1, d)))[0]
        dup_of[j] = i
    x[2500] = x[42]  # exact copy
    dup_of[2500] = 42
    return x.astype(np.float16), dup_of


@pytest.mark.parametrize("nlist", [None, 16])
def test_near_duplicates_planted(nlist):
    x, dup_of = planted()
    rep = F.near_duplicates(x, threshold=0.95, batch_size=700, nlist=nlist, nprobe=4)
    expected = np.arange(len(x))
    for j, i in dup_of.items():
        expected[j] = i
    assert rep.tolist() == expected.tolist()  # every planted copy found, nothing else
    keep = rep == np.arange(len(x))
    assert keep.sum() == len(x) - len(dup_of)


def _exact_pairs(x, threshold):
    xf = x.astype(np.float32)
    i, j = np.nonzero(np.triu(xf @ xf.T, 1) >= threshold)
    return set(zip(i.tolist(), j.tolist()))


def test_cell_join_finds_each_pair_once_and_all_of_them_when_every_cell_is_probed():
    """The CPU join of cells is IVF semantics: probing every cell is the exact search; fewer
    probes find a subset of the exact pairs, never a pair twice nor one below the threshold."""
    rng = np.random.default_rng(4)
    centres = unit(rng, 12, 32)
    x = F.normalize_rows(centres[rng.integers(0, 12, 1500)] + 0.08 * rng.normal(size=(1500, 32)))
    exact = _exact_pairs(x, 0.9)
    assert len(exact) > 1000                       # dense blobs: many pairs, many across cells
    src, dst = F.similar_pairs(x, 0.9, nlist=24, nprobe=24)
    assert (src < dst).all() and len(set(zip(src.tolist(), dst.tolist()))) == len(src)
    assert set(zip(src.tolist(), dst.tolist())) == exact
    src, dst = F.similar_pairs(x, 0.9, nlist=24, nprobe=2)
    found = set(zip(src.tolist(), dst.tolist()))
    assert len(found) == len(src) and found < exact and len(found) > 0.5 * len(exact)


def test_near_duplicates_chain_goes_to_lowest_index():
    rng = np.random.default_rng(0)
    x = unit(rng, 50, 16)
    x[30] = x[5]
    x[20] = x[30]
    rep = F.near_duplicates(x)
    assert rep[[5, 20, 30]].tolist() == [5, 5, 5]


def test_semantic_dedup_drops_only_planted():
    x, dup_of = planted(seed=1)
    _, assign = F.kmeans(x, 8, seed=0)
    keep = F.semantic_dedup(x, assign, eps=0.05, max_block_elems=100_000)
    assert sorted(np.flatnonzero(~keep).tolist()) == sorted(dup_of)
    # eps = 0: nothing is more similar than 1.0, nothing dropped
    assert F.semantic_dedup(x.astype(np.float32), assign, eps=0.0).sum() >= len(x) - 1


def test_semantic_dedup_greedy_keeps_against_kept_only():
    # a ~ b ~ c in a chain where a and c are NOT similar: b dropped (near a), c kept
    a = np.array([1.0, 0.0, 0.0])
    c = np.array([np.cos(0.5), np.sin(0.5), 0.0])
    b = F.normalize_rows((a + c)[None])[0]
    x = np.stack([a, b, c]).astype(np.float32)
    keep = F.semantic_dedup(x, np.zeros(3, int), eps=1 - float(a @ b) + 1e-4)
    assert keep.tolist() == [True, False, True]


def test_decontamination_max_similarity():
    rng = np.random.default_rng(0)
    pool = unit(rng, 1000, 32)
    ev = unit(rng, 20, 32)
    pool[[3, 500]] = ev[[7, 12]]
    sim, idx = F.nearest_eval(pool.astype(np.float16), ev, batch_size=128)
    assert sim.dtype == np.float32
    assert np.flatnonzero(sim > 0.99).tolist() == [3, 500]
    assert idx[[3, 500]].tolist() == [7, 12]
    assert np.allclose(F.max_similarity(pool, ev), sim, atol=1e-3)


def test_bad_inputs_refused():
    with pytest.raises(UserError, match="2-D"):
        F.kmeans(np.zeros(10, np.float32), 2)
    with pytest.raises(UserError, match="k=50"):
        F.kmeans(np.ones((10, 4), np.float32), 50)
    with pytest.raises(UserError, match="dim"):
        F.nearest_eval(np.ones((3, 4), np.float32), np.ones((3, 5), np.float32))
    with pytest.raises(UserError, match="cluster ids"):
        F.semantic_dedup(np.ones((3, 4), np.float32), np.zeros(2, int))
    with pytest.raises(UserError, match="float"):
        F.near_duplicates(np.ones((3, 4), np.int64))
