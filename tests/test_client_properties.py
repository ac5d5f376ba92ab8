"""The Kafka client properties file (`--kafka-properties`): read as Java's
`Properties.load(InputStream)` reads it, and passed as such to every Kafka connector."""

from __future__ import annotations

import tempfile
from pathlib import Path

import javaproperties
import pytest
from hypothesis import given
from hypothesis import strategies as st

from job.config import WriterConfig, parse_args, read_properties
from job.sql import shaded

# File texts are raw strings, so a
# backslash in them is a backslash in the file; expected values are what Java's
# Properties.load(InputStream) gives (checked against OpenJDK 17).

CLIENT_PROPERTIES = r"""
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \
    username="alice" \
    password="s3cr=t:x";
security.protocol : SASL_SSL
sasl.mechanism PLAIN
"""
JAAS_CONFIG = (
    "org.apache.kafka.common.security.plain.PlainLoginModule required "
    'username="alice" password="s3cr=t:x";'
)


def _properties_file(directory: Path, text: str) -> Path:
    path = directory / "client.properties"
    path.write_bytes(text.encode("iso-8859-1"))  # byte for byte, no newline translation
    return path


def _kafka_connector_options(props: Path) -> dict[str, dict[str, str]]:
    """The options of every Kafka connector (source, reference, sink, writer) for a file."""
    from job import writer
    from job.sinks import sink_options
    from job.sources import reference_options, source_options

    args = ["--kafka-properties", str(props)]
    config = parse_args(args)
    return {
        "source": source_options(config),
        "reference": reference_options(config),
        "sink": sink_options(config),
        "writer": writer.source_options(parse_args(args, WriterConfig)),
    }


def test_multi_line_jaas_config_reaches_every_kafka_connector(tmp_path):
    props = _properties_file(tmp_path, CLIENT_PROPERTIES)
    connectors = _kafka_connector_options(props)
    assert sorted(connectors) == ["reference", "sink", "source", "writer"]
    for name, options in connectors.items():
        assert options["connector"] == "kafka", name
        # The connector's jar relocates Kafka's classes: the login module is named there.
        assert options["properties.sasl.jaas.config"] == shaded(JAAS_CONFIG), name
        assert options["properties.security.protocol"] == "SASL_SSL", name
        assert options["properties.sasl.mechanism"] == "PLAIN", name
    described = parse_args(["--kafka-properties", str(props)]).describe()
    assert described["kafka_client_properties"]["sasl.jaas.config"] == "***"


JAVA_CASES = [
    pytest.param(
        r"""
security.protocol : SASL_SSL
sasl.mechanism PLAIN
bootstrap.servers:broker:9093
client.id = a=b:c d
"""
        + "acks\t=\fall\n",
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN",
            "bootstrap.servers": "broker:9093",
            "client.id": "a=b:c d",
            "acks": "all",
        },
        id="separators",
    ),
    pytest.param(
        r"""
key\:with\=sep = v
key\ with\ spaces=v2
\#not\!a\ comment = v3
""",
        {"key:with=sep": "v", "key with spaces": "v2", "#not!a comment": "v3"},
        id="escaped-separators-in-keys",
    ),
    pytest.param(
        r"""
ssl.truststore.location = C:\\certs\\
next = line
a\\
""",
        {"ssl.truststore.location": "C:\\certs\\", "next": "line", "a\\": ""},
        id="escaped-backslash-no-continuation",
    ),
    pytest.param(
        r"""
one = first \
      second
three = ends\\\
  here
"""
        + "crlf = a\\\r\n   b\r\n"
        + "cr = c\\\r   d\r",
        {"one": "first second", "three": "ends\\here", "crlf": "ab", "cr": "cd"},
        id="odd-backslashes-continue",
    ),
    pytest.param(
        r"""
caf\u00e9 = cr\u00E8me \u20ac \ud83d\ude00
""",
        {"café": "crème € \U0001f600"},
        id="unicode-escapes",
    ),
    pytest.param(
        r"""
escapes = a\tb\nc\rd\fe\\f\qg
padded = \  two
"""
        + "trailing = v  \n",
        {"escapes": "a\tb\nc\rd\fe\\fqg", "padded": "  two", "trailing": "v  "},
        id="escapes-and-whitespace",
    ),
    pytest.param(
        r"""
# comment
! bang comment
   # indented comment

# a comment's trailing backslash continues nothing \
key = first \
    # a continuation line, not a comment
after = # not a comment either
""",
        {"key": "first # a continuation line, not a comment", "after": "# not a comment either"},
        id="comments-and-blank-lines",
    ),
    pytest.param(
        r"""
lonely
empty.value =
trailing.colon:
"""
        + "spaced.out   \n",
        {"lonely": "", "empty.value": "", "trailing.colon": "", "spaced.out": ""},
        id="keys-without-value",
    ),
]


@pytest.mark.parametrize(("text", "expected"), JAVA_CASES)
def test_properties_file_is_read_as_java_reads_it(tmp_path, text, expected):
    assert read_properties(_properties_file(tmp_path, text)) == expected


def test_properties_file_is_iso_8859_1_as_kafka_tools_read_it(tmp_path):
    """Like `Properties.load(InputStream)` in Kafka's tools: a UTF-8 é is two characters."""
    props = tmp_path / "client.properties"
    props.write_bytes(
        b"latin1 = caf\xe9\n" + "utf8 = café\n".encode() + rb"escaped = caf\u00e9" + b"\n"
    )
    assert read_properties(props) == {"latin1": "café", "utf8": "cafÃ©", "escaped": "café"}


@given(st.dictionaries(st.text(), st.text(), max_size=5))
def test_what_java_properties_store_writes_reads_back(properties):
    # javaproperties.dumps writes Properties.store's format: escapes, \uXXXX, a date comment.
    with tempfile.TemporaryDirectory() as directory:
        path = _properties_file(Path(directory), javaproperties.dumps(properties))
        assert read_properties(path) == properties


def test_source_fetches_partitions_in_small_turns_unless_the_client_file_says_otherwise(
    tmp_path,
):
    """The type topics are read within a few hundred records of each other (a backlog read
    topic by topic keeps every transaction open until the last topic's turn); a user's
    client file still decides."""
    from job.sources import KAFKA_DEFAULT_FETCH, SOURCE_FETCH, source_options

    ours = SOURCE_FETCH["max.partition.fetch.bytes"]
    assert ours < KAFKA_DEFAULT_FETCH["max.partition.fetch.bytes"]
    own = source_options(parse_args([]))
    assert own["properties.max.partition.fetch.bytes"] == str(ours)
    props = _properties_file(tmp_path, "max.partition.fetch.bytes=1048576\n")
    told = source_options(parse_args(["--kafka-properties", str(props)]))
    assert told["properties.max.partition.fetch.bytes"] == "1048576"


def test_fetches_and_produce_requests_are_batched_unless_the_client_file_says_otherwise(
    tmp_path,
):
    """The input source lets the broker fill a fetch (up to 64 KiB or 20 ms) and the sink
    lingers 10 ms, instead of a request per few records under a trickle of input; a user's
    client file still decides, for both."""
    from job.sinks import KAFKA_DEFAULT_LINGER, SINK_BATCHING, sink_options
    from job.sources import KAFKA_DEFAULT_FETCH, SOURCE_FETCH, source_options

    assert set(SOURCE_FETCH) == set(KAFKA_DEFAULT_FETCH)
    assert KAFKA_DEFAULT_FETCH["fetch.min.bytes"] < SOURCE_FETCH["fetch.min.bytes"]
    assert KAFKA_DEFAULT_FETCH["fetch.max.wait.ms"] > SOURCE_FETCH["fetch.max.wait.ms"]
    assert KAFKA_DEFAULT_LINGER["linger.ms"] < SINK_BATCHING["linger.ms"]
    for delivery in ("exactly-once", "at-least-once"):
        config = parse_args(["--delivery-guarantee", delivery])
        source, sink = source_options(config), sink_options(config)
        for name, value in SOURCE_FETCH.items():
            assert source[f"properties.{name}"] == str(value)
        assert sink["properties.linger.ms"] == str(SINK_BATCHING["linger.ms"])
    props = _properties_file(tmp_path, "fetch.min.bytes=1\nfetch.max.wait.ms=500\nlinger.ms=0\n")
    told = parse_args(["--kafka-properties", str(props)])
    assert source_options(told)["properties.fetch.min.bytes"] == "1"
    assert source_options(told)["properties.fetch.max.wait.ms"] == "500"
    assert sink_options(told)["properties.linger.ms"] == "0"


def test_the_tools_get_the_same_sasl_and_tls_settings_as_the_jobs():
    from job.clients import ClientSettingsError, translate

    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="txn" password="p\\"w";'
    )
    settings = translate({
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": jaas, "ssl.truststore.type": "PEM",
        "ssl.truststore.location": "/etc/ca.pem", "ssl.endpoint.identification.algorithm": "",
        "fetch.min.bytes": "1",
    })  # fmt: skip
    assert settings == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "txn", "sasl_plain_password": 'p\\"w',
        "ssl_cafile": "/etc/ca.pem", "ssl_check_hostname": False,
    }  # fmt: skip
    with pytest.raises(ClientSettingsError, match="ssl.truststore.type JKS"):
        translate({"ssl.truststore.location": "/etc/truststore.jks"})


def test_the_connector_gets_kafka_classes_under_its_relocated_package():
    from job.sql import SHADED, with_client_properties

    jaas = 'org.apache.kafka.common.security.plain.PlainLoginModule required username="a";'
    options = with_client_properties({}, {"sasl.jaas.config": jaas})
    assert options["properties.sasl.jaas.config"] == SHADED + jaas
    already = with_client_properties({}, {"sasl.jaas.config": SHADED + jaas})
    assert already["properties.sasl.jaas.config"] == SHADED + jaas
