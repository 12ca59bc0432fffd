"""The shared data order (training/sample_order.py): exact budgets, the same moments for the same
samples in every subset, and OpenCLIP's own pipeline reading in that order."""
from __future__ import annotations

import io
from argparse import Namespace
from collections import Counter

import pytest

from training.sample_order import (FLAG, SampleOrderError, SampleTimeSource, crop_seed, install, stream_order,
                                   take_flag)


def _ids(n: int, prefix: str = "u") -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


def test_stream_is_the_budget_with_balanced_copies():
    ids = _ids(100)
    order = stream_order(ids, 345, seed=0)
    assert len(order) == 345
    copies = Counter(i for i, _ in order)
    assert sorted(Counter(copies.values()).items()) == [(3, 55), (4, 45)]
    assert stream_order(ids, 345, seed=0) == order
    assert stream_order(ids, 345, seed=1) != order
    # a subset larger than the budget: the budget's worth of samples, each once
    assert sorted(Counter(Counter(i for i, _ in stream_order(ids, 40, seed=0)).values()).items()) == [(1, 40)]
    with pytest.raises(SampleOrderError):
        stream_order([], 10, seed=0)


def _times(ids: list[str], total: int, seed: int) -> dict[tuple[str, int], float]:
    """(uid, copy) -> relative position in the stream."""
    order = stream_order(ids, total, seed)
    return {(ids[i], k): pos / total for pos, (i, k) in enumerate(order)}


def test_shared_samples_keep_their_moments_in_another_subset():
    pool = _ids(2000)
    a = pool[:600]                       # a 30% subset, seen 3.3 times
    b = pool[:600:2] + pool[600:1000]    # another subset sharing half of a, seen 2.9 times
    ta, tb = _times(a, 2000, 7), _times(b, 2000, 7)
    shared = [key for key in ta if key in tb]
    assert len(shared) > 600
    # the same copy of the same sample sits at (nearly) the same moment of both trainings
    gaps = sorted(abs(ta[key] - tb[key]) for key in shared)
    assert gaps[len(gaps) // 2] < 0.02 and gaps[-1] < 0.06
    # under another seed the moments are unrelated
    tc = _times(b, 2000, 8)
    assert sorted(abs(ta[key] - tc[key]) for key in shared if key in tc)[len(shared) // 2] > 0.1
    # dropping one sample from a subset leaves everyone else's relative order as it was
    order_a = [(a[i], k) for i, k in stream_order(a, 1800, 7)]
    order_d = [(a[1:][i], k) for i, k in stream_order(a[1:], 1797, 7)]
    assert [e for e in order_a if e[0] != a[0]] == order_d


def test_workers_and_epochs_cover_the_stream_once():
    src = SampleTimeSource([], seed=0, epoch=None, batches=6, batch_size=4, epochs=3, world_size=2, rank=1)
    seen = []
    for epoch in range(3):
        per_worker = [list(src.positions(epoch, w, 3)) for w in range(3)]
        # the data loader takes batch j from worker j % 3
        for j in range(6):
            seen += per_worker[j % 3][(j // 3) * 4:(j // 3) * 4 + 4]
    rank0 = SampleTimeSource([], seed=0, epoch=None, batches=6, batch_size=4, epochs=3, world_size=2, rank=0)
    seen0 = [p for e in range(3) for p in rank0.positions(e)]
    assert sorted(seen + seen0) == list(range(3 * 6 * 8))
    assert seen0[:8] == [0, 1, 2, 3, 8, 9, 10, 11] and seen[:4] == [4, 5, 6, 7]
    with pytest.raises(SampleOrderError):
        list(src.positions(3))


def test_flag_is_taken_off_before_open_clip_sees_it():
    assert take_flag(["--lr", "1"]) == ("resampled_shards", ["--lr", "1"])
    assert take_flag(["--lr", "1", FLAG, "sample_times", "--seed", "2"]) == ("sample_times",
                                                                              ["--lr", "1", "--seed", "2"])
    with pytest.raises(SampleOrderError, match="resampled_shards, sample_times"):
        take_flag([FLAG, "shuffled"])


def test_recipe_carries_the_order_only_when_it_is_not_upstreams():
    import dataclasses

    from datacurate.scales import as_scale
    from training.recipe import open_clip_argv, recipe_for

    upstream = recipe_for("micro")
    assert "data_order" not in upstream.as_dict()          # records of older runs still match
    assert FLAG not in open_clip_argv(upstream, "d/{0..1}.tar", "logs", "run")
    shared = recipe_for(dataclasses.replace(as_scale("micro"), data_order="sample_times"))
    assert shared.as_dict()["data_order"] == "sample_times"
    argv = open_clip_argv(shared, "d/{0..1}.tar", "logs", "run")
    assert argv[argv.index(FLAG) + 1] == "sample_times"


def _shards(folder, n: int, per_shard: int) -> list[str]:
    import webdataset as wds
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="JPEG")
    urls = []
    for s in range(0, n, per_shard):
        url = str(folder / f"{s // per_shard:05d}.tar")
        with wds.TarWriter(url) as sink:
            for i in range(s, min(n, s + per_shard)):
                sink.write({"__key__": f"k{i:05d}", "jpg": buf.getvalue(), "txt": f"caption {i}",
                            "json": {"uid": f"{i:032x}"}})
        urls.append(url)
    return urls


def test_open_clip_pipeline_reads_in_the_shared_order(tmp_path):
    import open_clip_train.data as ocd
    import torch

    urls = _shards(tmp_path, 50, 16)
    build = ocd.get_wds_dataset
    install()
    try:
        args = Namespace(train_data="::".join(urls), dataset_resampled=True, train_num_samples=40,
                         train_data_upsampling_factors=None, seed=3, batch_size=8, world_size=1, rank=0,
                         workers=0, epochs=2)
        info = ocd.get_wds_dataset(args, lambda img: torch.rand(1).item(), is_train=True, epoch=0,
                                   tokenizer=lambda text: [text])
        assert info.dataloader.num_batches == 5
        got = []
        for epoch in (0, 1):
            info.set_epoch(epoch)
            for crops, texts in info.dataloader:
                got += list(zip(texts, crops))
    finally:
        ocd.get_wds_dataset = build
    uids = [f"{i:032x}" for i in range(50)]
    expect = stream_order(uids, 80, seed=3)
    assert [t for t, _ in got] == [f"caption {i}" for i, _ in expect]
    # each copy's random crop is drawn from its own seed, as in any other subset holding the sample
    for (_, crop), (i, k) in zip(got, expect):
        torch.manual_seed(crop_seed(3, uids[i], k))
        assert crop == pytest.approx(torch.rand(1).item())
