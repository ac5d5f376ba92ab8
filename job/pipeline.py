"""Wires source (keyed by transaction in SQL) -> correlate -> sink into one Flink job.

The correlator also receives the reference topic as a broadcast stream for enrichment. It is
the job's only Python operator: parsing, correlating, enriching and serializing happen in
one call per record.

Cluster-wide settings (state backend, checkpointing, execution mode, restart strategy) live
in `flink-conf/config.yaml`; only what the job's own options change is set here.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pyflink.common import Configuration
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.table import EnvironmentSettings, StreamTableEnvironment

from job.config import LOCAL_FLINK_CONF, JobConfig
from job.correlate import REFERENCE, Correlate
from job.sinks import OUTPUT_TYPE, write_output_records
from job.sources import keyed_input_records, reference_records


def local_settings() -> dict[str, str]:
    """The settings of `$TXN_LOCAL_FLINK_CONF/config.yaml` as Flink's flat keys, or none.

    A local run (`python job/main.py`: a minicluster in this process, as `stack recompute`
    runs the job) reads no flink-conf/: Flink applies a configuration file only for `flink
    run` and the cluster's processes. Measured: without it the recompute ran in process mode,
    at parallelism 2 (the cores) and with no checkpoint, so every output waited for the end.
    `stack.flink.local_environment()` names the folder."""
    folder = os.environ.get(LOCAL_FLINK_CONF)
    if not folder:
        return {}
    tree = yaml.safe_load((Path(folder) / "config.yaml").read_text()) or {}
    return {k: v for k, v in flat_settings(tree).items() if k.startswith(JOB_SETTINGS)}


# What a local run takes from the file: the job's own settings. The processes' (ports,
# memory, heartbeats) stay the minicluster's: the cluster's RPC port would clash.
JOB_SETTINGS = ("parallelism.", "pipeline.", "python.", "state.", "execution.", "restart-strategy.",
                "table.")  # fmt: skip


def flat_settings(tree: dict, prefix: str = "") -> dict[str, str]:
    """Flink's nested YAML as its flat keys (`{"a": {"b": 1}}` -> `{"a.b": "1"}`)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{name}."))
        elif isinstance(value, bool):
            flat[name] = str(value).lower()
        else:
            flat[name] = str(value)
    return flat


def environment(config: JobConfig) -> tuple[StreamExecutionEnvironment, StreamTableEnvironment]:
    settings = Configuration()
    for key, value in local_settings().items():
        settings.set_string(key, value)
    if config.jars:
        settings.set_string("pipeline.jars", ";".join(_as_url(j) for j in config.jars))
    env = StreamExecutionEnvironment.get_execution_environment(settings)
    if config.parallelism:
        env.set_parallelism(config.parallelism)
    if config.checkpoint_interval_s:
        env.enable_checkpointing(int(config.checkpoint_interval_s * 1000))
    t_env = StreamTableEnvironment.create(env, EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("table.exec.source.idle-timeout", f"{int(config.idleness_s * 1000)} ms")
    t_env.get_config().set("pipeline.name", config.job_name)
    # Instants turn into epoch milliseconds in SQL (sql/keyed_records.sql) in UTC.
    t_env.get_config().set("table.local-time-zone", "UTC")
    return env, t_env


def _as_url(path: str) -> str:
    return path if "://" in path else f"file://{path}"


def build(config: JobConfig) -> StreamExecutionEnvironment:
    """Builds the whole job graph on one environment; `env.execute()` runs it."""
    env, t_env = environment(config)
    records = keyed_input_records(t_env, config)
    reference = reference_records(t_env, config).broadcast(REFERENCE)
    outputs = (
        records.connect(reference)
        .process(Correlate(config), output_type=OUTPUT_TYPE)
        .name("correlate transactions")
        .uid("correlate-transactions")
    )
    # Attaching the SQL sink to the DataStream graph lets PyFlink's own execute() configure
    # the Python operators (chaining, executable, memory) for the whole job.
    write_output_records(t_env, outputs, config).attach_as_datastream()
    return env


def run(config: JobConfig) -> None:
    build(config).execute(config.job_name)
