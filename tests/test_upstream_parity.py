"""Upstream's baselines on an upstream-format pool: the same uids as upstream's own rules.

Each expected subset is an independent re-statement of upstream's code (mlfoundations/datacomp
baselines/apply_filter.py: ``image_filter_helper``, ``get_centroid_ids_gpu``, ``caption_filter``,
``get_threshold``), computed here with numpy on the same files, never with datacurate's code.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from test_filters_helpers import run

D = 16


def _upstream_pool(root: Path, n: int = 240, seed: int = 0) -> dict:
    """metadata/NNNNNNNN.parquet (uid, text, clip_l14_similarity_score float32) + .npz (l14_img float16),
    upstream's download layout; captions include ones upstream's caption filter drops."""
    from datacurate.uids import make_uid

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, D))
    texts = ["a photo of a small brown dog on green grass", "dog", "a red car parked near the old stone house",
             "cat\u00a0photo", "a bowl of fresh fruit on a wooden table"]
    rows = {"uid": [], "text": [], "score": [], "emb": []}
    for i in range(n):
        c = centres[i % 12]
        rows["uid"].append(make_uid("upstream-parity", i))
        rows["text"].append(texts[i % len(texts)])
        rows["score"].append(np.float32(rng.uniform(0.1, 0.4)))
        rows["emb"].append(c + 0.3 * rng.normal(size=D))
    emb = np.asarray(rows["emb"], np.float32)
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float16)
    meta = root / "metadata"
    meta.mkdir(parents=True)
    for s, start in enumerate(range(0, n, 100)):
        sl = slice(start, start + 100)
        pq.write_table(pa.table({"uid": rows["uid"][sl], "text": rows["text"][sl],
                                 "clip_l14_similarity_score": pa.array(rows["score"][sl], pa.float32())}),
                       meta / f"{s:08d}.parquet")
        np.savez(meta / f"{s:08d}.npz", l14_img=emb[sl], l14_txt=emb[sl])
    return {"uid": np.asarray(rows["uid"]), "text": rows["text"], "score": np.asarray(rows["score"], np.float32),
            "emb": emb, "centres": centres}


def _upstream_assets(cache: Path, pool: dict, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """upstream's cache as its download() leaves it: small_centroids.pt (torch.save of a numpy array)
    and in1k_clip_vit_l14_{0..4}.pt ({"image_features": tensor})."""
    import torch

    rng = np.random.default_rng(seed)
    cache.mkdir(parents=True)
    centroids = (pool["centres"] + 0.05 * rng.normal(size=pool["centres"].shape)).astype(np.float32)
    torch.save(centroids, cache / "small_centroids.pt", pickle_protocol=4)
    targets = pool["centres"][[0, 3, 7]] + 0.1 * rng.normal(size=(3, D))      # near 3 of the 12 clusters
    targets = np.repeat(targets, 2, axis=0).astype(np.float16)                    # 6 rows, 5 files
    for i, part in enumerate(np.array_split(targets, 5)):
        torch.save({"image_features": torch.from_numpy(part)}, cache / f"in1k_clip_vit_l14_{i}.pt")
    return centroids, targets.astype(np.float32)


def _upstream_caption_filter(texts: list[str]) -> np.ndarray:
    """caption_filter: len(fasttext.tokenize(x)) > 1 and len(x) > 5 (all captions here are English,
    fastText's language id keeps them; tokenize splits on ASCII whitespace and NUL, not NBSP)."""
    import re

    words = np.asarray([len(re.findall("[^ \n\r\t\v\f\x00]+", t)) + t.count("\n") for t in texts])
    return (words > 1) & (np.asarray([len(t) for t in texts]) > 5)


def _upstream_labels(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return np.argmax(np.einsum("ik, jk -> ij", x.astype(np.float32), centroids), axis=1)


@pytest.fixture()
def upstream(tmp_path, monkeypatch):
    pool = _upstream_pool(tmp_path / "pool")
    centroids, targets = _upstream_assets(tmp_path / "datacomp", pool)
    monkeypatch.setenv("DATACOMP_CACHE", str(tmp_path / "datacomp"))
    monkeypatch.setenv("DATACURATE_SKIP_ASSET_SHA256", "1")   # these are stand-ins, not upstream's bytes
    return tmp_path / "pool", pool, centroids, targets


def test_image_based_l14_is_upstreams_subset(upstream, tmp_path):
    pool_dir, pool, centroids, targets = upstream
    target_ids = np.unique(_upstream_labels(targets, centroids))
    cap = _upstream_caption_filter(pool["text"])
    want = set(pool["uid"][cap & np.isin(_upstream_labels(pool["emb"], centroids), target_ids)])
    assert 0 < len(want) < cap.sum()          # the rule keeps some clusters and drops others
    got, rec = run(pool_dir / "metadata", "steps:\n  - {filter: image_based, model: l14, target: in1k_l14, "
                   "centroids: auto}\n", tmp_path)
    assert got == want


def test_image_based_and_clip_l14_top30_is_upstreams_subset(upstream, tmp_path):
    pool_dir, pool, centroids, targets = upstream
    scores = pool["score"]
    n = int(len(scores) * 0.3)
    threshold = -np.sort(-scores)[n]                          # get_threshold, on the float32 column
    above = scores >= threshold
    target_ids = np.unique(_upstream_labels(targets, centroids))
    cap = _upstream_caption_filter(pool["text"])
    want = set(pool["uid"][above & cap & np.isin(_upstream_labels(pool["emb"], centroids), target_ids)])
    assert want
    shipped = Path(__file__).resolve().parents[1] / "filters" / "recipes" / "image_based_and_clip_l14_top30.yaml"
    got, _ = run(pool_dir, shipped.read_text(), tmp_path, "ic")    # the built-in recipe, as shipped
    assert got == want


def test_upstream_centroid_and_target_files_read_as_they_are(upstream, tmp_path):
    from filters.upstream_assets import in1k_l14_features, load_centroids, nearest_upstream_scale

    _, _, centroids, targets = upstream
    got, what = load_centroids("small")
    assert np.array_equal(got, centroids) and "small" in what
    assert np.allclose(in1k_l14_features(), targets)
    assert [nearest_upstream_scale(n) for n in (240, 12_000_000, 100_000_000, 2_000_000_000, 10**11)] == \
        ["small", "small", "medium", "large", "xlarge"]


def test_missing_or_altered_upstream_assets_are_one_line_errors(tmp_path, monkeypatch):
    from datacurate.errors import UserError
    from filters.upstream_assets import asset_path, load_centroids

    monkeypatch.setenv("DATACOMP_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv("DATACURATE_SKIP_ASSET_SHA256", raising=False)
    with pytest.raises(UserError, match=r"small_centroids\.pt: missing; upstream's baselines download it from "
                                        r"https://github\.com/sagadre/datacomp_baseline_assets/.*small_centroids_l14\.pt"):
        load_centroids("small")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "medium_centroids.pt").write_bytes(b"partial")
    with pytest.raises(UserError, match=r"medium_centroids\.pt: sha256 differs from upstream's 028b1721"):
        asset_path("medium_centroids")


def test_text_based_is_upstreams_wordnet_rule(tmp_path, monkeypatch):
    """``text_based`` keeps what upstream's does_contain_text_entity keeps: a whitespace word whose first
    WordNet synset (NLTK's reader, WordNet 3.0) is in upstream's ImageNet-21k list; English only."""
    import nltk  # noqa: F401  (the re-statement below calls NLTK as upstream does)

    from filters.wordnet import wordnet

    cache = tmp_path / "datacomp"
    cache.mkdir()
    # a stand-in for upstream's imagenet21k_wordnet_ids: dog, goldfish, sports car, the cat family
    (cache / "imagenet21k_wordnet_ids.pt").write_text("n02084071\nn01443537\nn04285008\nn02120997\n")
    monkeypatch.setenv("DATACOMP_CACHE", str(cache))
    monkeypatch.setenv("DATACURATE_SKIP_ASSET_SHA256", "1")
    from datacurate.uids import make_uid

    texts = ["two dogs asleep on a sofa", "Dogs!", "the goldfish swims in a bowl", "a red sports car",
             "a yellow triangle on white", "running dogs", "a tabby cat", "un chien dans la neige profonde",
             "hotdog stand at noon", "a car and a dog"]
    meta = tmp_path / "pool" / "metadata"
    meta.mkdir(parents=True)
    uids = [make_uid("text-based", i) for i in range(len(texts))]
    pq.write_table(pa.table({"uid": uids, "text": texts}), meta / "00000000.parquet")
    # upstream, re-stated: english (fastText) & any(wordnet.synsets(w)[0].offset() in ids for w in text.split())
    ids = {2084071, 1443537, 4285008, 2120997}
    wn = wordnet()
    entity = [any((wn.synsets(w) or [None])[0] is not None and wn.synsets(w)[0].offset() in ids
                  for w in t.split()) for t in texts]
    english = [i != 7 for i in range(len(texts))]       # the French caption
    want = {u for u, e, en in zip(uids, entity, english) if e and en}
    assert 3 <= len(want) < len(texts)
    got, _ = run(tmp_path / "pool", "steps:\n  - {filter: text_based}\n", tmp_path)
    assert got == want


def _upstream_train_kmeans(embeddings: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """image_based_clustering.train_kmeans on one device, re-stated: faiss.Clustering with L2, niter 20,
    the seed, max_points_per_centroid 10M, faiss's own start (a flat L2 index in place of the GPU one)."""
    import faiss

    cluster = faiss.Clustering(embeddings.shape[1], k)
    cluster.niter = 20
    cluster.seed = seed
    cluster.max_points_per_centroid = 10000000
    cluster.train(embeddings, faiss.IndexFlatL2(embeddings.shape[1]))
    return faiss.vector_float_to_array(cluster.centroids).reshape(k, embeddings.shape[1])


def test_image_based_fitted_kmeans_is_upstreams_clustering(upstream, tmp_path):
    """Without given centroids, image_based fits upstream's k-means: the caption-filtered l14_img rows,
    shards in name order (fs.ls of a bucket), as float32; then upstream's assignment and target clusters."""
    import glob

    pool_dir, pool, _, targets = upstream
    cap = _upstream_caption_filter(pool["text"])
    files = sorted(glob.glob(str(pool_dir / "metadata" / "*.npz")))
    emb = np.vstack([np.load(f)["l14_img"] for f in files])[cap].astype(np.float32)   # load_embedding order
    k = 20                                        # more clusters than centres: the start decides the optimum
    centroids = _upstream_train_kmeans(emb, k)
    target_ids = np.unique(_upstream_labels(targets, centroids))
    want = set(pool["uid"][cap & np.isin(_upstream_labels(pool["emb"], centroids), target_ids)])
    assert 0 < len(want) < cap.sum()
    recipe = "steps:\n  - {filter: image_based, model: l14, target: in1k_l14, clusters: %d%s}\n"
    got, _ = run(pool_dir / "metadata", recipe % (k, ""), tmp_path, "default")
    assert got == want
    # the k-means++ start the offline recipes use is another clustering: the check above can tell them apart
    other, _ = run(pool_dir / "metadata", recipe % (k, ", init: kmeans++"), tmp_path, "pp")
    assert other != want
