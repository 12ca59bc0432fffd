"""`datacurate embed`: upstream's npz layout, row alignment, scores, resume, errors, device choice, Spark."""
from __future__ import annotations

import io
import shutil
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embed_pool_maker import make_pool, make_random_net


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    return make_pool(root / "pool"), make_random_net(root / "net")


@pytest.fixture
def pool_copy(handmade, tmp_path):
    pool, net = handmade
    return shutil.copytree(pool, tmp_path / "pool"), net


def _embed(pool, net, **kw):
    from datacurate.embed import embed_pool

    return embed_pool(pool, str(net), device="cpu", batch_size=8, **kw)


def test_npz_layout_alignment_and_scores(pool_copy):
    import torch
    from PIL import Image

    from datacurate.embed import get_model, to_rgb
    from datacurate.clip import parse_model

    pool, net = pool_copy
    summary = _embed(pool, net)
    assert summary["embedded"] == 2 and summary["name"] == "fnet"
    spec = parse_model(str(net))
    model, preprocess, tokenizer = get_model(spec, "cpu")
    for shard in ("00000", "00001"):
        table = pq.read_table(pool / "metadata" / f"{shard}.parquet")
        with np.load(pool / "metadata" / f"{shard}.npz") as z:
            img, txt = z["fnet_img"], z["fnet_txt"]
        assert img.dtype == np.float16 and txt.dtype == np.float16
        assert img.shape == txt.shape == (table.num_rows, 128)
        np.testing.assert_allclose(np.linalg.norm(img.astype(np.float32), axis=1), 1, atol=2e-3)
        np.testing.assert_allclose(np.linalg.norm(txt.astype(np.float32), axis=1), 1, atol=2e-3)
        # the score column is the dot product of the two stored embeddings
        score = table.column("clip_fnet_similarity_score")
        assert score.type == pa.float32()
        dots = (img.astype(np.float32) * txt.astype(np.float32)).sum(1)
        np.testing.assert_allclose(score.to_numpy(), dots, atol=2e-3)
        # row alignment: row i is the image in the tar under the parquet's key i and the parquet's caption i
        with tarfile.open(pool / "shards" / f"{shard}.tar") as tf:
            jpgs = {m.name.split(".")[0]: tf.extractfile(m).read() for m in tf if m.name.endswith(".jpg")}
        keys, texts = table.column("key").to_pylist(), table.column("text").to_pylist()
        for i in (0, len(keys) // 2, len(keys) - 1):
            pix = preprocess(to_rgb(Image.open(io.BytesIO(jpgs[keys[i]])))).unsqueeze(0)
            with torch.no_grad():
                e_img = torch.nn.functional.normalize(model.encode_image(pix), dim=-1)[0].numpy()
                e_txt = torch.nn.functional.normalize(model.encode_text(tokenizer([texts[i]])), dim=-1)[0].numpy()
            np.testing.assert_allclose(img[i].astype(np.float32), e_img, atol=3e-3)
            np.testing.assert_allclose(txt[i].astype(np.float32), e_txt, atol=3e-3)
    # holdout sets: img/txt/item_id aligned with the parquet
    for which in ("eval", "trusted"):
        src = pq.read_table(pool / "holdout" / f"{which}.parquet")
        with np.load(pool / "holdout" / f"{which}.fnet.npz") as z:
            assert list(z["item_id"]) == src.column("item_id").to_pylist()
            assert z["img"].shape == z["txt"].shape == (src.num_rows, 128) and z["img"].dtype == np.float16


def test_batched_preprocess_gives_the_per_image_numbers(handmade):
    """embed applies ToTensor + Normalize to a stacked batch: the same floats as open_clip's transform
    image by image, for every size and mode the pool holds (palette, grey and RGBA fall back cleanly)."""
    import torch
    from PIL import Image

    from datacurate.clip import parse_model
    from datacurate.embed import _pixel_batch, get_model, split_preprocess, to_rgb

    _, net = handmade
    _, preprocess, _ = get_model(parse_model(str(net)), "cpu")
    split = split_preprocess(preprocess)
    assert split is not None and len(split[1]) == 1            # open_clip's Compose: batched Normalize
    rng = np.random.default_rng(0)
    ims = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in
           ((72, 72), (40, 130), (300, 90), (64, 64))]
    ims += [to_rgb(ims[1].convert("P")), to_rgb(ims[2].convert("L")), to_rgb(ims[0].convert("RGBA"))]
    want = torch.stack([preprocess(im) for im in ims])
    got = _pixel_batch(ims, preprocess, split)
    assert got.shape == want.shape and torch.equal(got, want)
    import torchvision.transforms as T                          # no mode conversion: grey stays one channel

    plain = T.Compose([T.Resize(64), T.CenterCrop(64), T.ToTensor(), T.Normalize((0.5,), (0.25,))])
    grey = [im.convert("L") for im in ims[:3]]
    got = _pixel_batch(grey, plain, split_preprocess(plain))
    assert got.shape == (3, 1, 64, 64) and torch.equal(got, torch.stack([plain(im) for im in grey]))
    assert split_preprocess(T.Compose([T.ToTensor(), T.RandomErasing()])) is None   # not elementwise: per image


def test_resume_skips_finished_shards_and_notices_new_weights(pool_copy, tmp_path):
    pool, net = pool_copy
    _embed(pool, net)
    kept = pool / "metadata" / "00000.npz"
    mtime = kept.stat().st_mtime_ns
    (pool / "metadata" / "00001.npz").unlink()
    again = _embed(pool, net)
    assert (again["skipped"], again["embedded"]) == (1, 1)
    assert kept.stat().st_mtime_ns == mtime
    assert _embed(pool, net)["skipped"] == 2
    # a shard whose parquet was rewritten with other rows is redone
    t = pq.read_table(pool / "metadata" / "00000.parquet").slice(0, 10).drop_columns(["clip_fnet_similarity_score"])
    pq.write_table(t, pool / "metadata" / "00000.parquet")
    r = _embed(pool, net)
    assert (r["embedded"], r["skipped"]) == (1, 1)
    assert np.load(kept)["fnet_img"].shape[0] == 10
    # other weights under the same name: every shard is recomputed
    other = make_random_net(tmp_path / "other", seed=1)
    before = np.load(kept)["fnet_img"]
    r = _embed(pool, other)
    assert r["embedded"] == 2 and r["holdout"] == {"eval": "embedded", "trusted": "embedded"}
    assert not np.array_equal(before, np.load(kept)["fnet_img"])


def test_upstream_embeddings_used_as_is_without_the_model(pool_copy):
    """Metadata with upstream's npz (b32_img/b32_txt) gets its score column without loading ViT-B-32."""
    from datacurate.embed import embed_pool, write_npz_atomic

    pool, _ = pool_copy
    rng = np.random.default_rng(0)
    for shard in ("00000", "00001"):
        n = pq.ParquetFile(pool / "metadata" / f"{shard}.parquet").metadata.num_rows
        e = rng.normal(size=(2, n, 512)).astype(np.float32)
        e /= np.linalg.norm(e, axis=2, keepdims=True)
        write_npz_atomic(pool / "metadata" / f"{shard}.npz", {"b32_img": e[0].astype(np.float16),
                                                              "b32_txt": e[1].astype(np.float16)})
    r = embed_pool(pool, "ViT-B-32:openai", holdout=False)  # offline: only works if the model is never loaded
    assert (r["name"], r["scored"], r["embedded"]) == ("b32", 2, 0)
    t = pq.read_table(pool / "metadata" / "00000.parquet")
    z = np.load(pool / "metadata" / "00000.npz")
    dots = (z["b32_img"].astype(np.float32) * z["b32_txt"].astype(np.float32)).sum(1)
    np.testing.assert_allclose(t.column("clip_b32_similarity_score").to_numpy(), dots, atol=1e-5)
    assert embed_pool(pool, "ViT-B-32:openai", holdout=False)["skipped"] == 2


def test_hub_model_fails_fast_offline(pool_copy, capsys, monkeypatch):
    from datacurate.cli import main
    from datacurate.embed import embed_pool
    from datacurate.clip import ModelLoadError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pool, _ = pool_copy
    with pytest.raises(ModelLoadError) as e:
        embed_pool(pool, "ViT-B-32:openai")
    msg = str(e.value)
    assert "ViT-B-32" in msg and "'openai'" in msg and "offline" in msg and "HF_HUB_OFFLINE=1" in msg
    assert main(["embed", "--pool", str(pool), "--model", "ViT-B-32:openai", "--no-holdout"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("datacurate embed: error: model ViT-B-32 with pretrained tag 'openai'")


@pytest.mark.parametrize("model, words", [
    ("NoSuchNet-99:openai", ["NoSuchNet-99", "not an OpenCLIP architecture"]),
    ("ViT-B-32:nosuchtag", ["unknown pretrained tag", "nosuchtag", "laion2b_s34b_b79k"]),
    ("ViT-B-32", ["ViT-B-32:TAG"]),
    ("TinyCLIP-ViT-64:/no/such/file.pt", ["no such checkpoint file"]),
])
def test_bad_model_strings(model, words):
    from datacurate.clip import ModelLoadError, parse_model

    with pytest.raises(ModelLoadError) as e:
        parse_model(model)
    for w in words:
        assert w in str(e.value)


def test_checkpoint_file_needs_arch_and_arch_name_checked(handmade, tmp_path):
    from datacurate.clip import ModelLoadError, parse_model

    _, net = handmade
    lone = tmp_path / "weights.pt"
    shutil.copy(net / "checkpoint.pt", lone)
    with pytest.raises(ModelLoadError, match="needs its architecture"):
        parse_model(str(lone))
    spec = parse_model(f"TinyCLIP-ViT-64:{lone}", name="tiny")
    assert (spec.arch, spec.name, spec.local, spec.score_column) == ("TinyCLIP-ViT-64", "tiny", True,
                                                                     "clip_tiny_similarity_score")
    assert parse_model(str(net / "checkpoint.pt")).name == "fnet"
    assert parse_model("ViT-L-14:openai").name == "l14"
    with pytest.raises(ModelLoadError, match="--arch"):
        parse_model(str(net), name="Bad-Name")


def test_missing_tar_key_is_a_clear_error(pool_copy):
    from datacurate.images import ShardImageError

    pool, net = pool_copy
    path = pool / "metadata" / "00001.parquet"
    t = pq.read_table(path)
    keys = t.column("key").to_pylist()
    keys[3] = "000019999"
    pq.write_table(t.set_column(t.schema.get_field_index("key"), "key", pa.array(keys)), path)
    with pytest.raises(ShardImageError, match=r"shard 00001: .*00001\.tar has no image for key '000019999'"):
        _embed(pool, net)


def test_device_choice(monkeypatch):
    import torch

    from datacurate.errors import UserError
    from datacurate.clip import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("auto") == "cuda" and pick_device("cuda:1") == "cuda:1"
    with pytest.raises(UserError, match=r"--device cuda:2: torch sees 2 GPU\(s\)"):
        pick_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == "cpu" and pick_device("cpu") == "cpu"
    with pytest.raises(UserError, match="no CUDA GPU"):
        pick_device("cuda")
    with pytest.raises(UserError, match="expected auto, cpu"):
        pick_device("tpu")


def test_spark_gives_the_same_npz_as_local(handmade, tmp_path, spark):
    from datacurate.embed import embed_pool

    pool, net = handmade
    local = shutil.copytree(pool, tmp_path / "local")
    dist = shutil.copytree(pool, tmp_path / "spark")
    _embed(local, net, holdout=False)
    r = embed_pool(dist, str(net), device="auto", batch_size=8, spark=spark, holdout=False)
    assert r["embedded"] == 2
    for shard in ("00000", "00001"):
        a, b = np.load(local / "metadata" / f"{shard}.npz"), np.load(dist / "metadata" / f"{shard}.npz")
        assert sorted(a.files) == sorted(b.files) == ["fnet_img", "fnet_txt"]
        for k in a.files:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
            np.testing.assert_allclose(a[k].astype(np.float32), b[k].astype(np.float32), atol=2e-3)
        ta, tb = (pq.read_table(p / "metadata" / f"{shard}.parquet") for p in (local, dist))
        assert ta.column("uid").equals(tb.column("uid"))
        np.testing.assert_allclose(ta.column("clip_fnet_similarity_score").to_numpy(),
                                   tb.column("clip_fnet_similarity_score").to_numpy(), atol=2e-3)
    # resumable on Spark too
    assert embed_pool(dist, str(net), spark=spark, holdout=False)["skipped"] == 2


def test_cli_embed_and_help(pool_copy, capsys):
    from datacurate.cli import build_parser, main

    pool, net = pool_copy
    assert main(["embed", "--pool", str(pool), "--model", str(net), "--device", "cpu", "--batch-size", "16"]) == 0
    assert '"embedded": 2' in capsys.readouterr().out
    help_text = build_parser()._subparsers._group_actions[0].choices["embed"].format_help()
    assert "examples:" in help_text and "--master" in help_text


def test_a_run_killed_between_the_npz_and_parquet_swaps_is_redone(handmade, pool_copy, tmp_path, monkeypatch):
    """A shard's new parquet (scores and the weights' fingerprint) is renamed in, and the run dies before
    its new npz is: without the marker the shard would look done, pairing net B's scores with net A's
    vectors. The marker makes the next run embed it again; the result is a clean run's."""
    import os

    from datacurate.embed import shard_state
    from datacurate.clip import parse_model

    pool, net_a = pool_copy
    net_b = make_random_net(tmp_path / "b", seed=1)
    _embed(pool, net_a)
    npz = pool / "metadata" / "00000.npz"
    vectors_a = np.load(npz)["fnet_img"]

    class Killed(BaseException):
        pass

    real_replace = os.replace

    def dies_at_the_npz(src, dst):
        if str(dst) == str(npz):
            raise Killed()
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dies_at_the_npz)
    with pytest.raises(Killed):
        _embed(pool, net_b)
    monkeypatch.setattr(os, "replace", real_replace)
    assert np.array_equal(np.load(npz)["fnet_img"], vectors_a)              # the old vectors ...
    assert (pool / "metadata" / ".00000.embedding").exists()                 # ... and the marker
    assert not [p.name for p in (pool / "metadata").iterdir() if p.name.endswith(".tmp")]
    assert shard_state(pool, "00000", parse_model(str(net_b))) == "todo"
    _embed(pool, net_b)
    assert not (pool / "metadata" / ".00000.embedding").exists()
    assert shard_state(pool, "00000", parse_model(str(net_b))) == "done"
    clean = shutil.copytree(handmade[0], tmp_path / "clean")                  # net B on an untouched pool
    _embed(clean, net_b)
    for name in ("00000.npz", "00001.npz"):
        with np.load(pool / "metadata" / name) as got, np.load(clean / "metadata" / name) as want:
            assert np.array_equal(got["fnet_img"], want["fnet_img"]) and np.array_equal(got["fnet_txt"], want["fnet_txt"])
