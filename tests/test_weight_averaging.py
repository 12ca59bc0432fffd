"""Weight averages kept beside a training (training.weight_averaging): the arithmetic, the names, refusals."""
from __future__ import annotations

import pytest
import torch

from training.weight_averaging import (AveragesError, WeightAverages, averaged_checkpoint, decay_key,
                                       parse_decays, side_file, write_averaged_checkpoint)


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
    torch.save(state, side_file(ckpt))
    out = write_averaged_checkpoint(ckpt, 0.9, tmp_path / "averages" / decay_key(0.9) / "checkpoint.pt")
    loaded = torch.load(out, weights_only=False)
    assert loaded["epoch"] == 1 and set(loaded["state_dict"]) == set(model.state_dict())
    for name, t in zip(state["names"], state["shadows"][0.9]):
        torch.testing.assert_close(loaded["state_dict"][name], t)
    twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 1))
    twin.load_state_dict(loaded["state_dict"])          # loads like any checkpoint
    with pytest.raises(AveragesError, match="no average with decay 0.5"):
        averaged_checkpoint(ckpt, 0.5)
    torch.save({"epoch": 2, "state_dict": model.state_dict()}, ckpt)
    with pytest.raises(AveragesError, match="averages of epoch 1 beside a checkpoint of epoch 2"):
        averaged_checkpoint(ckpt, 0.9)
    side_file(ckpt).unlink()
    with pytest.raises(AveragesError, match="epoch_latest.averages: missing"):
        averaged_checkpoint(ckpt, 0.9)


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
    with pytest.raises(AveragesError, match="epoch 1 beside a checkpoint of epoch 2"):
        WeightAverages([0.8]).resume_from(saved, epoch=2, where="side")
    with pytest.raises(AveragesError, match="decays"):
        WeightAverages([0.9]).resume_from(saved, epoch=1, where="side")


def test_decays_are_parsed_and_bad_ones_refused():
    assert parse_decays("0.95, 0.9,0.95") == [0.9, 0.95] and parse_decays(None) == [] and parse_decays("") == []
    for bad, msg in (("1.0", "outside"), ("0", "outside"), ("x", "not a number")):
        with pytest.raises(AveragesError, match=msg):
            parse_decays(bad)
