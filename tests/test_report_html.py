"""report.html's scores: every cell mean ± interval (seed std over several runs, else the eval
bootstrap se), and a recipe called a win over no filter only outside both intervals."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from datacurate.report.html import RecipeRun, Score, recipe_score, verdict, write_report
from datacurate.uids import make_uid, write_subset


def _run(folder: Path, average: float, se: float | None, group: float, group_se: float | None) -> Path:
    """A RUN/ as evaluation leaves it: scores.json and upstream eval_results.jsonl lines."""
    folder.mkdir(parents=True)
    scores = {"suite": "offline", "aggregates": {"Average": average}, "tasks": {"Emoji group": group}}
    if se is not None:
        scores.update(aggregates_se={"Average": se}, tasks_se={"Emoji group": group_se})
    (folder / "scores.json").write_text(json.dumps(scores))
    metrics = {"acc1": group, "main_metric": group, **({} if group_se is None else {"main_metric_se": group_se})}
    (folder / "eval_results.jsonl").write_text(json.dumps({"key": "emoji_group", "dataset": "Emoji group",
                                                           "metrics": metrics}) + "\n")
    return folder


def _recipe(root: Path, name: str, runs: list[tuple]) -> RecipeRun:
    subset = root / f"{name}.npy"
    write_subset(subset, [make_uid(name, i) for i in range(10)])
    paths = [_run(root / f"{name}_{i}", *r) for i, r in enumerate(runs)]
    return RecipeRun(name, subset, paths[0], paths[1:])


def _cells(page: str, heading: str) -> dict[str, list[str]]:
    """First cell -> the row's cells, in the table after ``heading``."""
    table = page.split(heading, 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>", 1)[1])
    return {c[0]: c for c in (re.findall(r"<td>(.*?)</td>", r) for r in rows)}


def test_report_shows_intervals_and_calls_a_win_only_outside_both(tmp_path):
    (tmp_path / "pool").mkdir()
    recipes = [
        _recipe(tmp_path, "no_filter", [(0.07, 0.005, 0.20, 0.03), (0.08, 0.005, 0.21, 0.03),
                                        (0.09, 0.005, 0.22, 0.03)]),          # 0.0800 ± 0.0100 over seeds
        _recipe(tmp_path, "dedup_clip", [(0.10, 0.005, 0.30, 0.03), (0.11, 0.005, 0.31, 0.03),
                                         (0.12, 0.005, 0.32, 0.03)]),         # +0.03: outside both 0.01
        _recipe(tmp_path, "random_30", [(0.085, 0.004, 0.30, 0.02)]),          # +0.005: inside no filter's 0.01
        _recipe(tmp_path, "basic", [(0.095, 0.004, 0.30, 0.02)]),              # +0.015: outside 0.004 and 0.01
        _recipe(tmp_path, "image_based", [(0.03, 0.004, 0.10, 0.02)]),         # -0.05: outside both
        _recipe(tmp_path, "legacy", [(0.20, None, 0.50, None)]),               # scored before se existed
    ]
    page = write_report(tmp_path, tmp_path / "pool", recipes).read_text()

    compared = _cells(page, "<h2>Recipes compared</h2>")
    assert compared["no_filter"][2:] == ["0.0800 ± 0.0100", "± seed std (3 seeds)", "3"]
    assert compared["dedup_clip"][2:4] == ["0.1100 ± 0.0100", "± seed std (3 seeds)"]
    assert compared["random_30"][2:] == ["0.0850 ± 0.0040", "± eval bootstrap se", "1"]
    assert compared["legacy"][2:4] == ["0.2000", "(no interval known)"]           # no ±, never ± 0

    per_task = _cells(page, "<h2>Per-task results</h2>")["Emoji group"]
    header = re.findall(r"<th>(.*?)</th>", page.split("<h2>Per-task results</h2>", 1)[1].split("</thead>")[0])
    assert header[1:3] == ["no_filter ± seed std (3 seeds)", "dedup_clip ± seed std (3 seeds)"]
    assert header[3] == "random_30 ± eval bootstrap se"
    assert per_task[1:4] == ["0.210 ± 0.010", "0.310 ± 0.010", "0.300 ± 0.020"]
    assert per_task[6] == "0.500"

    verdicts = dict(re.findall(r"(\w+) against no filter: Average [^<]*<b>(.*?)</b>", page))
    assert verdicts == {"dedup_clip": "win", "random_30": "within noise", "basic": "win",
                        "image_based": "loss", "legacy": "no interval known: not judged"}
    assert "dedup_clip against no filter: Average +0.0300" in page
    assert (tmp_path / "report" / "comparison.png").stat().st_size > 1000


def test_recipe_score_is_the_sample_std_over_seeds_else_the_bootstrap_se():
    several = recipe_score([(0.1, 0.01), (0.2, 0.01), (None, None), (0.3, 0.01)])
    assert several.mean == pytest.approx(0.2) and several.interval == pytest.approx(0.1)   # ddof=1
    assert several.n == 3 and several.kind == "± seed std (3 seeds)"
    one = recipe_score([(0.4, 0.02)])
    assert (one.mean, one.interval, one.kind) == (0.4, 0.02, "± eval bootstrap se")
    assert recipe_score([(0.4, None)]).cell() == "0.400"
    assert recipe_score([]).cell() == "-"
    # a gap must exceed both intervals to be a win (or a loss)
    assert verdict(Score(0.5, 0.01, 1), Score(0.48, 0.03, 3)) == "within noise"   # 0.02 < 0.03
    assert verdict(Score(0.5, 0.01, 1), Score(0.46, 0.03, 3)) == "win"
    assert verdict(Score(0.46, 0.01, 1), Score(0.5, 0.03, 3)) == "loss"


def test_a_caption_in_a_script_the_font_lacks_draws_without_a_warning_per_glyph(tmp_path):
    """The pool's foreign captions (Thai, ...) used to print one matplotlib warning per missing glyph in
    `make demo`'s output; the image is still written, the boxes drawn, and nothing is printed."""
    import io
    import warnings

    from PIL import Image

    from datacurate.report.plots import image_grid

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, format="PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = image_grid([(buf.getvalue(), "อีโมจิ หน้ายิ้ม"), (buf.getvalue(), "a red square")], "examples",
                         tmp_path / "grid.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
