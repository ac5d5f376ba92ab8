"""The ceiling of the design's shape: our job's SQL source, keying and sink around a Python
keyed process function that does (almost) nothing.

    --ceiling pass    each record is passed through: the price of one crossing into Python
                      per record, with the shuffle, the exactly-once sink and checkpoints
    --ceiling state   the same, plus what the design asks of every record: one `MapState`
                      put and one event-time timer (the timer clears the key's state)

Takes the correlator's options after `--ceiling` (`--help`) and writes one output per input
record, malformed ones included, to its aggregated topic. The output's Kafka timestamp is the
record's event time, as the SQL copy's is, so the benchmark measures latency the same way.
What our job loses against `pass` is its own Python work; against `state`, the correlation's
logic beyond the state and timers every design of this shape pays for.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `flink run -py` puts this file's folder on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pyflink.common import Row, Types  # noqa: E402
from pyflink.datastream import KeyedProcessFunction, RuntimeContext  # noqa: E402
from pyflink.datastream.state import MapStateDescriptor  # noqa: E402

from job.config import JobConfig, parse_args  # noqa: E402
from job.pipeline import environment  # noqa: E402
from job.sinks import sink_options  # noqa: E402
from job.sources import keyed_input_records  # noqa: E402
from job.sql import render, render_options  # noqa: E402

CEILINGS = ("pass", "state")
# The job's output row (job.sinks.OUTPUT_TYPE) and the record's event time for the timestamp.
TIMED_OUTPUT = Types.ROW_NAMED(
    ["topic", "k", "v", "event_ms"],
    [Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG()],
)
TIMESTAMPED = ",\n  `ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp'\n) WITH ("


class PassThrough(KeyedProcessFunction):
    """Each record out as it came in (its bytes as UTF-8 text, as the sink's STRING needs)."""

    def __init__(self, topic: str):
        self.topic = topic

    def process_element(self, row, ctx: KeyedProcessFunction.Context):
        # (key, payload, topic, partition, offset, event time): job.sources.KEYED_RECORD
        yield Row(self.topic, row[0], bytes(row[1] or b"").decode("utf-8", "replace"), row[5])


class WithStateAndTimer(PassThrough):
    """Plus one MapState put (the part, as the correlator stores one) and one event-time
    timer per record; the timer forgets the key's parts, so state stays as small as ours."""

    def __init__(self, topic: str, timeout_ms: int):
        super().__init__(topic)
        self.timeout_ms = timeout_ms

    def open(self, runtime_context: RuntimeContext):
        self.parts = runtime_context.get_map_state(
            MapStateDescriptor("parts", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
        )

    def process_element(self, row, ctx: KeyedProcessFunction.Context):
        self.parts.put(row[2], (row[3], row[4], row[5], row[1]))
        ctx.timer_service().register_event_time_timer(row[5] + self.timeout_ms)
        yield from super().process_element(row, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        self.parts.clear()
        return iter(())


def function(ceiling: str, config: JobConfig) -> PassThrough:
    if ceiling == "pass":
        return PassThrough(config.aggregated_topic)
    return WithStateAndTimer(config.aggregated_topic, int(config.timeout_s * 1000))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["--ceiling"] or argv[1:2] == [] or argv[1] not in CEILINGS:
        choices = ",".join(CEILINGS)
        raise SystemExit(f"usage: python_ceiling.py --ceiling {{{choices}}} [job options]")
    ceiling, config = argv[1], parse_args(argv[2:])
    env, t_env = environment(config)
    t_env.get_config().set("pipeline.name", f"{config.job_name}-python-{ceiling}")
    rows = (
        keyed_input_records(t_env, config)
        .process(function(ceiling, config), output_type=TIMED_OUTPUT)
        .name(f"python {ceiling}")
        .uid(f"python-{ceiling}")
    )
    sink = render("output_records.sql", options=render_options(sink_options(config)))
    t_env.execute_sql(sink.replace("\n) WITH (", TIMESTAMPED, 1))
    t_env.create_temporary_view("outputs", t_env.from_data_stream(rows))
    statements = t_env.create_statement_set()
    statements.add_insert_sql(
        "INSERT INTO output_records "
        "SELECT `topic`, `k`, `v`, TO_TIMESTAMP_LTZ(`event_ms`, 3) FROM outputs"
    )
    statements.attach_as_datastream()
    env.execute(config.job_name)


if __name__ == "__main__":
    main()
