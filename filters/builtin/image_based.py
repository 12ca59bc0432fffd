"""Image-based filter: faiss k-means over the pool's image embeddings, keep the clusters
nearest to a target set's images.

Upstream DataComp (baselines/image_based_clustering.py, baselines/apply_filter.py
``load_uids_with_image_filter``): k-means with 100 000 clusters (niter 20, seed 0, L2,
no sub-sampling) on the ``l14_img`` embeddings of the pool rows that pass the caption
filter; each ImageNet-1k training image is assigned to its nearest centroid (inner
product) and the pool rows whose centroid is one of those are kept (after the caption
filter). With ``init: random`` (the default) a fitted k-means is upstream's to the bit: same
parameters, faiss's own seeded start, rows in shard-name order. Here the target is a held-out
split of the pool (``eval`` or ``trusted``, embedded by ``datacurate embed``) or an npz file,
and the number of clusters a parameter (recipes for the offline pools set about 100).

Two passes: pass 1 collects the (caption-filtered) embeddings, at most ``sample`` of
them, picked by a hash of the uid so every runner picks the same; ``fit`` trains the
centroids; pass 2 assigns every row.

With ``centroids`` (upstream's published ones, read from its cache, or a file) there is no
k-means and one pass: each row is assigned to them, as upstream's ``apply_filter`` does.
"""
from __future__ import annotations

import numpy as np

from ..api import Batch, Context, Filter, Needs, Param, RecipeError, pack_uids
from ..registry import register
from .basic import Caption, uid_uniform
from .clip import _check_model
from .targets import load_target_embeddings


@register
class ImageBased(Filter):
    """k-means on image embeddings; keep the clusters nearest to a target set's images (upstream image-based)."""

    name = "image_based"
    is_global = True
    source = "datacomp baselines/image_based_clustering.py + apply_filter.py load_uids_with_image_filter"
    params = (
        Param("model", str, "l14", "embeddings to cluster: POOL/metadata/*.npz key {model}_img (upstream: l14)"),
        Param("target", str, "eval", "eval | trusted (POOL/holdout/{target}.{model}.npz) | path to an npz with key img"),
        Param("clusters", int, 100_000, "number of k-means clusters (upstream: 100000)", min=1),
        Param("niter", int, 20, "k-means iterations (upstream: 20)", min=1),
        Param("seed", int, 0, "k-means seed (upstream: 0)"),
        Param("init", str, "random", "k-means start: random (faiss's own seeded pick of k rows, upstream's) | "
              "kmeans++ (seeded k-means++: on well-separated clusters random starts merge some)"),
        Param("caption_filter", bool, True, "apply upstream's caption filter first (English, > 1 word, > 5 chars)"),
        Param("sample", int, 0, "train k-means on at most this many rows (0: all, as upstream)", min=0),
        Param("centroids", str, "", "use these centroids instead of fitting k-means: small | medium | large | "
              "xlarge (upstream's published ones, from its cache ~/.cache/datacomp), auto (the upstream scale "
              "nearest the pool's size), or a .pt/.npy file (upstream's torch.save of an array reads as is)"),
    )

    def validate(self) -> None:
        _check_model(self)
        if self.init not in ("random", "kmeans++"):
            raise RecipeError(f"{self.where}: init must be random or kmeans++, not {self.init!r}")
        self.caption = Caption(_where=self.where)

    def needs(self) -> Needs:
        n = Needs(embeddings=[f"{self.model}_img"], columns=["uid"])
        return n.merge(self.caption.needs()) if self.caption_filter else n

    def setup(self, ctx: Context) -> None:
        self.targets = load_target_embeddings(ctx.pool, self.target, self.model, "img")
        if self.centroids:
            # given centroids: one pass, row by row (upstream's apply_filter with its cached centroids)
            from ..upstream_assets import load_centroids

            self.centroid_matrix, what = load_centroids(self.centroids, ctx.pool_rows)
            self._set_target_clusters(ctx, what)
            self.is_global = False

    def _set_target_clusters(self, ctx: Context, what: str) -> None:
        from ..faiss_ops import nearest_centroid

        if self.centroid_matrix.shape[1] != self.targets.shape[1]:
            raise RecipeError(f"{self.where}: centroids ({what}) have dim {self.centroid_matrix.shape[1]}, target "
                              f"embeddings {self.targets.shape[1]}: not the same model")
        self.target_clusters = np.asarray(sorted(nearest_centroid(self.centroid_matrix, self.targets)), np.int64)
        ctx.notes[f"{self.where}: centroids"] = what
        ctx.notes[f"{self.where}: clusters kept"] = len(self.target_clusters)

    def _eligible(self, batch: Batch) -> np.ndarray:
        return self.caption(batch) if self.caption_filter else np.ones(len(batch), bool)

    def collect(self, batch: Batch):
        keep = self._eligible(batch)
        if self.sample and getattr(self, "population_size", 0) > self.sample:
            rate = self.sample / self.population_size
            keep &= uid_uniform(pack_uids(batch.table.column("uid").to_pylist()), self.seed) < rate
        return batch.embedding(f"{self.model}_img")[keep]

    def fit(self, parts, ctx: Context) -> None:
        from ..faiss_ops import fit_kmeans

        x = np.concatenate(parts) if parts else np.empty((0, 0), np.float16)
        if len(x) < self.clusters:
            raise RecipeError(f"{self.where}: clusters={self.clusters} but only {len(x)} rows reach the "
                              "k-means step; set 'clusters' lower for this pool")
        if x.shape[1] != self.targets.shape[1]:
            raise RecipeError(f"{self.where}: pool embeddings have dim {x.shape[1]}, target embeddings "
                              f"{self.targets.shape[1]}: not the same model")
        # upstream's train_kmeans: faiss.Clustering, L2, niter, seed, max_points_per_centroid 10M, its own start,
        # on the caption-filtered rows in shard-name order (the order the pool's passes read them)
        self.centroid_matrix = fit_kmeans(x.astype(np.float32), self.clusters, niter=self.niter, seed=self.seed,
                                          spherical=False, max_points_per_centroid=10_000_000,
                                          init=self.init)
        self._set_target_clusters(ctx, f"k-means, {self.clusters} clusters, fitted here")

    def __call__(self, batch: Batch) -> np.ndarray:
        from ..faiss_ops import assign_to_centroids, keep_clusters

        keep = self._eligible(batch)
        idx = np.flatnonzero(keep)
        if len(idx):
            emb = batch.embedding(f"{self.model}_img")[idx]
            if emb.shape[1] != self.centroid_matrix.shape[1]:
                raise RecipeError(f"{self.where}: {self.model}_img has dim {emb.shape[1]}, the centroids "
                                  f"{self.centroid_matrix.shape[1]}: not the same model")
            assign, _ = assign_to_centroids(emb, self.centroid_matrix, "ip")
            keep[idx] = keep_clusters(assign, self.target_clusters)
        return keep
