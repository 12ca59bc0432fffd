"""The Spark runner: the same per-shard functions as the local runner, one Spark task per shard.

A DataFrame of shard names is spread over the executors and ``mapInArrow`` runs the
engine's shard function on each (the filter objects travel inside the closure, with
any state fitted on the driver between passes); each task answers one row
``(shard, payload)`` with its results pickled. Executors read the pool from the same
path, so the pool must sit on storage they all see (a shared filesystem on a cluster).
"""
from __future__ import annotations

import pickle
import sys


class SparkExecutor:
    name = "spark"

    def __init__(self, spark=None, master: str | None = None, progress: bool = True):
        if spark is None:
            from datacurate.spark import get_spark

            spark = get_spark(master, app_name="datacurate-filter")
        self.spark = spark
        self.progress = progress

    def map_shards(self, fn, shards, desc: str) -> list:
        import pyarrow as pa

        by_name = {s.name: s for s in shards}
        schema = "shard string, payload binary"

        def run(batches):
            for rb in batches:
                for name in rb.column(0).to_pylist():
                    res = fn(by_name[name])
                    yield pa.RecordBatch.from_arrays(
                        [pa.array([name], pa.string()), pa.array([pickle.dumps(res, protocol=5)], pa.binary())],
                        names=["shard", "payload"])

        parts = max(1, min(len(shards), self.spark.sparkContext.defaultParallelism * 4))
        df = (self.spark.createDataFrame([(s.name,) for s in shards], "shard string")
              .repartition(parts, "shard").mapInArrow(run, schema))
        if self.progress:
            print(f"{desc}: {len(shards)} shards on Spark ({self.spark.sparkContext.master})", file=sys.stderr)
        table = df.toArrow()
        got = {n: pickle.loads(p) for n, p in zip(table.column("shard").to_pylist(),
                                                     table.column("payload").to_pylist())}
        missing = [s.name for s in shards if s.name not in got]
        if missing:
            raise RuntimeError(f"Spark returned no result for shard(s) {missing[:5]}")
        return [got[s.name] for s in shards]
