"""A data order shared between subsets: each sample's place in the stream is a function of (seed, uid).

Upstream's order (``--dataset-resampled``) draws whole training shards with replacement, so
two subsets that differ by a handful of samples are cut into different shards and, under the
same seed, are seen in unrelated orders: on the tiny study CLIP score top 30% and dedup + CLIP
score (5,821 and 5,813 samples) had seed-to-seed scores that moved *against* each other
(correlation -0.51). The seed spread of a tiny run is its data order's (``scripts/bench/
seed_noise.py``), so a difference between two recipes carries the noise of two unrelated orders.

``sample_times`` gives the same moments to the same samples under the same seed, whatever
subset they are in (common random numbers): copy ``k`` of a sample is placed at the time
``u(seed, k, uid)`` in [0, 1), the stream is every copy sorted by time, and a subset of ``n``
samples seen ``total`` times gives each sample ``total // n`` copies plus one for the
``total % n`` samples with the lowest ``u(seed, "extra", uid)``. Each recipe's order is still a
uniformly random one (its expected score is unchanged); only the noise of the difference
between recipes that share samples falls, if the training is smooth in its data. Held in
memory: for the CPU scales only.

A study option (``scripts/bench/baselines.py --set data_order=sample_times``), not a recipe's:
tried on the 6-seed tiny study of 2026-12-05 it left the ranking no steadier (split-half tau
+0.718 against +0.744; docs/training.md): trainings on random parts of a large subset co-vary,
but on the small subsets seen several times, where the top recipes are, 1% fewer samples already
moves a training by most of a seed's spread.
"""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

from datacurate.errors import UserError
from datacurate.images import tar_files

UPSTREAM = "resampled_shards"         # OpenCLIP's --dataset-resampled shard draw, as upstream trains
ORDERS = (UPSTREAM, "sample_times")
FLAG = "--datacurate-data-order"      # carried to the trainer process, stripped before OpenCLIP sees it


class SampleOrderError(UserError):
    """The training shards cannot be read into a shared-order stream."""


def unit(text: str) -> float:
    """A uniform draw in [0, 1) that is a pure function of ``text``."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2.0 ** 64


def stream_order(ids: list[str], total: int, seed: int) -> list[tuple[int, int]]:
    """``total`` entries ``(sample index, copy)`` in training order for the samples ``ids``."""
    n = len(ids)
    if n == 0:
        raise SampleOrderError("the training data holds no samples; reshard a non-empty subset")
    full, extra = divmod(total, n)
    copies = [full] * n
    for i in sorted(range(n), key=lambda i: (unit(f"{seed}/extra/{ids[i]}"), i))[:extra]:
        copies[i] += 1
    entries = sorted((unit(f"{seed}/{k}/{ids[i]}"), i, k) for i in range(n) for k in range(copies[i]))
    return [(i, k) for _, i, k in entries]


def crop_seed(seed: int, uid: str, copy: int) -> int:
    """The random-crop seed of one copy of one sample: shared between subsets as its time is."""
    return int(unit(f"{seed}/crop/{copy}/{uid}") * 2 ** 63)


def read_shards(urls: list[str]) -> list[dict]:
    """Every sample of the training shards, in shard order: ``{"__key__", "__url__", ext: bytes}``
    plus ``"uid"`` (from ``KEY.json``, else the key)."""
    samples: list[dict] = []
    for url in urls:
        path = url[len("file:"):] if url.startswith("file:") else url
        by_key: dict[str, dict] = {}
        try:
            for name, blob in tar_files(Path(path)):
                key, _, ext = os.path.basename(name).partition(".")
                by_key.setdefault(key, {"__key__": key, "__url__": url})[ext.lower()] = blob
        except (OSError, tarfile.TarError) as e:
            raise SampleOrderError(f"{path}: cannot read the training shard ({e}); reshard the subset again") from None
        for key, sample in by_key.items():
            uid = key
            if "json" in sample:
                try:
                    uid = str(json.loads(sample["json"]).get("uid") or key)
                except ValueError:
                    raise SampleOrderError(f"{path}:{key}.json: not JSON; reshard the subset again") from None
            sample["uid"] = uid
            samples.append(sample)
    return samples


class SampleTimeSource:
    """The first stage of OpenCLIP's training pipeline in place of shard draws and a shuffle buffer.

    Yields the raw samples of one checkpoint interval ("epoch") for this rank and data-loader
    worker; OpenCLIP's own decode, transform, tokenize and batch stages follow unchanged. The
    global batch ``j`` of epoch ``e`` is stream positions ``(e * batches + j) * global_batch``
    onwards; worker ``w`` of ``W`` makes batches ``w, w + W, ...`` (the order the data loader
    takes them in), rank ``r`` the ``r``-th slice of each.
    """

    def __init__(self, urls: list[str], seed: int, epoch, batches: int, batch_size: int, epochs: int,
                 world_size: int = 1, rank: int = 0):
        self.urls, self.seed, self.epoch = list(urls), seed, epoch
        self.batches, self.batch_size, self.epochs = batches, batch_size, epochs
        self.world_size, self.rank = world_size, rank
        self._samples: list[dict] | None = None
        self._order: list[tuple[int, int]] | None = None

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def load(self) -> None:
        if self._samples is None:
            self._samples = read_shards(self.urls)
            total = self.epochs * self.batches * self.global_batch
            self._order = stream_order([s["uid"] for s in self._samples], total, self.seed)

    def positions(self, epoch: int, worker: int = 0, workers: int = 1):
        """Stream positions this worker yields in ``epoch``, in order."""
        if not 0 <= epoch < self.epochs:
            raise SampleOrderError(f"epoch {epoch} is outside the run's {self.epochs} checkpoint intervals")
        for j in range(worker, self.batches, workers):
            start = (epoch * self.batches + j) * self.global_batch + self.rank * self.batch_size
            yield from range(start, start + self.batch_size)

    def __call__(self):
        import torch
        from torch.utils.data import get_worker_info

        self.load()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for pos in self.positions(self.epoch.get_value(), worker, workers):
            i, k = self._order[pos]
            sample = self._samples[i]
            torch.manual_seed(crop_seed(self.seed, sample["uid"], k))   # the transform's random crop
            yield {key: value for key, value in sample.items() if key != "uid"}


def install() -> None:
    """Make OpenCLIP's webdataset training pipeline read in the ``sample_times`` order.

    In place of ``open_clip_entry.seed_sample_shuffle``, not beside it: the shuffle that one seeds is
    the stage replaced here (with the shard draw before it), and the crops get seeds per copy."""
    import open_clip_train.data as ocd
    from webdataset.filters import _shuffle

    build = ocd.get_wds_dataset
    if getattr(build, "_sample_times", False):
        return

    def get_wds_dataset(args, preprocess_img, is_train, epoch=0, floor=False, tokenizer=None):
        info = build(args, preprocess_img, is_train, epoch=epoch, floor=floor, tokenizer=tokenizer)
        if not is_train:
            return info
        pipeline = info.dataloader.pipeline[0].dataset.pipeline   # WebLoader -> DataLoader -> DataPipeline
        ends = [i for i, stage in enumerate(pipeline) if getattr(stage, "f", None) is _shuffle]
        if not ends:
            raise SampleOrderError("OpenCLIP's training pipeline has no sample shuffle stage to replace; "
                                   "this open_clip_train version is not supported by the sample_times order")
        urls = ocd.expand_urls(args.train_data)[0]
        source = SampleTimeSource(urls, seed=args.seed, epoch=info.shared_epoch,
                                  batches=info.dataloader.num_batches, batch_size=args.batch_size,
                                  epochs=args.epochs, world_size=args.world_size, rank=args.rank)
        pipeline[:ends[0] + 1] = [source]
        return info

    get_wds_dataset._sample_times = True
    ocd.get_wds_dataset = get_wds_dataset


def take_flag(argv: list[str]) -> tuple[str, list[str]]:
    """``(order, argv without FLAG)``; the order is upstream's when the flag is absent."""
    argv = list(argv)
    if FLAG not in argv:
        return UPSTREAM, argv
    i = argv.index(FLAG)
    if i + 1 >= len(argv) or argv[i + 1] not in ORDERS:
        raise SampleOrderError(f"{FLAG}: give one of {', '.join(ORDERS)}")
    order = argv[i + 1]
    del argv[i:i + 2]
    return order, argv
