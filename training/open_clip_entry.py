"""``python -m training.open_clip_entry ARGS``: OpenCLIP's own trainer, with our model configs known.

OpenCLIP only knows the model configs it ships; ours (``training/model_configs``, registered by ``datacurate.clip``) must be
registered inside the training process itself (and in every torchrun worker), so the
launcher runs this module instead of ``open_clip_train.main``. The arguments go to
``open_clip_train.main.main`` as they are; one thing is made deterministic (see
``seed_sample_shuffle``) so that the same seed on the same data trains the same model, and
checkpoints are written atomically (``atomic_checkpoints``). A study's
``--datacurate-data-order sample_times`` (``training/sample_order.py``) is taken off the
arguments first and swaps the shard draw and the seeded shuffle for the shared data order.
"""
from __future__ import annotations

import random
import sys


def seed_sample_shuffle() -> None:
    """Make OpenCLIP's per-sample shuffle a function of the seed, not of the clock.

    ``open_clip_train.data.get_wds_dataset`` shuffles samples with ``webdataset.shuffle``
    and no random generator, and webdataset then seeds one from the process id and the
    time: two trainings with the same ``--seed`` on the same shards saw the samples in
    different orders (micro: weights up to 0.026 apart after one checkpoint). Its shard
    draw (``ResampledShards2(deterministic=True)``) is already seeded by the data-loader
    worker's seed and the epoch; the sample shuffle is given that same seed here, through
    OpenCLIP's own ``detshuffle2`` with the same buffer sizes, so the whole data order is
    fixed by ``--seed`` and the epoch. The stage also seeds torch's generator in the
    data-loader worker at the start of each epoch, so the random crops of the training
    transform are drawn the same way too, and a killed and resumed run trains exactly the
    model an uninterrupted one does.
    """
    import open_clip_train.data as ocd
    import torch
    from webdataset.filters import _shuffle

    build = ocd.get_wds_dataset
    if getattr(build, "_seeded_shuffle", False):
        return

    class EpochSeededShuffle(ocd.detshuffle2):
        """detshuffle2 seeded by the worker's seed and the shared epoch, as the shard draw is."""

        def run(self, src):
            seed = ocd.pytorch_worker_seed(self.epoch.get_value())
            torch.manual_seed(seed)                       # the transform's random crops, per epoch
            return _shuffle(src, self.bufsize, self.initial, random.Random(seed))

    def get_wds_dataset(args, preprocess_img, is_train, epoch=0, floor=False, tokenizer=None):
        info = build(args, preprocess_img, is_train, epoch=epoch, floor=floor, tokenizer=tokenizer)
        if is_train:
            pipeline = info.dataloader.pipeline[0].dataset.pipeline   # WebLoader -> DataLoader -> DataPipeline
            for i, stage in enumerate(pipeline):
                if getattr(stage, "f", None) is _shuffle:
                    pipeline[i] = EpochSeededShuffle(bufsize=stage.kw["bufsize"], initial=stage.kw["initial"],
                                                     seed=-1, epoch=info.shared_epoch)
        return info

    get_wds_dataset._seeded_shuffle = True
    ocd.get_wds_dataset = get_wds_dataset


def atomic_checkpoints() -> None:
    """Checkpoints are written under a temporary name and renamed.

    OpenCLIP saves ``epoch_N.pt`` straight to its final name (only ``epoch_latest.pt`` goes
    through ``tmp.pt``), so a full disk or a kill mid-save left a truncated checkpoint that a
    resume then trips on. ``torch.save`` to a path in the trainer process now writes
    ``.NAME.tmp`` beside it, then renames; on failure the temporary file is removed.
    """
    import os

    import torch

    if getattr(torch.save, "_atomic", False):
        return
    save = torch.save

    def atomic_save(obj, f, *args, **kwargs):
        if not isinstance(f, (str, os.PathLike)):
            return save(obj, f, *args, **kwargs)
        path = os.fspath(f)
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
        try:
            save(obj, tmp, *args, **kwargs)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    atomic_save._atomic = True
    torch.save = atomic_save


def main(argv: list[str] | None = None) -> int:
    from datacurate.env import apply_offline_env

    apply_offline_env()
    from datacurate.clip import register_model_configs

    register_model_configs()
    from training.sample_order import install as install_sample_times, take_flag

    order, argv = take_flag(sys.argv[1:] if argv is None else argv)
    if order == "sample_times":
        install_sample_times()
    else:
        seed_sample_shuffle()
    atomic_checkpoints()
    from training.weight_averaging import install_from_env

    install_from_env()      # a side output for instrument studies; off unless its variable is set
    from open_clip_train.main import main as open_clip_main

    rc = open_clip_main(argv)
    return 1 if rc == -1 else 0


if __name__ == "__main__":
    sys.exit(main())
