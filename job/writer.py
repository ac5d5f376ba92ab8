"""Entry point of the writer job: `flink run -py job/writer.py [options]`.

Pure Flink SQL (`sql/writer.sql`): no Python runs per record, this script only renders the
statements and submits them. Rows are upserts by transaction (in PostgreSQL, by precedence:
final over open, most amended over less), so the job is safe to replay.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyflink.table import EnvironmentSettings, TableEnvironment  # noqa: E402

from job.config import WriterConfig, parse_args  # noqa: E402
from job.sql import render, render_options, with_client_properties  # noqa: E402


def source_options(config: WriterConfig) -> dict[str, str]:
    options = {
        "connector": "kafka",
        "topic": f"{config.aggregated_topic};{config.expired_topic};{config.progress_topic}",
        "properties.bootstrap.servers": config.bootstrap_servers,
        "properties.group.id": config.group_id,
        "properties.isolation.level": "read_committed",
        "properties.auto.offset.reset": "earliest",
        "scan.startup.mode": "earliest-offset" if config.from_beginning else "group-offsets",
        "value.format": "raw",
    }
    return with_client_properties(options, config.kafka_client_properties())


def sink_options(config: WriterConfig) -> dict[str, str]:
    separator = "&" if "?" in config.database_url else "?"
    # stringtype=unspecified lets PostgreSQL cast the JSON strings into JSONB columns.
    url = f"{config.database_url}{separator}stringtype=unspecified"
    options = {
        "connector": "jdbc",
        "url": url,
        "table-name": "transaction_records",  # a view: sql/migrations/003
        "sink.buffer-flush.max-rows": "500",
        "sink.buffer-flush.interval": "1s",
        "sink.max-retries": "5",
    }
    password = os.environ.get(config.database_password_env)
    if password:  # the connector takes a user and a password together, or neither
        options.update(username=config.database_user, password=password)
    else:
        options["url"] = f"{url}&user={config.database_user}"
    return options


def statements(config: WriterConfig) -> list[str]:
    text = render(
        "writer.sql",
        source_options=render_options(source_options(config)),
        sink_options=render_options(sink_options(config)),
    )
    # Statements end with ";" at the end of a line; ";" inside values (topic lists) stays.
    return [s.strip() for s in re.split(r";\s*$", text, flags=re.MULTILINE) if _has_sql(s)]


def _has_sql(chunk: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines())


def run(config: WriterConfig) -> None:
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    settings = t_env.get_config()
    settings.set("pipeline.name", config.job_name)
    if config.jars:
        settings.set("pipeline.jars", ";".join(f"file://{j}" for j in config.jars))
    if config.parallelism:
        settings.set("parallelism.default", str(config.parallelism))
    *tables, insert = statements(config)
    for ddl in tables:
        t_env.execute_sql(ddl)
    t_env.execute_sql(insert)


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv, WriterConfig)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.info("txn-correlator writer configuration: %s", config)
    run(config)


if __name__ == "__main__":
    main()
