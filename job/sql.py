"""Reads the SQL files in `sql/` and renders connector options into a WITH clause."""

from __future__ import annotations

import re
from collections.abc import Mapping

from sql import FILES


def sql_text(name: str) -> str:
    """A file of the `sql` package (the repository's sql/, or the installed package's)."""
    return (FILES / name).read_text()


def render(name: str, **values: str) -> str:
    """The SQL file with each `${key}` replaced; other `$` (JSON paths) stay as they are."""
    text = sql_text(name)
    for key, value in values.items():
        placeholder = "${" + key + "}"
        if placeholder not in text:
            raise KeyError(f"{name} has no {placeholder}")
        text = text.replace(placeholder, value)
    return text


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def render_options(options: dict[str, str]) -> str:
    return ",\n".join(f"  {_quote(k)} = {_quote(str(v))}" for k, v in options.items())


# flink-sql-connector-kafka carries the Kafka client relocated under this package, so a
# class a client setting names (a SASL login module, a callback handler) must be named there.
SHADED = "org.apache.flink.kafka.shaded."
_CLASS_SETTINGS = ("sasl.jaas.config", "sasl.login.callback.handler.class",
                   "sasl.client.callback.handler.class", "sasl.login.class")  # fmt: skip


def with_client_properties(
    options: dict[str, str], *layers: Mapping[str, object]
) -> dict[str, str]:
    """Connector options plus Kafka client properties (SASL, TLS, fetch sizes, ...) as
    `properties.*`; a later layer wins, so the user's client file overrides the job's own
    settings (job/sources.py SOURCE_FETCH, job/sinks.py SINK_BATCHING). Kafka's own classes
    named in SASL settings are renamed to the connector's relocated ones: the same file then
    serves Kafka's tools and the job."""
    merged = {k: str(v) for layer in layers for k, v in layer.items()}
    for key in _CLASS_SETTINGS:
        if key in merged:
            merged[key] = shaded(merged[key])
    return {**options, **{f"properties.{k}": v for k, v in merged.items()}}


def shaded(value: str) -> str:
    """Kafka's class names in a setting, as the SQL connector's jar relocates them."""
    return re.sub(r"(?<![\w.])org\.apache\.kafka\.", SHADED + "org.apache.kafka.", value)
