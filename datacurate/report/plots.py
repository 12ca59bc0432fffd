"""The run report's pictures: matplotlib (Agg) figures written as PNG files beside the page.

Each function takes plain data (lists, dicts, arrays) and a path, so the report
can be rebuilt from the files a run leaves without re-running anything.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from ..atomic import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings():
            # captions in scripts the bundled font lacks (the pool's foreign-language ones) are drawn as
            # boxes; matplotlib's warning per missing glyph would bury the run's own output
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        _plt().close(fig)
    return path


def bar_counts(counts: dict[str, int], title: str, path: Path, xlabel: str = "samples") -> Path:
    """Horizontal bars, one per key (download failures by reason, defects in the pool)."""
    plt = _plt()
    items = sorted(counts.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6.4, 0.35 * max(3, len(items)) + 1))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#4c72b0")
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:,}", va="center", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _save(fig, path)


def funnel(recipes: dict[str, list[tuple[str, int]]], path: Path) -> Path:
    """Samples kept after each step, one line of markers per recipe."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name, steps in recipes.items():
        ax.plot(range(len(steps)), [n for _, n in steps], marker="o", label=name)
        for i, (step, n) in enumerate(steps):
            ax.annotate(step, (i, n), textcoords="offset points", xytext=(3, 4), fontsize=7)
    ax.set_xlabel("step")
    ax.set_ylabel("samples kept")
    ax.set_title("filter funnel")
    ax.legend(fontsize=8)
    return _save(fig, path)


def score_histogram(scores_by_group: dict[str, np.ndarray], threshold: float | None, title: str,
                    path: Path) -> Path:
    """Overlaid histograms of a score per ground-truth group, with the chosen cut as a line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    finite = [np.asarray(v, dtype=float) for v in scores_by_group.values() if len(v)]
    allv = np.concatenate(finite) if finite else np.zeros(1)
    bins = np.linspace(float(np.nanmin(allv)), float(np.nanmax(allv)) + 1e-6, 50)
    for name, v in scores_by_group.items():
        if len(v):
            ax.hist(np.asarray(v, dtype=float), bins=bins, histtype="step", linewidth=1.6,
                    label=f"{name} ({len(v):,})", density=True)
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle="--", label=f"cut {threshold:.3f}")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def training_curves(runs: dict[str, list[dict]], path: Path) -> Path:
    """Loss and learning rate against samples seen, one line per recipe."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, rows in runs.items():
        if not rows:
            continue
        x = [r["samples_seen"] for r in rows]
        a1.plot(x, [r["loss"] for r in rows], label=name)
        a2.plot(x, [r["lr"] for r in rows], label=name)
    a1.set_xlabel("samples seen")
    a1.set_ylabel("contrastive loss")
    a1.set_title("training loss")
    a2.set_xlabel("samples seen")
    a2.set_ylabel("learning rate")
    a2.set_title("learning rate")
    a1.legend(fontsize=8)
    return _save(fig, path)


def recipe_comparison(rows: list[dict], metric: str, path: Path) -> Path:
    """Subset size against a score, one labelled point per recipe (with error bars when given)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for r in rows:
        y, err = r.get(metric), r.get(metric + "_std")
        if y is None:
            continue
        ax.errorbar(r["size"], y, yerr=err if err else None, fmt="o", capsize=3)
        ax.annotate(r["recipe"], (r["size"], y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("subset size (samples)")
    ax.set_ylabel(metric)
    ax.set_title(f"dataset size against {metric}")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def study_scatter(rows: list[dict], metric: str, path: Path, refs: tuple = ("no_filter", "random_30")) -> Path:
    """The baseline study: subset size (log) against the mean score with sample-std error bars,
    one labelled point per recipe; the references a filter must beat drawn in grey with their
    seed band across the plot, so a point outside the band is one that stands out of the noise."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    pts = [r for r in rows if r.get(metric) is not None and r.get("size")]
    for i, ref in enumerate(r for r in pts if r["recipe"] in refs):
        y, err = ref[metric], ref.get(metric + "_std") or 0.0
        ax.axhspan(y - err, y + err, color=("0.85", "#f3d9c8")[i % 2], alpha=0.6, zorder=0,
                   label=f"{ref['recipe']} ± sample std")
    for r in pts:
        ref = r["recipe"] in refs
        ax.errorbar(r["size"], r[metric], yerr=r.get(metric + "_std") or None, fmt="s" if ref else "o",
                    color="0.35" if ref else "#4c72b0", capsize=3, zorder=3)
    if pts:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        # minor ticks labelled at 2 and 5 times a power of ten only (3..9 crowd each other)
        ax.xaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: f"{v:,.0f}" if v > 0 and round(v / 10 ** np.floor(np.log10(v))) in (2, 5) else ""))
        ax.tick_params(axis="x", which="both", labelsize=8)
        _labels(fig, ax, [(r["recipe"], r["size"], r[metric]) for r in pts])
    ax.set_xlabel("subset size (samples, log scale)")
    ax.set_ylabel(f"{metric} (mean ± sample std over seeds)")
    n = max((r.get("n", 0) for r in pts), default=0)
    ax.set_title(f"baseline study: subset size against {metric} ({n} seeds)")
    ax.grid(alpha=0.3)
    if any(r["recipe"] in refs for r in pts):
        ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def _labels(fig, ax, points: list[tuple[str, float, float]], fontsize: int = 7) -> None:
    """Label points without overlap: each label takes the first of a few offsets around its
    point whose box meets no label placed before (recipes of one size sit on top of each other)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed = []
    offsets = [(5, 3), (5, -11), (-5, 3), (-5, -11), (5, 14), (-5, 14), (5, -22), (-5, -22), (5, 25), (-5, 25)]
    for name, x, y in sorted(points, key=lambda p: -p[2]):
        for dx, dy in offsets:
            t = ax.annotate(name, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                            ha="left" if dx > 0 else "right", zorder=4)
            box = t.get_window_extent(renderer).expanded(1.02, 1.1)
            if not any(box.overlaps(b) for b in placed):
                break
            t.remove()
        else:
            t = ax.annotate(name, (x, y), textcoords="offset points", xytext=offsets[0], fontsize=fontsize,
                            zorder=4)
            box = t.get_window_extent(renderer)
        placed.append(box)


def fraction_sweep(points: list[tuple[float, float, float | None]], bands: dict[str, tuple[float, float | None]],
                   metric: str, path: Path) -> Path:
    """Keep fraction (x, %) against the mean score ± sample std: where the curve peaks is a finding,
    not an assumption. ``bands``: references (no filter, random) drawn as mean ± std strips."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = ["0.55", "#dd8452", "#55a868", "#c44e52"]
    for i, (name, (y, err)) in enumerate(bands.items()):
        c = colours[i % len(colours)]
        ax.axhline(y, color=c, linestyle="--", linewidth=1, label=f"{name} (mean ± sample std)")
        if err:
            ax.axhspan(y - err, y + err, color=c, alpha=0.15)
    if points:
        x = [100 * f for f, _, _ in points]
        y = [m for _, m, _ in points]
        e = [s or 0.0 for _, _, s in points]
        ax.errorbar(x, y, yerr=e, fmt="o-", color="#4c72b0", capsize=4, label="CLIP score, top x%")
        best = int(np.argmax(y))
        ax.annotate(f"best {x[best]:g}%", (x[best], y[best]), textcoords="offset points", xytext=(0, 10),
                    ha="center", fontsize=8)
        ax.set_xticks(x)
    ax.set_xlabel("CLIP-score keep fraction (% of the pool)")
    ax.set_ylabel(f"{metric} (mean ± sample std over seeds)")
    ax.set_title("CLIP-score keep fraction sweep (upstream's sweet spot: 30%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def tau_projections(studies: list[tuple[str, dict[int, tuple[float, float]]]], goal: float, path: Path) -> Path:
    """Each study's projected split-half tau for halves of 3 and of 6 seeds against the goal line, with the
    share of 3-against-3 draws at the goal: which lever gets near it, and what more seeds would do."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * max(4, len(studies)) + 1.2))
    y = np.arange(len(studies))[::-1]
    for yi, (name, halves) in zip(y, studies):
        if 6 in halves:
            ax.plot([halves[3][0], halves[6][0]], [yi, yi], color="0.75", linewidth=1, zorder=1)
            ax.scatter(halves[6][0], yi, marker="s", color="0.55", zorder=2, label="6 seeds a side" if yi == y[0] else None)
        ax.scatter(halves[3][0], yi, color="#4c72b0", zorder=3, label="3 seeds a side (the issue's split)" if yi == y[0] else None)
        ax.annotate(f"{halves[3][1]:.0%}", (halves[3][0], yi), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=7, color="#4c72b0")
    ax.axvline(goal, color="#c44e52", linestyle="--", linewidth=1, label=f"goal {goal:g}")
    ax.set_yticks(y)
    ax.set_yticklabels([name for name, _ in studies], fontsize=8)
    ax.set_xlabel("projected split-half Kendall tau (mean over draws; the % is the share of 3 v 3 draws at the goal)")
    ax.set_title("What each study's signal and noise give: projected split-half tau")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def image_grid(examples: list[tuple[bytes, str]], title: str, path: Path, cols: int = 6) -> Path:
    """A grid of images with their captions underneath (kept or rejected examples)."""
    from PIL import Image

    plt = _plt()
    n = max(1, len(examples))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.7, rows * 2.0))
    axes = np.atleast_1d(axes).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, (blob, caption) in zip(axes, examples):
        try:
            img = Image.open(io.BytesIO(blob)).convert("RGB")
            ax.imshow(img)
        except Exception:  # noqa: BLE001 - an undecodable example is shown as such
            ax.text(0.5, 0.5, "undecodable", ha="center", va="center")
        cap = caption if len(caption) <= 44 else caption[:41] + "..."
        ax.set_title("\n".join([cap[i:i + 22] for i in range(0, len(cap), 22)]), fontsize=6)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
