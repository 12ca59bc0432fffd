"""Weight averages kept beside a training (training.weight_averaging): the arithmetic, the names, refusals."""
from __future__ import annotations

import pytest
import torch

from training.weight_averaging import (AveragesError, WeightAverages, averaged_checkpoint, decay_key,
                                       parse_decays, side_file, write_averaged_checkpoint,
                                       write_side_file)


def _train(avg: WeightAverages | None, steps: int, seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    history = []
    for _ in range(steps):
        x = torch.randn(8, 3)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append([p.detach().clone() for p in model.parameters()])
        if avg is not None:
            avg.update([p for g in opt.param_groups for p in g["params"]])
    return model, history


def test_average_is_the_exponential_moving_average_of_the_steps():
    avg = WeightAverages([0.5, 0.9])
    model, history = _train(avg, 5)
    for d in (0.5, 0.9):
        want = [t.clone() for t in history[0]]
        for step in history[1:]:
            want = [d * w + (1 - d) * p for w, p in zip(want, step)]
        for got, w in zip(avg.shadows[d], want):
            torch.testing.assert_close(got, w)
    assert avg.steps == 5
    # the average is not the weights, and averaging never touched the weights
    assert not torch.allclose(avg.shadows[0.9][0], history[-1][0])
    for p, h in zip(model.parameters(), history[-1]):
        assert torch.equal(p.detach(), h)


def test_state_names_the_parameters_and_a_checkpoint_takes_the_average(tmp_path):
    avg = WeightAverages([0.9])
    model, _ = _train(avg, 3)
    state = avg.state(model.state_dict(), epoch=1)
    assert state["names"] == [n for n, _ in model.named_parameters()]
    ckpt = tmp_path / "checkpoints" / "epoch_latest.pt"
    ckpt.parent.mkdir()
    torch.save({"epoch": 1, "name": "x", "state_dict": model.state_dict()}, ckpt)
    torch.save(state, side_file(ckpt.parent, 1))
    out = write_averaged_checkpoint(ckpt, 0.9, tmp_path / "averages" / decay_key(0.9) / "checkpoint.pt")
    loaded = torch.load(out, weights_only=False)
    assert loaded["epoch"] == 1 and set(loaded["state_dict"]) == set(model.state_dict())
    for name, t in zip(state["names"], state["shadows"][0.9]):
        torch.testing.assert_close(loaded["state_dict"][name], t)
    twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 1))
    twin.load_state_dict(loaded["state_dict"])          # loads like any checkpoint
    with pytest.raises(AveragesError, match="no average with decay 0.5"):
        averaged_checkpoint(ckpt, 0.5)
    side_file(ckpt.parent, 1).rename(side_file(ckpt.parent, 2))
    torch.save({"epoch": 2, "state_dict": model.state_dict()}, ckpt)
    with pytest.raises(AveragesError, match="averages of epoch 1 for a checkpoint of epoch 2"):
        averaged_checkpoint(ckpt, 0.9)
    side_file(ckpt.parent, 2).unlink()
    with pytest.raises(AveragesError, match="epoch_2.averages: missing"):
        averaged_checkpoint(ckpt, 0.9)


def test_a_kill_between_the_averages_and_the_checkpoint_leaves_a_matching_pair(tmp_path):
    """The trainer writes epoch N's averages with tmp.pt, before OpenCLIP renames tmp.pt to
    epoch_latest.pt: a kill between the two leaves epoch N-1's checkpoint, whose averages are kept;
    only files no checkpoint can resume any more are removed."""
    avg = WeightAverages([0.9])
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    latest = ckpts / "epoch_latest.pt"
    for epoch in (1, 2, 3):
        model, _ = _train(avg, 2, seed=epoch)               # the weights move on between checkpoints
        state = {"epoch": epoch, "name": "x", "state_dict": model.state_dict()}
        write_side_file(avg, state, ckpts, torch.save)      # then OpenCLIP's tmp.pt -> epoch_latest.pt
        if epoch < 3:                                       # ... killed before epoch 3's rename
            torch.save(state, latest)
    assert sorted(p.name for p in ckpts.glob("*.averages")) == ["epoch_2.averages", "epoch_3.averages"]
    resumed = averaged_checkpoint(latest, 0.9)
    saved = torch.load(side_file(ckpts, 2), weights_only=True)
    assert resumed["epoch"] == 2 and saved["epoch"] == 2
    name = saved["names"][0]
    torch.testing.assert_close(resumed["state_dict"][name], saved["shadows"][0.9][0])
    assert not torch.equal(saved["shadows"][0.9][0], torch.load(side_file(ckpts, 3), weights_only=True)["shadows"][0.9][0])


def test_resumed_average_continues_where_it_stopped():
    whole = WeightAverages([0.8])
    model, history = _train(whole, 4)
    first = WeightAverages([0.8])
    m1, _ = _train(first, 2)
    saved = first.state(m1.state_dict(), epoch=1)
    again = WeightAverages([0.8])
    again.resume_from(saved, epoch=1, where="side")
    again.update([torch.nn.Parameter(t.clone()) for t in history[2]])
    again.update([torch.nn.Parameter(t.clone()) for t in history[3]])
    for got, want in zip(again.shadows[0.8], whole.shadows[0.8]):
        torch.testing.assert_close(got, want)
    assert again.steps == 4
    with pytest.raises(AveragesError, match="epoch 1 for a checkpoint of epoch 2"):
        WeightAverages([0.8]).resume_from(saved, epoch=2, where="side")
    with pytest.raises(AveragesError, match="decays"):
        WeightAverages([0.9]).resume_from(saved, epoch=1, where="side")


def test_decays_are_parsed_and_bad_ones_refused():
    assert parse_decays("0.95, 0.9,0.95") == [0.9, 0.95] and parse_decays(None) == [] and parse_decays("") == []
    for bad, msg in (("1.0", "outside"), ("0", "outside"), ("x", "not a number")):
        with pytest.raises(AveragesError, match=msg):
            parse_decays(bad)
