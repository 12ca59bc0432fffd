"""Exponential moving averages of the weights, kept beside a training run: a tool for studying the instrument.

Why: a tiny run's score varies with the order it saw the data in (docs/training.md: three
initialisations 0.0002 apart, three data orders 0.0050), and an average of the weights over the end
of training is the usual way to make a short run depend less on the last batches it saw. Whether it
makes the benchmark rank recipes more reliably is measured by ``scripts/bench/baselines.py
--averages``; until then it is not part of any scale's recipe.

The averages are a side output: the trainer's own weights, optimizer and checkpoints are exactly
what the recipe trains without them (the same bytes). With every checkpoint the trainer writes
``checkpoints/epoch_N.averages`` (one state dict per decay, the optimizer steps taken and the epoch
N), and a resumed run picks its averages up from the file of its checkpoint's epoch, so a killed and
resumed run keeps the averages an uninterrupted one does. The file of the epoch before is kept too:
OpenCLIP writes ``tmp.pt`` and only then renames it to ``epoch_latest.pt``, so a kill between the
two leaves the older checkpoint in place, and its averages must still be there. Switched on in the
trainer process by ``DATACURATE_WEIGHT_AVERAGES=0.9,0.95`` (decays in (0, 1)).
"""
from __future__ import annotations

import os
from pathlib import Path

ENV = "DATACURATE_WEIGHT_AVERAGES"
SUFFIX = ".averages"


class AveragesError(ValueError):
    """The averages asked for, or found beside a checkpoint, cannot be used."""


def parse_decays(text: str | None, where: str = ENV) -> list[float]:
    """``"0.9,0.95"`` -> [0.9, 0.95]; an empty or missing text gives no averages. WHERE names the
    text's source in errors."""
    decays = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        try:
            d = float(item)
        except ValueError:
            raise AveragesError(f"{where}: {item.strip()!r} is not a number; give decays like 0.9,0.95") from None
        if not 0.0 < d < 1.0:
            raise AveragesError(f"{where}: decay {d:g} is outside (0, 1)")
        decays.append(d)
    return sorted(set(decays))


def side_file(checkpoint_dir: str | os.PathLike, epoch: int | None) -> Path:
    """The averages of epoch N's weights: ``checkpoints/epoch_N.averages``."""
    return Path(checkpoint_dir) / f"epoch_{epoch}{SUFFIX}"


def write_side_file(avg: "WeightAverages", state: dict, checkpoint_dir: Path, save) -> Path:
    """Write the averages that go with STATE (a checkpoint's dict) with SAVE (``torch.save``), and
    remove the files of epochs older than the one before it, which no checkpoint can resume any more."""
    epoch = state.get("epoch")
    side = side_file(checkpoint_dir, epoch)
    save(avg.state(state["state_dict"], epoch), side)
    if isinstance(epoch, int):
        for old in Path(checkpoint_dir).glob(f"epoch_*{SUFFIX}"):
            n = old.name[len("epoch_"):-len(SUFFIX)]
            if n.isdigit() and int(n) < epoch - 1:
                old.unlink(missing_ok=True)
    return side


def decay_key(decay: float) -> str:
    """A decay as it is named in files and tables: ``0.95`` -> ``ema0.95``."""
    return f"ema{decay:g}"


class WeightAverages:
    """``avg = decay * avg + (1 - decay) * weights`` after every optimizer step, one average per decay.

    The first step starts every average at the weights it produced; a resumed run starts from the
    averages saved beside the checkpoint it resumes (``resume_from``)."""

    def __init__(self, decays: list[float]):
        self.decays = list(decays)
        self.steps = 0
        self.params: list = []          # the optimizer's parameters, in its order
        self.shadows: dict[float, list] | None = None
        self._resumed: dict | None = None

    def update(self, params: list) -> None:
        import torch

        self.params = list(params)
        with torch.no_grad():
            if self.shadows is None and self._resumed is None:     # the run's first step
                self.shadows = {d: [p.detach().clone() for p in self.params] for d in self.decays}
            else:
                if self.shadows is None:                          # the first step after a resume
                    self.shadows = self._restored()
                current = [p.detach() for p in self.params]
                for d, avg in self.shadows.items():
                    torch._foreach_lerp_(avg, current, 1.0 - d)
            self.steps += 1

    def _restored(self) -> dict[float, list]:
        saved = self._resumed["shadows"]
        if [len(saved[d]) for d in self.decays] != [len(self.params)] * len(self.decays):
            raise AveragesError("the averages saved beside the checkpoint do not match the model's "
                                "parameters; train the run again from scratch")
        return {d: [t.to(p.device, p.dtype).clone() for t, p in zip(saved[d], self.params)] for d in self.decays}

    def resume_from(self, saved: dict, epoch: int | None, where: str) -> None:
        if [float(d) for d in saved.get("decays", [])] != self.decays:
            raise AveragesError(f"{where}: holds averages for decays {saved.get('decays')}, this run asks for "
                                f"{self.decays}; train the run again from scratch or ask for the same decays")
        _same_epoch(saved, epoch, where)
        self._resumed, self.steps = saved, int(saved["steps"])

    def state(self, state_dict: dict, epoch: int) -> dict:
        """What goes beside a checkpoint: the averages in the optimizer's order and by parameter name
        (matched to ``state_dict`` through the storage the two share)."""
        by_ptr = {t.data_ptr(): name for name, t in state_dict.items()}
        names = [by_ptr.get(p.data_ptr()) for p in self.params]
        if None in names:
            raise AveragesError("an optimized parameter is not in the checkpoint's state dict")
        shadows = self.shadows or {}
        return {"decays": self.decays, "steps": self.steps, "epoch": epoch, "names": names,
                "shadows": {d: [t.detach().cpu().clone() for t in ts] for d, ts in shadows.items()}}


def _same_epoch(saved: dict, epoch: int | None, where: str) -> None:
    if saved.get("epoch") != epoch:
        raise AveragesError(f"{where}: averages of epoch {saved.get('epoch')} for a checkpoint of epoch "
                            f"{epoch} (the file was copied or renamed); train the run again")


def averaged_checkpoint(checkpoint: str | os.PathLike, decay: float) -> dict:
    """The checkpoint (epoch, name, model state dict; no optimizer) with every averaged parameter
    replaced by its average: what OpenCLIP and ``datacurate eval`` load like any other checkpoint."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    side = side_file(Path(checkpoint).parent, state.get("epoch"))
    if not side.is_file():
        raise AveragesError(f"{side}: missing; the run was trained without {ENV}")
    saved = torch.load(side, map_location="cpu", weights_only=True)
    if decay not in [float(d) for d in saved["decays"]]:
        raise AveragesError(f"{side}: no average with decay {decay:g} (it has {saved['decays']})")
    _same_epoch(saved, state.get("epoch"), str(side))
    sd = dict(state["state_dict"])
    for name, t in zip(saved["names"], saved["shadows"][decay]):
        sd[name] = t
    return {"epoch": state.get("epoch"), "name": state.get("name"), "state_dict": sd}


def write_averaged_checkpoint(checkpoint: str | os.PathLike, decay: float, out: str | os.PathLike) -> Path:
    """``averaged_checkpoint`` written to OUT (under a temporary name, then renamed)."""
    import torch

    from datacurate.atomic import atomic_path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save(averaged_checkpoint(checkpoint, decay), tmp)
    return out


_ACTIVE: WeightAverages | None = None


def install(decays: list[float]) -> WeightAverages | None:
    """In the trainer process: average after every optimizer step, write the averages beside every
    checkpoint, and read them back when OpenCLIP resumes one. Returns the averages (None: none asked)."""
    global _ACTIVE
    if not decays or _ACTIVE is not None:
        return _ACTIVE
    import torch
    import open_clip_train.main as ocm
    from torch.optim.optimizer import register_optimizer_step_post_hook

    avg = _ACTIVE = WeightAverages(decays)

    def after_step(optimizer, args, kwargs):
        avg.update([p for group in optimizer.param_groups for p in group["params"]])

    register_optimizer_step_post_hook(after_step)

    save = torch.save

    def save_with_averages(obj, f, *args, **kwargs):
        save(obj, f, *args, **kwargs)
        # once per checkpoint, with the latest one (OpenCLIP writes it as tmp.pt and renames it to
        # epoch_latest.pt); a final epoch_N.pt holds the same weights
        if (isinstance(f, (str, os.PathLike)) and Path(f).name == "tmp.pt" and isinstance(obj, dict)
                and "state_dict" in obj and avg.params):
            write_side_file(avg, obj, Path(f).parent, save)

    torch.save = save_with_averages

    load = ocm.pt_load

    def load_with_averages(path, *args, **kwargs):
        state = load(path, *args, **kwargs)
        side = side_file(Path(path).parent, state.get("epoch"))
        if not side.is_file():
            raise AveragesError(f"{side}: missing, so the averages cannot resume with {path}; train the run "
                                f"again from scratch, or without {ENV}")
        avg.resume_from(torch.load(side, map_location="cpu", weights_only=True), state.get("epoch"), str(side))
        return state

    ocm.pt_load = load_with_averages
    return avg


def install_from_env() -> WeightAverages | None:
    return install(parse_decays(os.environ.get(ENV)))
