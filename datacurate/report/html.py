"""The static run report (``DIR/report.html``): one page that opens from disk, PNGs beside it.

It is built only from the files the stages leave (manifest, download summary,
SUBSET.json, metadata, out.log, eval results), so it can be rebuilt at any time with
``datacurate run ... --report-only`` and never needs the models.
"""
from __future__ import annotations

import html
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import write_text_atomic
from ..images import IMAGE_EXTS
from ..layout import PoolLayout, RunLayout, report_dir, report_html
from . import plots
from .training_log import parse_training_log


@dataclass
class RecipeRun:
    """Where one recipe's files are: its subset, training data and training/eval run."""

    name: str
    subset: Path
    run: Path
    seeds: list[Path] = field(default_factory=list)  # extra runs of the same recipe (baseline study)


def _json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _esc(x) -> str:
    return html.escape(str(x))


def _table(header: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


# --------------------------------------------------------------------------- sections

def pool_section(pool: Path, img_dir: Path) -> str:
    lay = PoolLayout.at(pool)
    man = _json(lay.manifest_path)
    dl = _json(lay.download_summary_path)
    parts = ["<h2>Pool</h2>"]
    if man:
        parts.append(f"<p>scale <b>{_esc(man.get('scale'))}</b>, seed {_esc(man.get('seed'))}</p>")
        srcs = man.get("sources", [])
        if srcs:
            parts.append(_table(["source", "package", "version", "licence"],
                                [[s.get("name"), s.get("package"), s.get("version"), s.get("licence")]
                                 for s in srcs]))
    if dl:
        parts.append(_table(["tried", "succeeded", "failed", "wall time (s)"],
                            [[_fmt(dl.get("tried")), _fmt(dl.get("succeeded")), _fmt(dl.get("failed")),
                              _fmt(dl.get("wall_time_s"), 1)]]))
        reasons = dl.get("failed_by_reason") or {}
        if reasons:
            plots.bar_counts(reasons, "download failures by reason", img_dir / "download_failures.png")
            parts.append('<img src="report/download_failures.png" alt="download failures by reason">')
    return "\n".join(parts)


def _subset_steps(meta: dict) -> list[tuple[str, int]]:
    steps = meta.get("steps") or meta.get("counts") or []
    out = []
    if isinstance(steps, dict):
        steps = [{"step": k, "kept": v} for k, v in steps.items()]
    for s in steps:
        name = s.get("step") or s.get("name") or s.get("filter") or "?"
        n = s.get("kept", s.get("count", s.get("n")))
        if n is not None:
            out.append((str(name), int(n)))
    return out


def funnel_section(recipes: list[RecipeRun], img_dir: Path) -> str:
    data = {}
    rows = []
    for r in recipes:
        meta = _json(r.subset.with_suffix(".json"))
        steps = _subset_steps(meta)
        if steps:
            data[r.name] = steps
            rows.append([r.name, " → ".join(f"{s} {n:,}" for s, n in steps)])
    if not data:
        return ""
    plots.funnel(data, img_dir / "funnel.png")
    return ("<h2>Filter funnel</h2>" + _table(["recipe", "samples kept after each step"], rows)
            + '<img src="report/funnel.png" alt="filter funnel">')


def _metadata(pool: Path, columns: list[str]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for p in sorted(PoolLayout.at(pool).metadata.glob("*.parquet")):
        have = set(pq.ParquetFile(p).schema_arrow.names)
        cols = [c for c in columns if c in have]
        t = pq.read_table(p, columns=cols)
        t = t.append_column("_shard", pa.array([p.stem] * t.num_rows))
        tables.append(t)
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default")


def score_section(pool: Path, img_dir: Path, column: str = "clip_fnet_similarity_score",
                  top_fraction: float = 0.3) -> str:
    import pyarrow.parquet as pq

    meta = _metadata(pool, ["uid", column])
    if meta is None or column not in meta.column_names:
        return ""
    scores = np.asarray(meta.column(column).to_numpy(zero_copy_only=False), dtype=float)
    cut = float(np.quantile(scores, 1 - top_fraction))
    gt_path = PoolLayout.at(pool).ground_truth
    groups: dict[str, np.ndarray] = {}
    if gt_path.exists():
        gt = pq.read_table(gt_path, columns=["uid", "defect"]).to_pydict()
        defect = dict(zip(gt["uid"], gt["defect"]))
        labels = np.asarray([defect.get(u, "?") for u in meta.column("uid").to_pylist()])
        # the caption defects a CLIP score is meant to catch, apart; the rest together
        shown = {"none": "clean", "swapped_caption": "swapped caption", "boilerplate": "boilerplate",
                 "foreign_language": "foreign language"}
        for name, label in shown.items():
            groups[label] = scores[labels == name]
        groups["other defects"] = scores[~np.isin(labels, list(shown))]
    else:
        groups["all"] = scores
    plots.score_histogram(groups, cut, f"{column} by injected defect (top {top_fraction:.0%} cut)",
                          img_dir / "score_hist.png")
    return ("<h2>Scores</h2><p>The filtering network's image-text similarity per sample, split by the "
            "pool's ground truth (never seen by the filters); the dashed line is the top-30 % cut.</p>"
            '<img src="report/score_hist.png" alt="score histogram">')


def _read_images(pool: Path, shard: str, keys: set[str]) -> dict[str, bytes]:
    out = {}
    tar = PoolLayout.at(pool).tar(shard)
    if not tar.exists():
        return out
    with tarfile.open(tar) as tf:
        for m in tf:
            stem, _, ext = m.name.rpartition(".")
            if stem in keys and ext in IMAGE_EXTS:
                out[stem] = tf.extractfile(m).read()
    return out


def examples_section(pool: Path, recipe: RecipeRun, img_dir: Path, n: int = 12, seed: int = 0) -> str:
    from datacurate.uids import read_subset_hex

    if not recipe.subset.exists():
        return ""
    meta = _metadata(pool, ["uid", "key", "text"])
    if meta is None or "key" not in meta.column_names:
        return ""
    keep = set(read_subset_hex(recipe.subset))
    d = meta.to_pydict()
    rng = np.random.default_rng(seed)
    idx_keep = [i for i, u in enumerate(d["uid"]) if u in keep]
    idx_rej = [i for i, u in enumerate(d["uid"]) if u not in keep]
    html_parts = []
    for label, idx in (("kept", idx_keep), ("rejected", idx_rej)):
        if not idx:
            continue
        pick = sorted(rng.choice(idx, size=min(n, len(idx)), replace=False).tolist())
        by_shard: dict[str, set[str]] = {}
        for i in pick:
            by_shard.setdefault(d["_shard"][i], set()).add(d["key"][i])
        blobs = {}
        for shard, keys in by_shard.items():
            blobs.update(_read_images(pool, shard, keys))
        ex = [(blobs[d["key"][i]], d["text"][i]) for i in pick if d["key"][i] in blobs]
        if ex:
            fname = f"examples_{recipe.name}_{label}.png"
            plots.image_grid(ex, f"{recipe.name}: {label}", img_dir / fname)
            html_parts.append(f'<img src="report/{fname}" alt="{label} examples">')
    if not html_parts:
        return ""
    return f"<h3>Examples: {_esc(recipe.name)}</h3>" + "".join(html_parts)


def _scores(run: Path) -> dict:
    return _json(RunLayout(run).scores)


def _main_metric(scores: dict) -> tuple[str, float | None]:
    """The suite's average over its scored tasks (scores.json "aggregates"."Average", as upstream)."""
    value = (scores.get("aggregates") or {}).get("Average")
    return "Average", float(value) if isinstance(value, (int, float)) else None


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


@dataclass
class Score:
    """A recipe's score with its interval: the sample std over seed runs (ddof=1) when there are
    several, else the one run's bootstrap standard error over eval items (None: not known)."""

    mean: float | None
    interval: float | None = None
    n: int = 0

    @property
    def source(self) -> str:
        if self.interval is None:
            return "no interval known"
        return f"seed std, {self.n} seeds" if self.n > 1 else "eval bootstrap se"

    @property
    def kind(self) -> str:
        """What the ± is, as a column says it: "± seed std (3 seeds)", "± eval bootstrap se"."""
        if self.interval is None:
            return "(no interval known)"
        return f"± seed std ({self.n} seeds)" if self.n > 1 else "± eval bootstrap se"

    def cell(self, digits: int = 3) -> str:
        if self.mean is None:
            return "-"
        return f"{self.mean:.{digits}f}" + ("" if self.interval is None else f" ± {self.interval:.{digits}f}")


def recipe_score(runs: list[tuple[float | None, float | None]]) -> Score:
    """(value, bootstrap se) of each seed run -> mean ± seed std (ddof=1), or the single run's se."""
    got = [(v, se) for v, se in runs if v is not None]
    if not got:
        return Score(None)
    if len(got) == 1:
        return Score(got[0][0], got[0][1], 1)
    vals = [v for v, _ in got]
    return Score(float(np.mean(vals)), float(np.std(vals, ddof=1)), len(vals))


def verdict(score: Score, ref: Score) -> str:
    """'win' / 'loss' only when the gap is outside both intervals, else 'within noise'."""
    if score.mean is None or ref.mean is None:
        return "not scored"
    if score.interval is None or ref.interval is None:
        return "no interval known: not judged"
    gap = score.mean - ref.mean
    if abs(gap) > score.interval and abs(gap) > ref.interval:
        return "win" if gap > 0 else "loss"
    return "within noise"


def _task_lines(run: Path) -> dict[str, dict]:
    """dataset -> metrics of RUN/eval_results.jsonl (upstream evaluate.py's lines)."""
    out = {}
    p = RunLayout(run).eval_results
    for line in p.read_text().splitlines() if p.exists() else []:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        out[rec.get("dataset", rec.get("key", "?"))] = rec.get("metrics") or {}
    return out


def _average(run: Path) -> tuple[float | None, float | None]:
    sc = _scores(run)
    return _main_metric(sc)[1], _number((sc.get("aggregates_se") or {}).get("Average"))


def _comparison_lines(comp: list[dict], ref_name: str = "no_filter") -> str:
    """Each recipe against no filter: a win only when the gap is outside both intervals."""
    ref = next((c for c in comp if c["recipe"] == ref_name), None)
    if ref is None or ref["score"].mean is None:
        return ""
    out = []
    for c in comp:
        if c is ref or c["score"].mean is None:
            continue
        a, b = c["score"], ref["score"]
        out.append(f"{_esc(c['recipe'])} against no filter: Average {a.mean - b.mean:+.4f} "
                   f"({a.cell(4)} {_esc(a.source)}; no filter {b.cell(4)} {_esc(b.source)}): "
                   f"<b>{_esc(verdict(a, b))}</b>")
    return ("<p class='verdict'>" + "<br>".join(out) + "<br><small>A difference is a win only when it is larger "
            "than both recipes' intervals; otherwise it is within noise.</small></p>") if out else ""


def results_section(recipes: list[RecipeRun], img_dir: Path) -> str:
    from datacurate.uids import read_subset

    curves = {r.name: parse_training_log(RunLayout(r.run).log) for r in recipes}
    parts = []
    if any(curves.values()):
        plots.training_curves(curves, img_dir / "training.png")
        parts += ["<h2>Training</h2>", '<img src="report/training.png" alt="training curves">']
    task_cells: dict[str, dict[str, Score]] = {}
    comp = []
    for r in recipes:
        runs = [r.run, *r.seeds]
        lines = [_task_lines(p) for p in runs]
        for t in dict.fromkeys(t for ln in lines for t in ln):
            task_cells.setdefault(t, {})[r.name] = recipe_score(
                [(_number(ln[t].get("main_metric")), _number(ln[t].get("main_metric_se"))) for ln in lines if t in ln])
        score = recipe_score([_average(p) for p in runs])
        size = len(read_subset(r.subset)) if r.subset.exists() else 0
        comp.append({"recipe": r.name, "size": size, "Average": score.mean, "Average_std": score.interval,
                     "n": score.n, "metric": "Average", "score": score})
    if task_cells:
        kinds = {c["recipe"]: c["score"].kind for c in comp}
        header = ["task", *[f"{n} {kinds[n]}" for n in kinds]]
        rows = [[t, *[_task_cell(v.get(n), kinds[n]) for n in kinds]] for t, v in sorted(task_cells.items())]
        parts += ["<h2>Per-task results</h2>", _table(header, rows)]
    if comp:
        parts += ["<h2>Recipes compared</h2>",
                  _table(["recipe", "subset size", "Average", "interval", "runs"],
                         [[c["recipe"], _fmt(c["size"]), c["score"].cell(4), c["score"].kind, c["n"]] for c in comp]),
                  _comparison_lines(comp)]
        if any(c["Average"] is not None for c in comp):
            plots.recipe_comparison(comp, "Average", img_dir / "comparison.png")
            parts.append('<img src="report/comparison.png" alt="size against score">')
    return "\n".join(p for p in parts if p)


def _task_cell(score: Score | None, column_kind: str) -> str:
    """mean ± interval; the interval's kind is named in the column, or here when it differs."""
    if score is None:
        return "-"
    if score.kind == column_kind or score.mean is None:
        return score.cell()
    return f"{score.cell()} {score.kind if score.kind.startswith('(') else f'({score.kind})'}"


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;font-size:.9em}
th{background:#f0f0f0}img{max-width:100%;display:block;margin:.6em 0}h2{border-bottom:1px solid #ddd}"""


def write_report(out_dir: Path, pool: Path, recipes: list[RecipeRun], title: str = "datacurate run",
                 extra_html: str = "") -> Path:
    """Write ``out_dir/report.html`` and ``out_dir/report/*.png``; returns the page's path."""
    out_dir = Path(out_dir)
    img_dir = report_dir(out_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    sections = [pool_section(pool, img_dir), funnel_section(recipes, img_dir), score_section(pool, img_dir)]
    chosen = [r for r in recipes if r.name != "no_filter"][:1] or recipes[:1]
    sections += [examples_section(pool, r, img_dir) for r in chosen]
    sections += [results_section(recipes, img_dir), extra_html]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{_esc(title)}</h1>"
            + "\n".join(s for s in sections if s) + "</body></html>")
    path = report_html(out_dir)
    write_text_atomic(path, page)
    return path
