"""Every on-disk path of the benchmark, and whether a stage's output is complete.

One owner for the folder names (docs/formats.md), so that no other module joins
``"metadata"`` or ``"info.json"`` by hand::

    POOL   PoolLayout   metadata/NNNNN.parquet + NNNNN.npz (row-aligned embeddings)
                        shards/NNNNN.tar (+ img2dataset's NNNNN.parquet, NNNNN_stats.json)
                        holdout/{eval,trusted,taxonomy}.parquet, holdout/{split}.{model}.npz
                        evalsets/<task>/ (the offline suite), manifest.json, download_summary.json,
                        urls.parquet, www/, ground_truth.parquet (the offline builder's)
    DATA   DataLayout   shards/NNNNN.tar, sizes.json (also beside the tars: open_clip looks there),
                        reshard.json (written last), .reshard/ (the plan of an unfinished reshard)
    RUN    RunLayout    info.json (written last by train), params.txt, out.log, console.log, train_state.json,
                        checkpoints/epoch_latest.pt, eval_results.jsonl, scores.json, eval_state.json
    NET    NetLayout    the filtering network: checkpoint.pt, info.json (arch, ROC AUC; written last)
    DIR    BenchLayout  `datacurate run`'s folder: pool/, fnet/, embed.json, subsets/R.npy + R.json,
                        data/R/, runs/R[-seedS]/, report.html, report/, comparison.json, run_state.json,
                        baselines.json (scripts/bench/baselines.py)

A pool is found the way a DataComp participant already has it (``PoolLayout.find``):
our pool folder and upstream's ``download_upstream.py`` folder (``metadata/`` + ``shards/``),
that folder's ``metadata/`` itself (what upstream's ``baselines.py --metadata_dir`` takes), or
img2dataset's own output (``NNNNN.tar`` and ``NNNNN.parquet`` side by side). Nothing is moved.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

SHARD_DIGITS = 5           # NNNNN: shard names the pool download and the reshard write
CHECKPOINT = "checkpoints/epoch_latest.pt"
# a run's records (also the member names of a leaderboard submission bundle)
INFO, EVAL_RESULTS, SCORES, EVAL_STATE = "info.json", "eval_results.jsonl", "scores.json", "eval_state.json"


class LayoutError(UserError):
    """A folder is not what the command expects."""


def shard_name(i: int) -> str:
    return f"{i:0{SHARD_DIGITS}d}"


def read_json(path: Path, what: str = "") -> dict:
    """A JSON object file, or a one-line error naming it; ``{}`` if it does not exist."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LayoutError(f"{path}: not valid JSON ({e}){'; ' + what if what else ''}") from None
    if not isinstance(obj, dict):
        raise LayoutError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def _visible(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if not p.name.startswith("."))


# ----------------------------------------------------------------------------- POOL

POOL_KINDS = {
    "pool": "a pool folder (metadata/ + shards/)",
    "metadata": "a pool's metadata/ folder (upstream baselines.py --metadata_dir)",
    "img2dataset": "img2dataset output (NNNNN.tar + NNNNN.parquet side by side)",
}


@dataclass(frozen=True)
class PoolLayout:
    """A pool: where its metadata, shards and held-out data are."""

    root: Path                   # the pool folder (manifest, holdout, evalsets live here)
    metadata: Path               # NNNNN.parquet (+ NNNNN.npz)
    shards: Path                 # NNNNN.tar
    kind: str = "pool"           # a key of POOL_KINDS

    @classmethod
    def at(cls, root) -> "PoolLayout":
        """The pool folder ``root`` as our builder and download write it (it may not exist yet)."""
        root = Path(root)
        return cls(root, root / "metadata", root / "shards")

    @classmethod
    def find(cls, path) -> "PoolLayout":
        """The pool a user points at, in any of the forms of ``POOL_KINDS``; an error says what was expected."""
        path = Path(path)
        if not path.is_dir():
            raise LayoutError(f"{path}: no such pool folder; give a pool folder (with metadata/), its metadata/ "
                              "folder, or an img2dataset output folder")
        if (path / "metadata").is_dir():
            return cls.at(path)
        parquets = _visible(path, "*.parquet")
        if parquets and _visible(path, "*.tar") and any((path / f"{p.stem}.tar").exists() for p in parquets):
            return cls(path, path, path, "img2dataset")
        if parquets or path.name == "metadata":
            return cls(path.parent, path, path.parent / "shards", "metadata")
        raise LayoutError(f"{path}: not a pool: expected metadata/*.parquet in it (a `datacurate pool download` or "
                          "upstream download_upstream.py folder), *.parquet in it (a metadata folder), or "
                          "NNNNN.tar with NNNNN.parquet (img2dataset output); run `datacurate pool download` to make one")

    def describe(self) -> str:
        """One line for the user: which form of pool was found where."""
        return f"pool: {POOL_KINDS[self.kind]}: metadata {self.metadata}, shards {self.shards}"

    # --- per shard
    def shard_ids(self) -> list[str]:
        """Names (stems) of the metadata parquet files, sorted; an error if there are none."""
        if not self.metadata.is_dir():
            raise LayoutError(f"{self.metadata}: no metadata directory; run `datacurate pool download --pool {self.root}` first")
        ids = [p.stem for p in _visible(self.metadata, "*.parquet")]
        if not ids:
            raise LayoutError(f"{self.metadata}: no metadata parquet files; run `datacurate pool download --pool {self.root}` first")
        return ids

    def parquet(self, shard: str) -> Path:
        return self.metadata / f"{shard}.parquet"

    def npz(self, shard: str) -> Path:
        return self.metadata / f"{shard}.npz"

    def embed_pending(self, shard: str) -> Path:
        """Marks a shard whose new npz and parquet are being swapped in (embed): the pair is not whole."""
        return self.metadata / f".{shard}.embedding"

    def tar(self, shard: str) -> Path:
        return self.shards / f"{shard}.tar"

    def download_parquet(self, shard: str) -> Path:
        """img2dataset's own per-shard parquet (every url tried, with status), beside the tar."""
        return self.shards / f"{shard}.parquet"

    def download_stats(self, shard: str) -> Path:
        return self.shards / f"{shard}_stats.json"

    def metadata_files(self) -> list[Path]:
        return [self.parquet(s) for s in self.shard_ids()]

    # --- held-out data and the offline suite
    @property
    def holdout(self) -> Path:
        return self.root / "holdout"

    def holdout_parquet(self, which: str) -> Path:
        """``eval``, ``trusted`` or ``taxonomy``."""
        return self.holdout / f"{which}.parquet"

    def holdout_npz(self, which: str, model: str) -> Path:
        return self.holdout / f"{which}.{model}.npz"

    @property
    def evalsets(self) -> Path:
        return self.root / "evalsets"

    # --- the offline builder's files
    @property
    def urls(self) -> Path:
        """The url list (url, text, uid) the download reads."""
        return self.root / "urls.parquet"

    @property
    def www(self) -> Path:
        """The images the loopback server serves."""
        return self.root / "www"

    @property
    def ground_truth(self) -> Path:
        """Each sample's injected defect (only a pool built here has it)."""
        return self.root / "ground_truth.parquet"

    # --- the pool's own records
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def manifest(self) -> dict:
        """The builder's manifest.json (``{}`` for a pool not built here, e.g. upstream's)."""
        return read_json(self.manifest_path)

    @property
    def download_summary_path(self) -> Path:
        return self.root / "download_summary.json"

    def is_built(self) -> bool:
        return self.manifest_path.exists()

    def is_downloaded(self) -> bool:
        return self.download_summary_path.exists()


# ----------------------------------------------------------------------------- DATA

@dataclass(frozen=True)
class DataLayout:
    """A subset's training shards, as `datacurate reshard` writes them and `datacurate train` reads them."""

    root: Path

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    def tar(self, name: str) -> Path:
        return self.shards / name

    @property
    def sizes(self) -> Path:
        return self.root / "sizes.json"

    @property
    def sizes_beside_tars(self) -> Path:
        return self.shards / "sizes.json"

    @property
    def report(self) -> Path:
        return self.root / "reshard.json"

    @property
    def work(self) -> Path:
        return self.root / ".reshard"

    @property
    def lock(self) -> Path:
        """Held while a reshard writes here: a second one into the same folder is refused."""
        return self.root / ".lock"

    def is_complete(self) -> bool:
        return self.report.exists()


# ----------------------------------------------------------------------------- RUN and NET

@dataclass(frozen=True)
class RunLayout:
    """A training run: checkpoint, records of the trainer, and its evaluation."""

    root: Path

    @property
    def info(self) -> Path:
        return self.root / INFO

    def read_info(self) -> dict:
        return read_json(self.info, "written by `datacurate train`")

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT

    @property
    def checkpoints(self) -> Path:
        return self.checkpoint.parent

    @property
    def params(self) -> Path:
        return self.root / "params.txt"

    @property
    def log(self) -> Path:
        """OpenCLIP's own log (steps, loss, samples seen)."""
        return self.root / "out.log"

    @property
    def console(self) -> Path:
        """The trainer child's whole output, appended per attempt."""
        return self.root / "console.log"

    @property
    def data_check(self) -> Path:
        """The cached check of the run's DATA folder."""
        return self.root / ".data_check.json"

    @property
    def train_state(self) -> Path:
        return self.root / "train_state.json"

    @property
    def eval_results(self) -> Path:
        return self.root / EVAL_RESULTS

    @property
    def scores(self) -> Path:
        """The run's main suite's aggregates (another suite's: ``eval.results.scores_path``)."""
        return self.root / SCORES

    @property
    def eval_state(self) -> Path:
        """The per-task cache of eval (task data hash -> result line)."""
        return self.root / EVAL_STATE

    def averaged(self, key: str) -> "RunLayout":
        """The run scored with a weight average in place of its weights (``training.weight_averaging``):
        RUN/averages/KEY, a run folder of its own (its info.json names the average's checkpoint)."""
        return RunLayout(self.root / "averages" / key)

    def is_trained(self) -> bool:
        """info.json is written last, with finished: true, once the samples-seen budget is spent."""
        try:
            return self.read_info().get("finished") is True
        except LayoutError:
            return False


@dataclass(frozen=True)
class NetLayout:
    """The filtering network's folder (`datacurate filter-net train`): its weights and info.json (arch, AUC)."""

    root: Path

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def info(self) -> Path:
        return self.root / "info.json"

    def read_info(self) -> dict:
        return read_json(self.info, "written by `datacurate filter-net train`")

    def is_trained(self) -> bool:
        return self.checkpoint.is_file() and self.info.is_file()


# ----------------------------------------------------------------------------- DIR

@dataclass(frozen=True)
class BenchLayout:
    """`datacurate run`'s folder: one pool and filtering network shared by every recipe."""

    out: Path

    @property
    def pool(self) -> Path:
        return self.out / "pool"

    @property
    def pool_layout(self) -> PoolLayout:
        return PoolLayout.at(self.pool)

    @property
    def fnet(self) -> Path:
        return self.out / "fnet"

    @property
    def embed_summary(self) -> Path:
        return self.out / "embed.json"

    @property
    def subsets(self) -> Path:
        return self.out / "subsets"

    def subset(self, recipe: str) -> Path:
        return self.subsets / f"{recipe}.npy"

    @property
    def training_data(self) -> Path:
        return self.out / "data"

    def data(self, recipe: str) -> Path:
        return self.training_data / recipe

    @property
    def training_inputs(self) -> list[Path]:
        """What the trainings read and no training setting changes: pool, filtering network, subsets, shards."""
        return [self.pool, self.fnet, self.embed_summary, self.subsets, self.training_data]

    def run(self, recipe: str, seed: int = 0) -> Path:
        return self.out / "runs" / (recipe if seed == 0 else f"{recipe}-seed{seed}")

    @property
    def report_html(self) -> Path:
        return report_html(self.out)

    @property
    def report_dir(self) -> Path:
        return report_dir(self.out)

    @property
    def comparison(self) -> Path:
        """The recipes side by side (subset size, eval aggregates)."""
        return self.out / "comparison.json"

    @property
    def state(self) -> Path:
        """What `datacurate run` last did: scale, seed, recipes, seconds per stage."""
        return self.out / "run_state.json"

    @property
    def baselines(self) -> Path:
        """The baseline study's table and summary (scripts/bench/baselines.py)."""
        return self.out / "baselines.json"


def report_html(out) -> Path:
    """A run report's page, in any folder it is written to."""
    return Path(out) / "report.html"


def report_dir(out) -> Path:
    """The report's PNGs, beside its page."""
    return Path(out) / "report"


def subset_record(subset) -> Path:
    """SUBSET.json beside SUBSET.npy: the recipe, counts per step and the pool's hash."""
    return Path(subset).with_suffix(".json")


def as_pool(pool) -> PoolLayout:
    """A PoolLayout as it is, or the pool found at a path (``PoolLayout.find``)."""
    return pool if isinstance(pool, PoolLayout) else PoolLayout.find(pool)
