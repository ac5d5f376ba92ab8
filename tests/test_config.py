"""Configuration: defaults run the demo, every field is an option, secrets stay masked."""

from dataclasses import fields

import pytest

from job.config import JobConfig, WriterConfig, build_parser, parse_args


def test_defaults_match_the_original_proof_of_concept():
    config = parse_args([])
    assert config == JobConfig()
    assert config.input_topics == [f"Events-Type{c}" for c in "ABCDE"]
    assert config.aggregated_topic == "Events_Aggregated"
    assert config.expired_topic == "Events_Expired"
    assert config.timeout_s == 120


def test_every_setting_is_in_help():
    text = build_parser().format_help()
    for f in fields(JobConfig):
        assert "--" + f.name.replace("_", "-") in text


def test_options_parse_to_typed_values():
    config = parse_args(
        ["--types", "A,B", "--timeout-s", "5", "--bounded", "--parallelism", "2", "--jars", "x,y"]
    )
    assert config.types == ("A", "B")
    assert config.timeout_s == 5.0
    assert config.bounded is True
    assert config.parallelism == 2
    assert config.jars == ("x", "y")


def test_type_of_topic():
    config = JobConfig()
    assert config.type_of("Events-TypeC") == "TypeC"
    assert config.type_of("Events-TypeZ") is None
    assert config.type_of("Other-TypeA") is None


def test_kafka_properties_file_passes_through_and_secrets_are_masked(tmp_path):
    props = tmp_path / "client.properties"
    props.write_text(
        "# comment\nsecurity.protocol=SASL_SSL\nsasl.jaas.config=secret stuff\n"
        "ssl.truststore.password = hunter2\n"
    )
    config = parse_args(["--kafka-properties", str(props)])
    assert config.kafka_client_properties() == {
        "security.protocol": "SASL_SSL",
        "sasl.jaas.config": "secret stuff",
        "ssl.truststore.password": "hunter2",
    }
    described = config.describe()["kafka_client_properties"]
    assert described["security.protocol"] == "SASL_SSL"
    assert described["sasl.jaas.config"] == "***"
    assert described["ssl.truststore.password"] == "***"


def test_to_args_round_trips():
    config = JobConfig(types=("X", "Y"), timeout_s=3.5, bounded=True, group_id="g")
    assert parse_args(config.to_args()) == config
    assert JobConfig().to_args() == []


def test_the_configuration_doc_is_generated_from_the_options():
    """docs/configuration.md's tables are what `python -m job.config` writes: every option of
    both jobs, with the defaults and help of `--help`."""
    from job.config import CONFIGURATION_DOC, generated_docs

    text = CONFIGURATION_DOC.read_text()
    assert text == generated_docs(text), "run `python -m job.config` to regenerate"
    for cls in (JobConfig, WriterConfig):
        for f in fields(cls):
            assert f"`--{f.name.replace('_', '-')}`" in text, f.name


def test_kafka_properties_reach_every_kafka_connector(tmp_path):
    from job import writer
    from job.config import WriterConfig
    from job.sinks import sink_options
    from job.sources import reference_options, source_options

    props = tmp_path / "client.properties"
    props.write_text("security.protocol=SASL_SSL\n")
    config = parse_args(["--kafka-properties", str(props)])
    writer_config = parse_args(["--kafka-properties", str(props)], WriterConfig)
    for options in (
        source_options(config),
        reference_options(config),
        sink_options(config),
        writer.source_options(writer_config),
    ):
        assert options["properties.security.protocol"] == "SASL_SSL"
        assert options["connector"] == "kafka"


def test_renamed_option_keeps_its_old_name():
    new = parse_args(["--kafka-transaction-timeout-ms", "700000"])
    old = parse_args(["--transaction-timeout-ms", "700000"])
    assert new == old and new.kafka_transaction_timeout_ms == 700_000
    assert "--kafka-transaction-timeout-ms" in new.to_args()


def test_topics_are_described_once_with_the_reference_topic_compacted():
    config = JobConfig(types=("TypeA", "TypeF"), topic_prefix="p-")
    specs = {t.name: t for t in config.topics(partitions=4)}
    assert list(specs) == [
        *config.input_topics, *config.output_topics, config.progress_topic,
        config.reference_topic,
    ]  # fmt: skip
    assert specs["p-TypeF"].partitions == 4
    progress = specs[config.progress_topic]
    assert (progress.partitions, dict(progress.configs)) == (4, {"cleanup.policy": "compact"})
    assert config.sink_topics == [*config.output_topics, config.progress_topic]
    reference = specs[config.reference_topic]
    assert (reference.partitions, dict(reference.configs)) == (1, {"cleanup.policy": "compact"})
    assert reference.compose_arg() == "Reference-Services:1:cleanup.policy=compact"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--timeout-s", "-5"], "--timeout-s -5.0: must be a finite number, above 0"),
        (["--timeout-s", "inf"], "--timeout-s inf: must be a finite number"),
        (["--timeout-s", "1e12"], "--timeout-s 1000000000000.0: at most"),
        (["--parallelism", "-3"], "--parallelism -3: must be a finite number, 0 or more"),
        (["--types", ""], "--types: name at least one type"),
        (["--types", "TypeA,TypeA"], "a type is named twice"),
        (["--closed-retention-s", "-1"], "--closed-retention-s -1.0: must be"),
        (["--kafka-properties", "/no/such/client.properties"], "no such file"),
        (["--rules-file", "/no/such/rules.yaml"], "no such file"),
        (["--max-output-bytes", "100"], "--max-output-bytes 100: at least 65536"),
        (["--timeout-s", "soon"], "argument --timeout-s: invalid float value"),
    ],
)
def test_a_bad_option_value_is_one_line_and_exit_code_2(args, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err
