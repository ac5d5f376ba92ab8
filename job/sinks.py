"""The output: one exactly-once Kafka sink for every result topic.

Declared in Flink SQL (`sql/output_records.sql`) because the SQL connector writes a key and
a topic per row from plain columns, which the Python DataStream sink cannot do without an
extra Python operator in the chain.
"""

from __future__ import annotations

from pyflink.common import Types
from pyflink.datastream import DataStream
from pyflink.table import StreamTableEnvironment

from job.config import EXACTLY_ONCE, JobConfig
from job.sql import render, render_options, with_client_properties

# How long the producer waits to fill a batch, as Kafka property names, beside Kafka's
# default. Measured together with the source's fetches (job/sources.py SOURCE_FETCH): fewer,
# fuller requests under a trickle of input.
SINK_BATCHING = {"linger.ms": 10}
KAFKA_DEFAULT_LINGER = {"linger.ms": 5}

# Every Python operator emits rows of this shape; the sink routes them by `topic`.
OUTPUT_TYPE = Types.ROW_NAMED(["topic", "k", "v"], [Types.STRING(), Types.STRING(), Types.STRING()])


def sink_options(config: JobConfig) -> dict[str, str]:
    options = {
        "connector": "kafka",
        "topic": ";".join(config.sink_topics),
        "properties.bootstrap.servers": config.bootstrap_servers,
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
        "sink.delivery-guarantee": config.delivery_guarantee,
    }
    if config.delivery_guarantee == EXACTLY_ONCE:
        options["sink.transactional-id-prefix"] = config.transactional_id_prefix
        options["properties.transaction.timeout.ms"] = str(config.kafka_transaction_timeout_ms)
    return with_client_properties(options, SINK_BATCHING, config.kafka_client_properties())


def write_output_records(t_env: StreamTableEnvironment, rows: DataStream, config: JobConfig):
    """Adds the sink to a statement set; the caller attaches it to the job."""
    ddl = render("output_records.sql", options=render_options(sink_options(config)))
    t_env.execute_sql(ddl)
    statements = t_env.create_statement_set()
    statements.add_insert("output_records", t_env.from_data_stream(rows))
    return statements
