from datacurate.report.training_log import parse_training_log

LOG = """\
2026-11-22,20:00:00 | INFO | Start epoch 0
2026-11-22,20:00:01 | INFO | Train Epoch: 0 [  64/2048 (3%)] Data (t): 0.101 Batch (t): 0.250, 256.000/s, 256.000/s/gpu LR: 0.000125 Logit Scale: 14.286 Contrastive_loss: 4.1589 (4.1589) Loss: 4.1589 (4.1589)
2026-11-22,20:00:09 | INFO | Train Epoch: 1 [2048/2048 (100%)] Data (t): 0.101 Batch (t): 0.250, 260.5/s, 260.5/s/gpu LR: 0.000000 Logit Scale: 14.300 Contrastive_loss: 2.5000 (3.0000) Loss: 2.5000 (3.0000)
"""


def test_parse_training_log(tmp_path):
    p = tmp_path / "out.log"
    p.write_text(LOG)
    rows = parse_training_log(p)
    assert [r["samples_seen"] for r in rows] == [64, 4096]
    assert rows[0]["loss"] == 4.1589 and rows[1]["loss"] == 2.5
    assert rows[0]["lr"] == 0.000125 and rows[1]["samples_per_s"] == 260.5
    assert parse_training_log(tmp_path / "missing.log") == []
