"""Plain-text tables: the task registry (``eval --list``) and a run's scores with chance levels."""
from __future__ import annotations

from datacurate.errors import UserError

from .data import missing_reason
from .tasks import CLASSIFICATION, Task, task_dir


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _classes(task: Task, data_root) -> str:
    """The registry's class count, else the class names the task keeps (task.yaml, classnames.txt)."""
    if task.num_classes:
        return str(task.num_classes)
    if task.type == CLASSIFICATION:
        from .classnames import classnames_for

        try:
            return str(len(classnames_for(task, task_dir(task, data_root))[0]))
        except UserError:
            pass
    return "-"


def registry_table(tasks: list[Task], data_root=None) -> str:
    rows = []
    for t in tasks:
        why = missing_reason(t, data_root)
        data = "present" if why is None else ("no loader" if t.type == "unsupported" else "missing")
        rows.append([t.key, t.name, t.type, t.main_metric or "- (unscored)",
                     _classes(t, data_root), t.hf_repo or (t.path or "-"), data])
    return _table(["key", "dataset", "type", "main metric", "classes", "source", "data"], rows)


def _f(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def scores_table(scores: dict) -> str:
    """Each task's main metric beside its chance level, then the aggregates and what is missing."""
    rows = [[name, scores.get("main_metric", {}).get(name, ""), _f(v), _f(scores["chance"].get(name)),
             f"{v / scores['chance'][name]:.1f}x" if scores["chance"].get(name) else "-"]
            for name, v in scores["tasks"].items()]
    out = [f"suite {scores['suite']}  (checkpoint sha256 {scores['checkpoint_sha256'][:12]}…)",
           _table(["dataset", "metric", "score", "chance", "vs chance"], rows), ""]
    out.append(_table(["aggregate", "score"], [[k, _f(v)] for k, v in scores["aggregates"].items()]))
    if scores.get("missing"):
        out += ["", f"MISSING ({len(scores['missing'])} task(s), excluded from the aggregates):"]
        out += [f"  {k}: {why}" for k, why in scores["missing"].items()]
    return "\n".join(out)
