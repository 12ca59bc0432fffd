"""The fixed training recipe of a scale and the OpenCLIP arguments that carry it out.

DataComp's rule: the recipe is fixed per scale so that only the data differs between
entries. The numbers come from ``datacurate.scales`` (upstream's ``scale_configs.py``);
the way they become ``open_clip_train.main`` arguments follows upstream DataComp's
``train.py`` (https://github.com/mlfoundations/datacomp/blob/main/train.py):

* ``--train-num-samples samples_seen // num_checkpoints`` and ``--epochs num_checkpoints``:
  one OpenCLIP "epoch" is one checkpoint interval, so the budget is samples seen;
* ``--dataset-resampled --dataset-type webdataset``: shards are drawn with replacement,
  so a subset smaller than the budget is repeated;
* ``--save-frequency 0 --save-most-recent --resume latest`` (upstream's defaults): ``epoch_latest.pt``
  after every interval, a killed run resumes from it, and ``epoch_N.pt`` only at the end
  (one copy per interval would cost 4 x 92 MB a tiny run, 34 GB a 6-seed study);
* ``--local-loss --gather-with-grad --ddp-static-graph --grad-checkpointing``: upstream's
  memory/communication settings (they do not change the maths); we pass
  ``--grad-checkpointing`` on GPU only, where it saves memory (on CPU it only costs time);
* per-GPU batch = global batch // (world size * accum_freq), so the global batch is fixed.

What a participant may choose (as upstream's train.py allows): GPUs, nodes, data-loader
workers, gradient accumulation (same global batch), seed, log frequency, output path.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from datacurate.errors import UserError
from datacurate.scales import Scale, as_scale

from .sample_order import FLAG as DATA_ORDER_FLAG, UPSTREAM


class RecipeError(UserError):
    """A request that would change the fixed recipe, or cannot keep it."""


@dataclass(frozen=True)
class Recipe:
    """Everything about training that a participant may not change."""
    scale: str
    model: str
    samples_seen: int
    batch_size: int          # global batch
    learning_rate: float
    warmup: int
    weight_decay: float
    beta2: float | None      # None: OpenCLIP's default for the model (0.98 for ViTs)
    num_checkpoints: int
    precision: str           # on GPU; on CPU OpenCLIP trains in fp32 (amp is ~16x slower there)
    lr_scheduler: str = "cosine"   # OpenCLIP default, not overridden upstream
    optimizer: str = "adamw"       # OpenCLIP default, not overridden upstream
    data_order: str = UPSTREAM     # training/sample_order.py: upstream's shard draw, or a study's order

    @property
    def samples_per_checkpoint(self) -> int:
        return self.samples_seen // self.num_checkpoints

    def as_dict(self) -> dict:
        """The fields; ``data_order`` only when it is not upstream's, so the records of runs
        trained before the field existed still describe the same recipe."""
        d = asdict(self)
        if d["data_order"] == UPSTREAM:
            del d["data_order"]
        return d


def recipe_for(scale: "Scale | str") -> Recipe:
    """The fixed recipe of a scale (``datacurate scales`` lists them)."""
    try:
        s = as_scale(scale)
    except ValueError as e:
        raise RecipeError(str(e)) from None
    return Recipe(scale=s.name, model=s.model, samples_seen=s.samples_seen, batch_size=s.batch_size,
                  learning_rate=s.learning_rate, warmup=s.warmup, weight_decay=s.weight_decay,
                  beta2=s.beta2, num_checkpoints=s.num_checkpoints, precision=s.precision,
                  data_order=s.data_order)


# Command-line flags that would change the recipe -> the recipe field they touch.
# `datacurate train` refuses them with a message instead of "unrecognized argument".
FIXED_FLAGS: dict[str, str] = {
    "--lr": "learning_rate", "--learning-rate": "learning_rate",
    "--epochs": "num_checkpoints", "--num-checkpoints": "num_checkpoints",
    "--batch-size": "batch_size", "--model": "model",
    "--warmup": "warmup", "--wd": "weight_decay", "--weight-decay": "weight_decay",
    "--beta1": "optimizer", "--beta2": "beta2", "--eps": "optimizer", "--opt": "optimizer",
    "--precision": "precision", "--train-num-samples": "samples_seen",
    "--samples-seen": "samples_seen", "--lr-scheduler": "lr_scheduler",
    "--grad-clip-norm": "optimizer", "--pretrained": "model",
}


def per_device_batch(recipe: Recipe, world_size: int, accum_freq: int = 1) -> int:
    """Per-process batch that keeps the global batch fixed, or a clear refusal."""
    parts = world_size * accum_freq
    if world_size < 1 or accum_freq < 1:
        raise RecipeError("world size and --accum-freq must be at least 1")
    if recipe.batch_size % parts:
        raise RecipeError(
            f"the {recipe.scale} scale's global batch {recipe.batch_size} cannot be split evenly over "
            f"{world_size} process(es) x accum-freq {accum_freq}; choose GPUs/nodes/accum-freq that divide it")
    return recipe.batch_size // parts


def expected_samples_seen(recipe: Recipe, world_size: int = 1, workers: int = 1, accum_freq: int = 1) -> int:
    """Samples OpenCLIP will really draw: it rounds each interval up to whole batches per worker.

    Mirrors ``open_clip_train.data.get_wds_dataset`` (ceil to global batches, then to a
    multiple of the data-loader workers).
    """
    per_proc = per_device_batch(recipe, world_size, accum_freq)
    global_micro = per_proc * world_size
    batches = math.ceil(recipe.samples_per_checkpoint / global_micro)
    w = max(1, workers)
    batches = math.ceil(batches / w) * w
    return batches * global_micro * recipe.num_checkpoints


def open_clip_argv(recipe: Recipe, train_data: str, logs: str, name: str, *, device: str = "cpu",
                   world_size: int = 1, workers: int = 1, accum_freq: int = 1, seed: int = 0,
                   log_every_n_steps: int = 10) -> list[str]:
    """The ``open_clip_train.main`` argument list for this recipe (upstream train.py's)."""
    on_gpu = not device.startswith("cpu")
    argv = [
        "--model", recipe.model,
        "--train-data", train_data,
        "--dataset-type", "webdataset",
        "--dataset-resampled",
        "--train-num-samples", str(recipe.samples_per_checkpoint),
        "--epochs", str(recipe.num_checkpoints),
        "--batch-size", str(per_device_batch(recipe, world_size, accum_freq)),
        "--accum-freq", str(accum_freq),
        "--lr", str(recipe.learning_rate),
        "--warmup", str(recipe.warmup),
        "--wd", str(recipe.weight_decay),
        "--lr-scheduler", recipe.lr_scheduler,
        "--precision", recipe.precision if on_gpu else "fp32",
        "--device", device,
        "--workers", str(workers),
        "--seed", str(seed),
        "--save-frequency", "0",          # upstream train.py's default: epoch_N.pt at the end only
        "--save-most-recent",
        "--resume", "latest",
        "--logs", logs,
        "--name", name,
        "--log-every-n-steps", str(log_every_n_steps),
        "--report-to", "none",
        "--local-loss", "--gather-with-grad", "--ddp-static-graph",
    ]
    if recipe.beta2 is not None:
        argv += ["--beta2", str(recipe.beta2)]
    if on_gpu:
        argv.append("--grad-checkpointing")
    if recipe.data_order != UPSTREAM:
        argv += [DATA_ORDER_FLAG, recipe.data_order]   # training/open_clip_entry.py takes it off
    return argv
