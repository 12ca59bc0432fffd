"""`datacurate train`: the fixed recipe, real OpenCLIP training on CPU, resume, refusals, bad data.

One `micro` run (4,096 samples seen, batch 64), killed after its first checkpoint and
resumed, is trained once per module and shared by the tests that need a trained run.
"""
from __future__ import annotations

import json
import os
import signal
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from train_data_maker import make_training_data

ROOT = Path(__file__).resolve().parent.parent


def _cmd(data: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "datacurate", "train", "--scale", "micro", "--data", str(data), "--out", str(run),
            "--device", "cpu", "--no-progress", *extra]


def _env() -> dict:
    from datacurate.env import child_env

    return child_env({"PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def micro_data(tmp_path_factory) -> Path:
    return make_training_data(tmp_path_factory.mktemp("train") / "data", n_samples=512, shard_size=128)


def _killed_and_resumed(data: Path, run: Path, env: dict) -> str:
    """Train RUN, kill it once its first checkpoint is in place, resume it with the same command; its stderr."""
    proc = subprocess.Popen(_cmd(data, run), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 600
        while not (run / "checkpoints" / "epoch_latest.pt").exists():
            assert proc.poll() is None, "training ended before its first checkpoint"
            assert time.time() < deadline, "no checkpoint after 600 s"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)   # the launcher and the trainer it started
        proc.wait()
    assert not (run / "info.json").exists()
    res = subprocess.run(_cmd(data, run), env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stderr


@pytest.fixture(scope="module")
def micro_run(micro_data, tmp_path_factory) -> tuple[Path, str]:
    """One real micro run, killed right after its first checkpoint and resumed by the same command.

    Returns (RUN, the resumed command's stderr). Killing it costs only a start-up, so the
    suite trains micro about once.
    """
    run = tmp_path_factory.mktemp("train_run") / "run"
    return run, _killed_and_resumed(micro_data, run, _env())


# --- the recipe -------------------------------------------------------------------------------

def test_recipe_matches_upstream_train_py():
    from training.recipe import expected_samples_seen, open_clip_argv, recipe_for

    small = recipe_for("small")
    argv = open_clip_argv(small, "D/{00000..00009}.tar", "L", "N", device="cuda", world_size=8, workers=4)
    opts = dict(zip(argv, argv[1:]))
    assert opts["--train-num-samples"] == "2560000" and opts["--epochs"] == "5"   # 12.8M / 5 checkpoints
    assert opts["--batch-size"] == "512" and opts["--lr"] == "0.0005" and opts["--warmup"] == "500"
    assert opts["--model"] == "ViT-B-32" and opts["--precision"] == "amp" and opts["--resume"] == "latest"
    for flag in ("--dataset-resampled", "--save-most-recent", "--grad-checkpointing", "--local-loss"):
        assert flag in argv
    assert "--beta2" not in argv
    xl = open_clip_argv(recipe_for("xlarge"), "D", "L", "N", device="cuda", world_size=1024)
    assert dict(zip(xl, xl[1:]))["--beta2"] == "0.95" and dict(zip(xl, xl[1:]))["--batch-size"] == "88"
    cpu = open_clip_argv(recipe_for("micro"), "D", "L", "N", device="cpu")
    assert dict(zip(cpu, cpu[1:]))["--precision"] == "fp32" and "--grad-checkpointing" not in cpu
    # OpenCLIP rounds each interval up to whole batches per worker
    assert expected_samples_seen(recipe_for("micro"), workers=1) == 4096
    assert expected_samples_seen(recipe_for("micro"), workers=3) == 2 * 33 * 64
    assert expected_samples_seen(small, world_size=8, workers=4) == 5 * 628 * 4096


def test_uneven_batch_split_is_refused(micro_data, tmp_path, monkeypatch):
    import torch

    from datacurate.errors import UserError
    from training.launch import plan_training
    from training.recipe import RecipeError

    with pytest.raises(RecipeError, match="cannot be split evenly"):
        plan_training("micro", micro_data, tmp_path / "run", device="cpu", accum_freq=3)
    if not torch.cuda.is_available():   # a GPU asked for and absent: refused, never a quiet CPU run
        with pytest.raises(UserError, match="--device cuda: torch sees no CUDA GPU here"):
            plan_training("micro", micro_data, tmp_path / "run", device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)     # stand-in for 8 GPUs: the command's shape
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    plan = plan_training("small", micro_data, tmp_path / "run", device="cuda", gpus=8, nodes=2, node_rank=1,
                         master_addr="10.0.0.1")
    cmd = plan.command()
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "training.open_clip_entry" in cmd
    assert cmd[cmd.index("--nproc-per-node") + 1] == "8" and cmd[cmd.index("--nnodes") + 1] == "2"
    assert cmd[cmd.index("--batch-size") + 1] == "256"   # 4096 global over 16 GPUs


def test_a_gpu_scale_on_the_cpu_is_refused_with_an_estimate(micro_data, tmp_path):
    from training.launch import cpu_days, plan_training
    from training.recipe import RecipeError, recipe_for

    with pytest.raises(RecipeError, match=r"--scale small: ViT-B-32, 12,800,000 samples seen, global batch 4,096 "
                                          r"is a GPU recipe: on the CPU it would take at least [\d,]+ days"):
        plan_training("small", micro_data, tmp_path / "run", device="cpu")
    assert cpu_days(recipe_for("small"), cores=2) > 30 and cpu_days(recipe_for("micro")) is None
    plan = plan_training("small", micro_data, tmp_path / "run", device="cpu", allow_cpu=True)   # insisted
    assert plan.device == "cpu" and not (tmp_path / "run" / "info.json").exists()


@pytest.mark.parametrize("flag", [["--lr", "0.1"], ["--epochs", "3"], ["--batch-size", "32"],
                                  ["--model", "ViT-B-32"], ["--precision", "amp"], ["--warmup=0"]])
def test_fixed_setting_is_refused(flag, micro_data, tmp_path, capsys):
    from datacurate.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--scale", "micro", "--data", str(micro_data), "--out", str(tmp_path / "run"), *flag])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"{flag[0].split('=')[0]} is fixed by the scale's recipe" in err and "only the data differs" in err
    assert not (tmp_path / "run").exists()


# --- bad data fails before training -------------------------------------------------------------

def _copy_data(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _train_error(data: Path, run: Path, capsys) -> str:
    from datacurate.cli import main

    rc = main(["train", "--scale", "micro", "--data", str(data), "--out", str(run), "--device", "cpu", "--no-progress"])
    assert rc == 2
    assert not (run / "checkpoints").exists() and not (run / "out.log").exists()   # never started
    return capsys.readouterr().err


def test_no_shards_fails_clearly(tmp_path, capsys):
    (tmp_path / "data" / "shards").mkdir(parents=True)
    err = _train_error(tmp_path / "data", tmp_path / "run", capsys)
    assert "no shards" in err and str(tmp_path / "data" / "shards") in err


def test_garbage_shard_fails_clearly(micro_data, tmp_path, capsys):
    data = _copy_data(micro_data, tmp_path / "data")
    (data / "shards" / "00002.tar").write_bytes(b"this is not a tar file " * 100)
    err = _train_error(data, tmp_path / "run", capsys)
    assert "00002.tar" in err and "corrupt shard" in err


def test_truncated_shard_fails_clearly(micro_data, tmp_path, capsys):
    data = _copy_data(micro_data, tmp_path / "data")
    p = data / "shards" / "00001.tar"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2 + 100])
    err = _train_error(data, tmp_path / "run", capsys)
    assert "00001.tar" in err and "corrupt shard" in err


def test_sample_without_caption_fails_clearly(micro_data, tmp_path, capsys):
    data = _copy_data(micro_data, tmp_path / "data")
    src = data / "shards" / "00000.tar"
    with tarfile.open(src) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf if m.isfile()]
    dropped = next(m.name for m, _ in members if m.name.endswith(".txt"))
    with tarfile.open(src, "w") as out:
        for m, payload in members:
            if m.name != dropped:
                import io

                out.addfile(m, io.BytesIO(payload))
    err = _train_error(data, tmp_path / "run", capsys)
    assert "00000.tar" in err and "no caption" in err and dropped.split(".")[0] in err


def test_inconsistent_sizes_json_fails_clearly(micro_data, tmp_path, capsys):
    data = _copy_data(micro_data, tmp_path / "data")
    sizes = json.loads((data / "sizes.json").read_text())
    sizes["00003.tar"] += 5
    (data / "sizes.json").write_text(json.dumps(sizes))
    err = _train_error(data, tmp_path / "run1", capsys)
    assert "sizes.json" in err and "00003.tar" in err and str(sizes["00003.tar"]) in err
    del sizes["00003.tar"]
    (data / "sizes.json").write_text(json.dumps(sizes))
    err = _train_error(data, tmp_path / "run2", capsys)
    assert "not listed" in err and "00003.tar" in err


def test_shard_spec_is_a_brace_range_or_a_list(tmp_path):
    from training.data_check import train_data_spec

    assert train_data_spec(tmp_path, ["00000.tar", "00001.tar", "00002.tar"]) == f"{tmp_path}/{{00000..00002}}.tar"
    assert train_data_spec(tmp_path, ["00000.tar", "00002.tar"]) == f"{tmp_path}/00000.tar::{tmp_path}/00002.tar"


# --- a real micro training run -------------------------------------------------------------------

def test_micro_run_writes_the_run_layout(micro_run, micro_data):
    micro_run = micro_run[0]
    info = json.loads((micro_run / "info.json").read_text())
    assert info["finished"] is True and info["scale"] == "micro" and info["model"] == "TinyCLIP-ViT-64"
    from training.launch import INFO_FIELDS      # the fields the leaderboard accepts, no more, no fewer

    assert tuple(info) == INFO_FIELDS
    assert info["checkpoint"] == "checkpoints/epoch_latest.pt"
    assert info["samples_seen"] == info["recipe"]["samples_seen"] == 4096
    assert info["data_size"] == 512 and info["data"] == str(micro_data.resolve())
    assert info["subset_fingerprint"] == json.loads((micro_data / "reshard.json").read_text())["subset_fingerprint"]
    assert info["wall_time_s"] > 0 and info["versions"]["open_clip"] and info["versions"]["torch"]
    for name in ("epoch_2.pt", "epoch_latest.pt"):
        assert (micro_run / "checkpoints" / name).is_file()
    assert not (micro_run / "checkpoints" / "epoch_1.pt").exists()   # upstream's --save-frequency 0
    params = dict(line.split(": ", 1) for line in (micro_run / "params.txt").read_text().splitlines())
    assert params["lr"] == "0.001" and params["batch_size"] == "64" and params["epochs"] == "2"
    assert params["train_num_samples"] == "2048" and params["dataset_resampled"] == "True"
    assert params["precision"] == "fp32" and params["model"] == "TinyCLIP-ViT-64"
    # the run report reads OpenCLIP's own log
    from datacurate.report.training_log import parse_training_log

    rows = parse_training_log(micro_run / "out.log")
    assert rows and rows[-1]["samples_seen"] == 4096
    assert rows[-1]["loss"] < rows[0]["loss"]   # it learned something from the shapes


def test_micro_checkpoint_loads_with_open_clip(micro_run):
    micro_run = micro_run[0]
    import open_clip
    import torch

    from datacurate.clip import register_model_configs

    info = json.loads((micro_run / "info.json").read_text())
    register_model_configs()
    model, _, preprocess = open_clip.create_model_and_transforms(
        info["model"], pretrained=str(micro_run / info["checkpoint"]))
    saved = torch.load(micro_run / info["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    saved = {k.removeprefix("module."): v for k, v in saved.items()}
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k   # the trained weights, not a fresh init
    from PIL import Image

    img = preprocess(Image.new("RGB", (64, 64), (200, 20, 20))).unsqueeze(0)
    tok = open_clip.get_tokenizer(info["model"])(["a red circle", "a blue square"])
    with torch.no_grad():
        f_img, f_txt = model.encode_image(img), model.encode_text(tok)
    assert f_img.shape == (1, 128) and f_txt.shape == (2, 128) and torch.isfinite(f_img).all()


def test_finished_run_is_not_redone(micro_run, micro_data):
    micro_run = micro_run[0]
    ck = micro_run / "checkpoints" / "epoch_latest.pt"
    before = ck.stat().st_mtime_ns
    t = time.time()
    res = subprocess.run(_cmd(micro_data, micro_run), env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "already finished" in res.stderr
    assert ck.stat().st_mtime_ns == before and time.time() - t < 30


def test_killed_run_resumed_to_the_same_samples_seen(micro_run):
    from training.launch import samples_seen_from_log
    from training.recipe import expected_samples_seen, recipe_for

    run, stderr = micro_run
    assert "resuming" in stderr and "checkpoint 1 of 2" in stderr
    log = (run / "out.log").read_text()
    assert "=> resuming checkpoint" in log and log.count("Start epoch 1") >= 1
    info = json.loads((run / "info.json").read_text())
    # an uninterrupted run sees what OpenCLIP's rounding gives: 2 intervals x 32 batches x 64
    assert info["samples_seen"] == samples_seen_from_log(run / "out.log") == 4096
    assert info["samples_seen"] == expected_samples_seen(recipe_for("micro"), workers=info["workers"])
    assert (run / "checkpoints" / "epoch_2.pt").is_file()
    state = json.loads((run / "train_state.json").read_text())
    assert state["attempts"][-1]["from_checkpoint"] == 1


def test_checkpoint_epoch_is_read_without_torch_and_bad_ones_are_named(micro_run, tmp_path):
    from datacurate.errors import UserError
    from training.launch import checkpoint_epoch

    ck = micro_run[0] / "checkpoints"
    assert checkpoint_epoch(ck / "epoch_2.pt") == 2 and checkpoint_epoch(ck / "epoch_latest.pt") == 2
    assert checkpoint_epoch(tmp_path / "absent.pt") is None
    bad = tmp_path / "epoch_latest.pt"
    bad.write_bytes((ck / "epoch_2.pt").read_bytes()[:4096])
    with pytest.raises(UserError, match="epoch_latest.pt: cannot read the checkpoint"):
        checkpoint_epoch(bad)



def test_same_seed_same_data_trains_the_same_bytes_and_scores(micro_run, micro_data, tmp_path):
    """A benchmark whose reruns disagree ranks nothing: an uninterrupted run with the same seed on
    the same shards gives the killed-and-resumed run's checkpoints byte for byte, and its scores."""
    import hashlib
    import random

    from test_eval_helpers import write_wds_task
    from train_data_maker import SHAPES, jpeg_bytes, shape_image

    from eval import evaluate_run

    again = tmp_path / "again" / "run"            # same folder name: OpenCLIP stores it in the checkpoint
    res = subprocess.run(_cmd(micro_data, again), env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    digest = lambda run, name: hashlib.sha256((run / "checkpoints" / name).read_bytes()).hexdigest()
    for name in ("epoch_2.pt", "epoch_latest.pt"):
        assert digest(again, name) == digest(micro_run[0], name), name
    rng = random.Random(0)
    samples = [(jpeg_bytes(shape_image(s, (200, 40, 40), 64, rng)), c) for c, s in enumerate(SHAPES) for _ in range(5)]
    write_wds_task(tmp_path / "tasks" / "shapes", samples, {"name": "Shapes", "type": "zeroshot_classification"},
                   classnames=list(SHAPES), templates=["a {c}."])
    scores = [evaluate_run(r, suite="shapes", data_root=tmp_path / "tasks", log=lambda *_: None)
              for r in (micro_run[0], again)]
    assert scores[0]["tasks"]["Shapes"] == scores[1]["tasks"]["Shapes"]


def test_weight_averages_are_a_side_output_that_survives_a_resume(micro_run, micro_data, tmp_path):
    """With DATACURATE_WEIGHT_AVERAGES the trainer keeps moving averages of the weights beside its
    checkpoints without touching the training: killed after its first checkpoint and resumed, it
    writes the plain run's checkpoints byte for byte, and the averages an uninterrupted run keeps."""
    import hashlib

    import torch

    from training.weight_averaging import ENV, averaged_checkpoint, side_file

    env = {**_env(), ENV: "0.9,0.98"}
    killed, whole = tmp_path / "killed" / "run", tmp_path / "whole" / "run"   # the plain run's folder name
    stderr = _killed_and_resumed(micro_data, killed, env)
    assert "checkpoint 1 of 2" in stderr
    res = subprocess.run(_cmd(micro_data, whole), env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    digest = lambda run, name: hashlib.sha256((run / "checkpoints" / name).read_bytes()).hexdigest()
    for name in ("epoch_2.pt", "epoch_latest.pt"):
        assert digest(killed, name) == digest(micro_run[0], name) == digest(whole, name), name
    ckpt = killed / "checkpoints" / "epoch_latest.pt"
    a, b = (torch.load(side_file(r / "checkpoints", 2), weights_only=True) for r in (killed, whole))
    assert a["steps"] == b["steps"] == 64 and a["epoch"] == 2 and a["names"] == b["names"]
    # the last two epochs' averages stay: a kill before OpenCLIP's rename leaves epoch 1's checkpoint
    assert sorted(p.name for p in (killed / "checkpoints").glob("*.averages")) == ["epoch_1.averages",
                                                                                   "epoch_2.averages"]
    for d in (0.9, 0.98):
        for x, y in zip(a["shadows"][d], b["shadows"][d]):
            assert torch.equal(x, y)
    raw = torch.load(ckpt, weights_only=False)["state_dict"]
    slow, fast = (averaged_checkpoint(ckpt, d)["state_dict"] for d in (0.98, 0.9))
    name = next(n for n in a["names"] if "visual" in n and n.endswith("weight"))
    # the slower the decay, the further the average lags behind the weights it ends at
    assert 0 < (fast[name] - raw[name]).norm() < (slow[name] - raw[name]).norm()
    assert not list((micro_run[0] / "checkpoints").glob("*.averages"))   # off unless asked


def test_checkpoints_are_written_under_a_temporary_name(tmp_path, monkeypatch):
    """A save that fails part-way (here: an object that cannot be pickled) leaves neither a truncated
    checkpoint under the final name nor the temporary file."""
    import torch

    from training.open_clip_entry import atomic_checkpoints

    monkeypatch.setattr(torch, "save", torch.save)   # restored after the test
    atomic_checkpoints()
    torch.save({"w": torch.ones(3)}, tmp_path / "epoch_1.pt")
    assert torch.load(tmp_path / "epoch_1.pt")["w"].sum() == 3
    with pytest.raises(Exception):
        torch.save({"w": torch.ones(3), "bad": lambda: None}, tmp_path / "epoch_2.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_1.pt"]


def test_skipped_samples_are_counted_and_too_many_refuse_the_run(tmp_path):
    """A quarter of the images undecodable: OpenCLIP skips them with a warning each; the run is refused
    with the count and the reason, and no info.json claims a finished run."""
    from training.launch import skipped_samples

    log = tmp_path / "out.log"
    log.write_text("x | WARNING | Handling webdataset error (UnidentifiedImageError('cannot identify')). Ignoring.\n"
                   "x | WARNING | Handling webdataset error (OSError('truncated')). Ignoring.\n"
                   "x | WARNING | Handling webdataset error (UnidentifiedImageError('x')). Ignoring.\n")
    assert skipped_samples(log) == {"total": 3, "by_reason": {"UnidentifiedImageError": 2, "OSError": 1}}
    assert skipped_samples(tmp_path / "absent.log")["total"] == 0

    data = make_training_data(tmp_path / "bad", n_samples=256, shard_size=64, corrupt_every=4)
    r = subprocess.run(_cmd(data, tmp_path / "run"), env=_env(), cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("datacurate train: error: ")]
    # a quarter of the samples bad: the loader skips one for every three it keeps (~33% of those seen)
    assert line and re.search(r"out\.log: OpenCLIP skipped [\d,]+ of 4,096 samples seen \((2\d|3\d)\.\d%: "
                              r"UnidentifiedImageError [\d,]+\), more than 2%", line[0]), r.stderr[-2000:]
    assert not (tmp_path / "run" / "info.json").exists()


def test_run_of_another_recipe_is_not_served_as_this_one(micro_run, micro_data, monkeypatch):
    """A finished run whose recipe is not the scale's current one (datacurate changed the recipe)
    is not done for `datacurate run`'s train stage, and `train` refuses it naming the fields."""
    import dataclasses

    import datacurate.scales as scales
    from training.launch import train, trained_as_asked
    from training.recipe import RecipeError

    run = micro_run[0]
    assert trained_as_asked(run, "micro", micro_data, seed=0)
    assert not trained_as_asked(run, "micro", micro_data, seed=1)
    assert not trained_as_asked(run, "micro", micro_data.parent, seed=0)
    monkeypatch.setitem(scales.SCALES, "micro", dataclasses.replace(scales.SCALES["micro"], batch_size=32, warmup=16))
    assert not trained_as_asked(run, "micro", micro_data, seed=0)
    with pytest.raises(RecipeError, match=r"another batch_size, warmup .*remove that run"):
        train("micro", micro_data, run, progress=False)
    assert json.loads((run / "info.json").read_text())["recipe"]["batch_size"] == 64   # nothing rewritten
