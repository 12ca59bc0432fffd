"""One SparkSession factory: ``local[*]`` by default, any master by flag.

Sized for small machines (img2dataset would otherwise create its own session
with 16 GB of driver memory) and bound to loopback.
"""
from __future__ import annotations

import os

from .env import apply_offline_env


def get_spark(master: str | None = None, app_name: str = "datacurate",
              driver_memory: str | None = None, conf: dict | None = None):
    """Return the active SparkSession or build one for ``master``."""
    apply_offline_env()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    master = master or os.environ.get("DATACURATE_SPARK_MASTER", "local[*]")
    b = (SparkSession.builder.master(master).appName(app_name)
         .config("spark.driver.memory", driver_memory or os.environ.get("DATACURATE_SPARK_DRIVER_MEMORY", "2g"))
         .config("spark.ui.enabled", "false")
         .config("spark.ui.showConsoleProgress", "false")
         .config("spark.sql.execution.arrow.pyspark.enabled", "true")
         .config("spark.sql.shuffle.partitions", "8"))
    if master.startswith("local"):
        b = b.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    for k, v in (conf or {}).items():
        b = b.config(k, v)
    spark = b.getOrCreate()
    # a failed task reaches the driver as an exception, which the one error path words in one line;
    # the executors' own ERROR logs of it (Python tracebacks) are shown only with --debug
    spark.sparkContext.setLogLevel("ERROR" if os.environ.get("DATACURATE_DEBUG") == "1" else "FATAL")
    return spark


def stop_spark() -> None:
    from pyspark.sql import SparkSession

    s = SparkSession.getActiveSession()
    if s is not None:
        s.stop()
