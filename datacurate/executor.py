"""The one shard executor: a function mapped over a stage's tasks (shards), here or on Spark.

Every stage that works shard by shard (the filters' passes, embedding, reshard) hands its
per-shard function and its tasks to an executor and gets the results back in task order:

* ``LocalExecutor``: one task after the other in this process;
* ``SparkExecutor``: one Spark task per task (one partition each, no shuffle), the function
  and its arguments sent with the closure, each result pickled back to the driver. The
  executors read and write the pool where the driver names it, so on a cluster the pool sits
  on storage they all see.

Both show one progress bar (tqdm, on stderr): the local one counts the tasks' weights (rows,
say) as they finish; the Spark one follows Spark's finished tasks through its status tracker.
The download is the exception: img2dataset's own pyspark distributor runs it
(datacurate.pool.download), as upstream runs it.
"""
from __future__ import annotations

import sys
import threading
import uuid
from typing import Callable, Sequence


class LocalExecutor:
    name = "local"

    def __init__(self, progress: bool = True):
        self.progress = progress

    def map(self, fn: Callable, tasks: Sequence, desc: str, weights: Sequence[int] | None = None,
            unit: str = "shard") -> list:
        """``[fn(t) for t in tasks]`` with a progress bar over ``weights`` (default: 1 a task)."""
        from tqdm import tqdm

        weights = list(weights) if weights is not None else [1] * len(tasks)
        out = []
        with tqdm(total=sum(weights), desc=desc, unit=unit, disable=not self.progress, file=sys.stderr,
                  leave=False, dynamic_ncols=True) as bar:
            for t, w in zip(tasks, weights):
                out.append(fn(t))
                bar.update(w)
        return out


class SparkExecutor:
    name = "spark"

    def __init__(self, spark=None, master: str | None = None, progress: bool = True):
        if spark is None:
            from .spark import get_spark

            spark = get_spark(master)
        self.spark = spark
        self.progress = progress

    def map(self, fn: Callable, tasks: Sequence, desc: str, weights: Sequence[int] | None = None,
            unit: str = "shard") -> list:
        """``[fn(t) for t in tasks]``, one Spark task each; the bar counts finished Spark tasks."""
        tasks = list(tasks)
        if not tasks:
            return []
        sc = self.spark.sparkContext
        rdd = sc.parallelize(list(enumerate(tasks)), len(tasks)).map(lambda it: (it[0], fn(it[1])))
        got = dict(self._collect(rdd, len(tasks), f"{desc} (spark)"))
        missing = [i for i in range(len(tasks)) if i not in got]
        if missing:
            raise RuntimeError(f"Spark returned no result for task(s) {missing[:5]} of {desc}")
        return [got[i] for i in range(len(tasks))]

    def _collect(self, rdd, n: int, desc: str) -> list:
        """collect() in a thread while a tqdm bar follows the job's finished tasks."""
        from tqdm import tqdm

        sc = self.spark.sparkContext
        group = f"datacurate-{uuid.uuid4().hex[:8]}"
        box: dict = {}

        def work():
            sc.setJobGroup(group, desc)
            try:
                box["rows"] = rdd.collect()
            except BaseException as e:  # re-raised in the caller's thread
                box["error"] = e

        th = threading.Thread(target=work, daemon=True, name="datacurate-spark-collect")
        th.start()
        tracker = sc.statusTracker()
        with tqdm(total=n, desc=desc, unit="task", disable=not self.progress, file=sys.stderr,
                  dynamic_ncols=True) as bar:
            while th.is_alive():
                th.join(0.5)
                done = 0
                for job in tracker.getJobIdsForGroup(group):
                    info = tracker.getJobInfo(job)
                    for st in (info.stageIds if info else []):
                        si = tracker.getStageInfo(st)
                        if si is not None and si.numTasks == n:
                            done = max(done, si.numCompletedTasks)
                bar.update(max(0, done - bar.n))
            bar.update(n - bar.n if "rows" in box else 0)
        if "error" in box:
            raise box["error"]
        return box["rows"]

