"""The engine's ceiling: a Flink SQL job with no Python that copies every input record to
one output topic, with the same Kafka source, exactly-once sink and checkpoints as the
correlator. What the correlator loses against this is the price of its Python operators.

Takes the correlator's options (`--help`); writes to its aggregated topic, keeping each
record's Kafka timestamp so the benchmark can measure latency per record.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `flink run -py` puts this file's folder on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pyflink.table import EnvironmentSettings, TableEnvironment  # noqa: E402

from job.config import parse_args  # noqa: E402
from job.sinks import sink_options  # noqa: E402
from job.sources import declare_input_records  # noqa: E402
from job.sql import render_options  # noqa: E402

COPY_SINK = """CREATE TEMPORARY TABLE copied (
  `v`  BYTES,
  `ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp'
) WITH (
{options}
)"""


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("pipeline.name", f"{config.job_name}-sql-copy")
    if config.parallelism:
        t_env.get_config().set("parallelism.default", str(config.parallelism))
    if config.checkpoint_interval_s:
        t_env.get_config().set(
            "execution.checkpointing.interval", f"{int(config.checkpoint_interval_s * 1000)} ms"
        )
    declare_input_records(t_env, config)
    sink = {**sink_options(config), "topic": config.aggregated_topic}
    for key in ("key.format", "key.fields", "value.fields-include"):
        sink.pop(key)
    t_env.execute_sql(COPY_SINK.format(options=render_options(sink)))
    t_env.execute_sql("INSERT INTO copied SELECT payload, kafka_time FROM input_records")


if __name__ == "__main__":
    main()
