"""`python -m stack check`: what would keep the job from running, found before Flink starts it.

The options' own values are checked when they are parsed (`job.config.problems`). Here the
broker they name: that it answers with the client settings given, that every topic of the
job exists with enough partitions for the parallelism, and that its
`transaction.max.timeout.ms` covers the exactly-once sink's transaction timeout (else every
checkpoint's commit would fail and the job restart forever). `stack submit` runs the same
checks first. Each problem is one line naming the option or topic and the fix.
"""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError

from job.clients import QUICK, ClientSettingsError, kafka_settings
from job.config import EXACTLY_ONCE, JobConfig

TOPICS_COMMAND = "python -m stack topics -- <the job's options>"


def problems(config: JobConfig) -> list[str]:
    """What is wrong with the broker and topics the job's options name, one line each."""
    try:
        settings = kafka_settings(config.bootstrap_servers, config.kafka_properties, **QUICK)
        admin = KafkaAdminClient(**settings)
    except ClientSettingsError as error:
        return [f"--kafka-properties {config.kafka_properties}: {error}"]
    except KafkaError as error:
        return [
            f"--bootstrap-servers {config.bootstrap_servers}: no broker answers "
            f"({type(error).__name__}); start Kafka, or fix the address or --kafka-properties"
        ]
    try:
        return _topic_problems(admin, config) + _transaction_problems(admin, config)
    finally:
        admin.close()


def _topic_problems(admin: KafkaAdminClient, config: JobConfig) -> list[str]:
    described = {t["name"]: t for t in admin.describe_topics([s.name for s in config.topics()])}
    found = []
    for spec in config.topics():
        topic = described.get(spec.name)
        if topic is None or topic.get("error_code", 0) or not topic.get("partitions"):
            found.append(f"topic {spec.name} does not exist: create the job's topics "
                         f"with `{TOPICS_COMMAND}`")  # fmt: skip
            continue
        partitions = len(topic["partitions"])
        if spec.name in config.input_topics and partitions < config.parallelism:
            found.append(
                f"topic {spec.name} has {partitions} partition(s), fewer than --parallelism "
                f"{config.parallelism}: add partitions, or lower the parallelism"
            )
    return found


def _transaction_problems(admin: KafkaAdminClient, config: JobConfig) -> list[str]:
    if config.delivery_guarantee != EXACTLY_ONCE:
        return []
    broker = str(admin.describe_cluster()["brokers"][0]["broker_id"])
    resource = ConfigResource(ConfigResourceType.BROKER, broker, configs=None)
    answer = admin.describe_configs([resource], config_filter="all")
    setting = answer.get("broker", {}).get(broker, {}).get("transaction.max.timeout.ms", {})
    limit = int(setting["value"]) if setting.get("value") is not None else None
    if limit is not None and config.kafka_transaction_timeout_ms > limit:
        return [
            f"--kafka-transaction-timeout-ms {config.kafka_transaction_timeout_ms} is above the "
            f"broker's transaction.max.timeout.ms {limit}: lower it, or raise the broker's"
        ]
    return []
