"""Shared fixtures: one Spark session and one downloaded `micro` pool per test session.

Building and downloading the micro pool costs ~30 s; every test that needs a real
pool shares it (read-only!). Tests that modify a pool copy it first.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def spark():
    from datacurate.spark import get_spark

    s = get_spark("local[2]", app_name="datacurate-tests")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def micro_pool_built(tmp_path_factory) -> Path:
    """The `micro` pool as `pool build` leaves it (not downloaded). Read-only."""
    from datacurate.pool.build import build_pool

    out = tmp_path_factory.mktemp("micro") / "pool"
    build_pool(out, scale="micro", seed=0)
    return out


@pytest.fixture(scope="session")
def micro_pool(micro_pool_built, spark, tmp_path_factory) -> Path:
    """The `micro` pool built and downloaded with img2dataset on Spark. Read-only."""
    from datacurate.pool.download import download_pool

    out = tmp_path_factory.mktemp("micro_dl") / "pool"
    shutil.copytree(micro_pool_built, out)
    download_pool(out, spark=spark)
    return out


def copy_pool(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
