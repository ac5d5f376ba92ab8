"""Every setting of the correlator job, typed, with defaults that run the local demo.

One dataclass holds them; `--help` is generated from the same table, so an option cannot
exist in one place and be missing from the other.
"""

import argparse
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit, urlunsplit

import javaproperties

from job.rules import SINCE_FIRST, TIMEOUT_MODES, RuleSet, default_rules, read_rules

DEFAULT_TYPES = ("TypeA", "TypeB", "TypeC", "TypeD", "TypeE")
EXACTLY_ONCE, AT_LEAST_ONCE = "exactly-once", "at-least-once"
ROUTE, AMEND = "route", "amend"
LATE_POLICIES = (ROUTE, AMEND)
DEFAULT_PARTITIONS = 3  # of each input and output topic, where the job's tools create them
# Kafka refuses records over 1 MiB by default (producer max.request.size 1,048,576, broker
# message.max.bytes 1,048,588), key, value and about 100 bytes of framing together.
MAX_OUTPUT_BYTES = 1_000_000
# An output without its copies of input (job/sizes.py) is a few hundred bytes per type.
MIN_OUTPUT_BYTES = 65_536


# The environment variable naming the flink-conf/ folder a local minicluster run applies
# (`job.pipeline.local_settings`); `stack.flink.local_environment()` sets it.
LOCAL_FLINK_CONF = "TXN_LOCAL_FLINK_CONF"


@dataclass(frozen=True)
class TopicSpec:
    """One topic the job reads or writes, as every tool and deployment file must create it."""

    name: str
    partitions: int
    configs: tuple[tuple[str, str], ...] = ()

    def compose_arg(self) -> str:
        """`name:partitions[:key=value,...]`, the form docker-compose.yml's topic list uses."""
        configs = ",".join(f"{k}={v}" for k, v in self.configs)
        return f"{self.name}:{self.partitions}" + (f":{configs}" if configs else "")


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class JobConfig:
    PROG: ClassVar[str] = "job"
    DESCRIPTION: ClassVar[str] = (
        "Correlates per-type Kafka records into one aggregate per transaction."
    )

    bootstrap_servers: str = field(
        default="127.0.0.1:9092", metadata={"help": "Kafka bootstrap servers"}
    )
    types: tuple[str, ...] = field(
        default=DEFAULT_TYPES,
        metadata={"help": "record types a complete transaction has, comma-separated"},
    )
    topic_prefix: str = field(
        default="Events-",
        metadata={"help": "input topic of a type = prefix + type (Events-TypeA, ...)"},
    )
    aggregated_topic: str = field(
        default="Events_Aggregated", metadata={"help": "topic for complete transactions"}
    )
    expired_topic: str = field(
        default="Events_Expired", metadata={"help": "topic for partial, timed-out transactions"}
    )
    dead_letter_topic: str = field(
        default="Events_DeadLetter", metadata={"help": "topic for malformed and duplicate records"}
    )
    late_topic: str = field(
        default="Events_Late",
        metadata={"help": "topic for records of transactions already emitted"},
    )
    progress_topic: str = field(
        default="Events_Progress",
        metadata={
            "help": "compacted topic of open transactions' progress (--progress-interval-s); "
            "a transaction's record is deleted (a tombstone) when it closes"
        },
    )
    progress_interval_s: float = field(
        default=0.0,
        metadata={
            "help": "report an open transaction on the progress topic once event time passed "
            "its first part + this, and again at most this often (event time) while new parts "
            "arrive (the checkpoint interval is a good value; 0: no progress records)"
        },
    )
    reference_topic: str = field(
        default="Reference-Services",
        metadata={"help": "compacted topic of reference data per type (key: the type)"},
    )
    enrich_hook: str = field(
        default="",
        metadata={"help": "optional package.module:function adding fields to each aggregate"},
    )
    timeout_s: float = field(
        default=120.0,
        metadata={"help": "seconds after a transaction's first record before it expires"},
    )
    out_of_orderness_s: float = field(
        default=5.0, metadata={"help": "bounded out-of-orderness of event time, seconds"}
    )
    idleness_s: float = field(
        default=30.0, metadata={"help": "a partition silent this long stops holding back time"}
    )
    expiry_grace_s: float = field(
        default=10.0,
        metadata={
            "help": "processing-time fallback: a partial also expires this long after "
            "timeout in wall-clock time, so expiry happens when every producer is quiet"
        },
    )
    closed_retention_s: float = field(
        default=600.0,
        metadata={"help": "how long a closed transaction is remembered to catch late records"},
    )
    timeout_mode: str = field(
        default=SINCE_FIRST,
        metadata={
            "help": "since-first: a partial expires timeout after its first part; since-last: "
            "after timeout without a new part (capped by --max-duration-s)",
            "choices": TIMEOUT_MODES,
        },
    )
    max_duration_s: float = field(
        default=0.0,
        metadata={"help": "since-last: expire at most this long after the first part (0: no cap)"},
    )
    rules_file: str = field(
        default="",
        metadata={
            "help": "YAML file of completeness rules per transaction kind (docs/concepts.md, "
            "'Rules per kind'); empty: every type is required, with the timeout options above"
        },
    )
    kind_field: str = field(
        default="kind",
        metadata={"help": "field of a record's value that names its transaction's kind"},
    )
    late_policy: str = field(
        default=ROUTE,
        metadata={
            "help": "route: a part of a closed transaction goes to the late topic; amend: a part "
            "for an expired partial, within the closed retention, emits the partial amended",
            "choices": LATE_POLICIES,
        },
    )
    max_record_bytes: int = field(
        default=1_000_000, metadata={"help": "larger input records go to the dead-letter topic"}
    )
    max_output_bytes: int = field(
        default=MAX_OUTPUT_BYTES,
        metadata={
            "help": "largest output record (key and value) the job writes: at most the "
            "producer's max.request.size and the output topics' max.message.bytes (Kafka's "
            "defaults: 1 MiB). A larger output leaves out its copies of input (an aggregate "
            "its parts, a dead letter or late record its record) and names where they are "
            f"(at least {MIN_OUTPUT_BYTES:,})"
        },
    )
    timestamp_field: str = field(
        default="",
        metadata={"help": "optional epoch-millis field of the value used as event time"},
    )
    parallelism: int = field(default=0, metadata={"help": "job parallelism (0: cluster default)"})
    checkpoint_interval_s: float = field(
        default=0.0, metadata={"help": "checkpoint interval (0: flink-conf/config.yaml's)"}
    )
    group_id: str = field(default="txn-correlator", metadata={"help": "Kafka consumer group"})
    transactional_id_prefix: str = field(
        default="txn-correlator", metadata={"help": "prefix of the sink's Kafka transactional ids"}
    )
    delivery_guarantee: str = field(
        default=EXACTLY_ONCE,
        metadata={
            "help": "exactly-once: output is visible to read_committed consumers when the "
            "checkpoint that covers it completes, once each; at-least-once: visible at once, "
            "and after a failure a consumer may see again what was emitted since the last "
            "checkpoint (the PostgreSQL writer's upsert makes that harmless)",
            "choices": (EXACTLY_ONCE, AT_LEAST_ONCE),
        },
    )
    kafka_transaction_timeout_ms: int = field(
        default=600_000,
        metadata={
            "help": "the sink's Kafka transaction timeout; at most the broker's maximum (15 min)",
            "aliases": ("--transaction-timeout-ms",),  # its name before 2026-12
        },
    )
    kafka_properties: str = field(
        default="",
        metadata={"help": "properties file passed to every Kafka client (SASL, TLS, ...)"},
    )
    bounded: bool = field(
        default=False,
        metadata={"help": "stop at the topics' current end (tests and replays)"},
    )
    read_from_ms: int = field(
        default=0,
        metadata={
            "help": "read the type topics from this record timestamp, epoch ms, instead of "
            "the group's offsets (0: the group's; `stack recompute` sets it)"
        },
    )
    read_until_ms: int = field(
        default=0,
        metadata={
            "help": "stop at this record timestamp, epoch ms, and end the job (0: run on; "
            "`stack recompute` sets it)"
        },
    )
    job_name: str = field(default="txn-correlator", metadata={"help": "Flink job name"})
    jars: tuple[str, ...] = field(
        default=(), metadata={"help": "connector jars for the pipeline, comma-separated"}
    )

    @property
    def input_topics(self) -> list[str]:
        return [self.topic_of(t) for t in self.types]

    @property
    def output_topics(self) -> list[str]:
        """The topics of the job's results (JSON records, no tombstones)."""
        return [self.aggregated_topic, self.expired_topic, self.dead_letter_topic, self.late_topic]

    @property
    def sink_topics(self) -> list[str]:
        """Every topic the job writes: the results and the progress topic."""
        return [*self.output_topics, self.progress_topic]

    def topics(self, partitions: int = DEFAULT_PARTITIONS) -> list[TopicSpec]:
        """Every topic of the job: inputs, outputs, the progress topic (compacted: the
        latest record of each open transaction) and the reference topic (one partition keeps
        updates in order; compaction keeps the latest per type). `stack`, the tests,
        docker-compose.yml and the Kubernetes manifests all follow this list."""
        compacted = (("cleanup.policy", "compact"),)
        return [
            *(TopicSpec(t, partitions) for t in [*self.input_topics, *self.output_topics]),
            TopicSpec(self.progress_topic, partitions, compacted),
            TopicSpec(self.reference_topic, 1, compacted),
        ]

    def tagged(self, tag: str, **overrides) -> "JobConfig":
        """The same job on topics, a consumer group and transactional ids of its own, all
        named after `tag`: tests and benchmark runs never see each other's records."""
        return replace(
            self,
            topic_prefix=f"{tag}-{self.topic_prefix}",
            reference_topic=f"{tag}-{self.reference_topic}",
            **self.writing_as(tag),
            **overrides,
        )

    def writing_as(self, tag: str) -> dict[str, str]:
        """The fields that name what the job writes (its sink topics, consumer group and
        transactional ids), named after `tag`: `replace(config, **config.writing_as(tag))`
        is the same job with outputs of its own (`stack recompute`)."""
        sinks = ("aggregated_topic", "expired_topic", "dead_letter_topic", "late_topic",
                 "progress_topic")  # fmt: skip
        return {
            **{name: f"{tag}-{getattr(self, name)}" for name in sinks},
            "group_id": tag,
            "transactional_id_prefix": tag,
        }

    def option_rules(self) -> RuleSet:
        """The rules the options alone give: every type, the timeout options."""
        return default_rules(self.types, self.timeout_s, self.timeout_mode, self.max_duration_s)

    def rules(self) -> RuleSet:
        """The rules at start: the rules file over the options, or the options alone.
        Raises `job.rules.RulesError` for a file that cannot be used."""
        base = self.option_rules()
        return read_rules(Path(self.rules_file), base, self.types) if self.rules_file else base

    def topic_of(self, record_type: str) -> str:
        """The input topic of a record type (`type_of` is the way back)."""
        return self.topic_prefix + record_type

    def type_of(self, topic: str) -> str | None:
        """The record type a topic carries, or None for a topic that is no configured type."""
        if topic.startswith(self.topic_prefix) and topic[len(self.topic_prefix) :] in self.types:
            return topic[len(self.topic_prefix) :]
        return None

    def to_args(self) -> list[str]:
        return to_args(self)

    def describe(self) -> dict:
        """The effective settings for the start-up log, with secrets masked (a password in a
        URL, the secret values of the Kafka client settings)."""
        settings = {f.name: _masked(getattr(self, f.name)) for f in fields(self)}
        settings["kafka_client_properties"] = {
            k: "***" if _secret(k) else v for k, v in self.kafka_client_properties().items()
        }
        return settings

    def kafka_client_properties(self) -> dict[str, str]:
        if not self.kafka_properties:
            return {}
        return read_properties(Path(self.kafka_properties))


def _as_in_job(name: str):
    """A writer option that is the correlator's option of the same name: one default and
    one help text for both jobs."""
    option = JobConfig.__dataclass_fields__[name]
    return field(default=option.default, metadata=dict(option.metadata))


@dataclass(frozen=True)
class WriterConfig:
    """The writer job: committed output topics -> PostgreSQL (upsert by transaction)."""

    PROG: ClassVar[str] = "writer"
    DESCRIPTION: ClassVar[str] = "Stores every emitted transaction in PostgreSQL, one row each."

    bootstrap_servers: str = _as_in_job("bootstrap_servers")
    aggregated_topic: str = _as_in_job("aggregated_topic")
    expired_topic: str = _as_in_job("expired_topic")
    progress_topic: str = _as_in_job("progress_topic")
    database_url: str = field(
        default="postgresql://127.0.0.1:5432/txn_correlator",
        metadata={
            "help": "PostgreSQL database, as a libpq URL (jdbc:postgresql://... works too); "
            "no password here: see --database-password-env"
        },
    )
    database_user: str = field(
        default="postgres", metadata={"help": "database user, where --database-url names none"}
    )
    database_password_env: str = field(
        default="TXN_DB_PASSWORD",
        metadata={"help": "environment variable that holds the database password, if any"},
    )
    group_id: str = field(
        default="txn-correlator-writer", metadata={"help": "Kafka consumer group"}
    )
    from_beginning: bool = field(
        default=False,
        metadata={"help": "replay the output topics from the start instead of committed offsets"},
    )
    database_schema: str = field(
        default="public",
        metadata={"help": "PostgreSQL schema of the tables (`stack recompute --into` names one)"},
    )
    kafka_properties: str = _as_in_job("kafka_properties")
    parallelism: int = _as_in_job("parallelism")
    job_name: str = field(default="txn-correlator-writer", metadata={"help": "Flink job name"})
    jars: tuple[str, ...] = _as_in_job("jars")

    kafka_client_properties = JobConfig.kafka_client_properties
    describe = JobConfig.describe

    @classmethod
    def for_job(cls, job: JobConfig, **overrides) -> "WriterConfig":
        """The writer of a correlator's outputs: its topics, broker and client settings, and
        a consumer group and job name after the correlator's (with the default correlator,
        the writer's defaults)."""
        return cls(
            bootstrap_servers=job.bootstrap_servers,
            aggregated_topic=job.aggregated_topic,
            expired_topic=job.expired_topic,
            progress_topic=job.progress_topic,
            kafka_properties=job.kafka_properties,
            group_id=f"{job.group_id}-writer",
            job_name=f"{job.job_name}-writer",
            **overrides,
        )

    def to_args(self) -> list[str]:
        return to_args(self)


def redacted(url: str) -> str:
    """A URL with its password, if any, replaced by ***."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _masked(value):
    return redacted(value) if isinstance(value, str) and "://" in value else value


def _secret(key: str) -> bool:
    return any(
        word in key.lower() for word in ("password", "secret", "jaas", "token", "credential")
    )


def read_properties(path: Path) -> dict[str, str]:
    """A `.properties` file, read exactly as Java's `Properties.load(InputStream)` reads it.

    Java's rules, as the `javaproperties` package implements them: a line ending in an odd
    number of backslashes continues on the next, whose leading whitespace is dropped; the key
    ends at the first unescaped `=`, `:` or whitespace; `\\t`, `\\n`, `\\uXXXX`, `\\=`, ...
    are escapes; `#` and `!` start a comment only at the start of a line; the value keeps its
    trailing whitespace; a repeated key keeps its last value.

    The file is decoded as ISO-8859-1, not UTF-8: that is what `Properties.load(InputStream)`
    does, and how Kafka's own tools read a client config (`Utils.loadProps`, behind
    `--command-config`, `--consumer.config`, ...), so a file gives the Kafka clients of this
    job the same values as it gives those tools, byte for byte. A character outside Latin-1
    is written as a `\\uXXXX` escape (as `Properties.store` writes it); ASCII files, and so
    almost every real client config, read the same in either encoding.
    """
    with path.open(encoding="iso-8859-1") as fp:
        return javaproperties.load(fp)


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(cls: type = JobConfig) -> argparse.ArgumentParser:
    """An argparse parser with one option per field of a config dataclass."""
    parser = _Parser(
        prog=cls.PROG,
        description=cls.DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for f in fields(cls):
        kind = f.type
        names = (_option(f.name), *f.metadata.get("aliases", ()))
        if kind is bool:
            parser.add_argument(*names, action="store_true", help=f.metadata["help"])
            continue
        if kind == tuple[str, ...]:
            convert, default = _csv, ",".join(f.default)
        else:
            convert, default = kind, f.default
        parser.add_argument(
            *names,
            dest=f.name,
            type=convert,
            default=default,
            choices=f.metadata.get("choices"),
            help=f.metadata["help"],
        )
    return parser


class _Parser(argparse.ArgumentParser):
    """Errors as one line naming the option, and exit code 2 (argparse's own)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


# What each number may be; anything else is refused where the job is submitted, before Flink
# sees it. Durations must also stay within what Flink's timers hold (about 30 years here).
ABOVE_ZERO = {"timeout_s", "idleness_s", "max_record_bytes", "kafka_transaction_timeout_ms"}
ZERO_OR_MORE = {
    "progress_interval_s", "out_of_orderness_s", "expiry_grace_s", "closed_retention_s",
    "max_duration_s", "parallelism", "checkpoint_interval_s",
}  # fmt: skip
MAX_SECONDS = 1e9
FILES = {"kafka_properties", "rules_file"}


def problems(config) -> list[str]:
    """What is wrong with a configuration's values, one line each naming the option."""
    found = []
    for f in fields(config):
        value, option = getattr(config, f.name), _option(f.name)
        if f.name in ABOVE_ZERO | ZERO_OR_MORE:
            low_ok = value > 0 if f.name in ABOVE_ZERO else value >= 0
            if not (math.isfinite(value) and low_ok):
                bound = "above 0" if f.name in ABOVE_ZERO else "0 or more"
                found.append(f"{option} {value}: must be a finite number, {bound}")
            elif f.name.endswith("_s") and value > MAX_SECONDS:
                found.append(f"{option} {value}: at most {MAX_SECONDS:.0e} seconds")
        if f.name in FILES and value and not Path(value).is_file():
            found.append(f"{option} {value}: no such file")
    if isinstance(config, JobConfig):
        if not config.types:
            found.append("--types: name at least one type, comma-separated")
        elif len(set(config.types)) != len(config.types):
            found.append(f"--types {','.join(config.types)}: a type is named twice")
        if config.max_output_bytes < MIN_OUTPUT_BYTES:
            found.append(f"--max-output-bytes {config.max_output_bytes}: at least "
                         f"{MIN_OUTPUT_BYTES}")  # fmt: skip
    return found


def parse_args(argv: list[str] | None = None, cls: type = JobConfig):
    """The configuration the command line gives, or one line on stderr and exit code 2."""
    parser = build_parser(cls)
    config = cls(**vars(parser.parse_args(argv)))
    wrong = problems(config)
    if wrong:
        parser.error(wrong[0])
    if cls is JobConfig:
        try:
            config.rules()  # a bad rules file fails at submission, saying why
        except ValueError as error:
            parser.error(" ".join(str(error).split()))
    return config


def to_args(config) -> list[str]:
    """Command-line options that reproduce a configuration (non-defaults only)."""
    args: list[str] = []
    for f in fields(config):
        value = getattr(config, f.name)
        if value == f.default:
            continue
        if f.type is bool:
            args.append(_option(f.name))
        else:
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            args += [_option(f.name), text]
    return args


# --- docs/configuration.md: the options tables, generated from the dataclasses ------------

CONFIGURATION_DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def options_markdown(cls: type) -> str:
    """The options of a config dataclass as a Markdown table: the same names, defaults and
    help texts as `--help`."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for f in fields(cls):
        names = ", ".join(f"`{n}`" for n in (_option(f.name), *f.metadata.get("aliases", ())))
        help_text = f.metadata["help"]
        if f.metadata.get("choices"):
            help_text += " (" + ", ".join(f"`{c}`" for c in f.metadata["choices"]) + ")"
        rows.append(f"| {names} | {_shown(f.default, f.type)} | {help_text.replace('|', '/')} |")
    return "\n".join(rows)


def _shown(default, kind) -> str:
    if kind is bool:
        return "off"
    if isinstance(default, tuple):
        return f"`{','.join(default)}`" if default else "(none)"
    return "(none)" if default == "" else f"`{default}`"


def generated_docs(text: str) -> str:
    """docs/configuration.md with each `<!-- options: NAME -->` block regenerated."""
    for cls in (JobConfig, WriterConfig):
        start, end = f"<!-- options: {cls.PROG} -->", f"<!-- end options: {cls.PROG} -->"
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = f"{before}{start}\n{options_markdown(cls)}\n{end}{after}"
    return text


if __name__ == "__main__":  # python -m job.config: regenerates docs/configuration.md
    CONFIGURATION_DOC.write_text(generated_docs(CONFIGURATION_DOC.read_text()))
    print(f"written: {CONFIGURATION_DOC}")
