"""scripts/bench/eval_candidates.py: wider held-out suites (every taxonomy name as an answer, the
trusted split's images as more items) built from the pool's held-out parquets and scored on a run."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "bench"))

import eval_candidates as C  # noqa: E402

from test_eval_helpers import make_tiny_run, write_eval_parquet  # noqa: E402


def _pool(tmp_path: Path) -> Path:
    """eval.parquet (shapes), trusted.parquet (the same pictures under other names) and a taxonomy
    that also holds two pool concepts, one of them in the eval items' subgroup."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pool = tmp_path / "pool"
    ev = pq.read_table(write_eval_parquet(pool))
    rename = lambda col, f: pa.array([f(x) for x in ev.column(col).to_pylist()])  # noqa: E731
    tr = ev.set_column(0, "item_id", rename("item_id", lambda x: f"t-{x}"))
    tr = tr.set_column(tr.schema.get_field_index("name"), "name", rename("name", lambda x: f"trusted {x}"))
    pq.write_table(tr, pool / "holdout" / "trusted.parquet")
    tax = {"name": [], "group": [], "subgroup": [], "split": []}
    for t, split in ((ev, "eval"), (tr, "trusted")):
        for name, g, sg in zip(*(t.column(c).to_pylist() for c in ("name", "group", "subgroup"))):
            if name not in tax["name"]:
                for k, v in zip(tax, (name, g, sg, split)):
                    tax[k].append(v)
    for name, sg in (("pool circle", "shape-circle"), ("pool star", "shape-star")):
        for k, v in zip(tax, (name, "round-shapes", sg, "pool")):
            tax[k].append(v)
    pq.write_table(pa.table(tax), pool / "holdout" / "taxonomy.parquet")
    return pool


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_candidates_widen_the_answers_and_the_items_and_never_name_a_held_out_concept_as_member(tmp_path):
    import json

    import pyarrow.parquet as pq

    from eval.tasks import find_user_tasks

    pool = _pool(tmp_path)
    root = tmp_path / "tasks"
    keys = C.build_candidates(pool, root)
    assert set(find_user_tasks(root)) == set(keys)
    ev = pq.read_table(pool / "holdout" / "eval.parquet").column("name").to_pylist()
    tax = pq.read_table(pool / "holdout" / "taxonomy.parquet").column("name").to_pylist()
    # every taxonomy name is an answer, the eval images are the suite's own
    assert _lines(root / "cand_all_concept" / "classnames.txt") == sorted(tax)
    assert (root / "cand_all_concept" / "source.json").read_text().count(f'"items": {len(ev)}') == 1
    # eval + trusted: twice the items, each concept its own class
    assert len(_lines(root / "cand_et_concept" / "classnames.txt")) == 2 * len(set(ev))
    assert json.loads((root / "cand_et_name" / "source.json").read_text())["items"] == 2 * len(ev)
    assert json.loads((root / "cand_tr_group" / "source.json").read_text())["items"] == len(ev)
    # CHiLS members: pool concepts only (a held-out concept's own name would give its answer away)
    for key in ("cand_et_subgroup", "cand_et_group", "cand_tr_subgroup"):
        members = json.loads((root / key / "subclasses.json").read_text())["subclasses"]
        assert {n for m in members for n in m} <= {"pool circle", "pool star"}
    sub = dict(zip(_lines(root / "cand_et_subgroup" / "classnames.txt"),
                   json.loads((root / "cand_et_subgroup" / "subclasses.json").read_text())["subclasses"]))
    assert any(m == ["pool circle"] for m in sub.values())
    again = C.build_candidates(pool, root)                   # built once: a second call writes nothing
    assert again == keys


def test_aggregates_replace_the_named_tasks_and_keep_the_suite_s_mean():
    tasks = {"Emoji group": 0.2, "Emoji subgroup": 0.4, "Emoji caption retrieval": 0.6, "Emoji concept": 0.8}
    extra = {C._key(p, t): v for p in ("et", "tr") for t, v in zip(C.TASKS, (0.1, 0.1, 0.1, 0.1))}
    extra.update({C._key("all", "concept"): 0.0, C._key("etall", "concept"): 0.5})
    a = C.aggregates(tasks, extra)
    assert a["the suite"] == pytest.approx(0.5)
    assert a["all names"] == pytest.approx((0.2 + 0.4 + 0.6 + 0.0) / 4)
    assert a["eval + trusted"] == pytest.approx(0.1)
    assert a["eval + trusted, all names"] == pytest.approx((0.1 * 3 + 0.5) / 4)
    assert a["trusted only (check)"] == pytest.approx(0.1)


def test_a_run_is_scored_on_every_candidate_beside_its_own_scores(tmp_path):
    pool = _pool(tmp_path)
    keys = C.build_candidates(pool, tmp_path / "tasks")
    run = make_tiny_run(tmp_path / "run")
    (run / "scores.json").write_text("{}")
    got = C.score_run(run, tmp_path / "tasks", keys)
    assert set(got) == set(keys) and all(0.0 <= v <= 1.0 for v in got.values())
    assert (run / "scores.json").read_text() == "{}"          # the run's own suite is left as it was
    assert C.score_run(run, tmp_path / "tasks", keys) == got  # served from the runner's cache
