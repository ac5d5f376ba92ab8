"""Kafka client settings for the Python tools (kafka-python), from the same Java properties
file the jobs' connectors get (`--kafka-properties`).

The jobs hand the file to Flink's Kafka connector as it is. The tools (the generator, the
output reader, the reference and rules loaders, `stack`, the writer's start) use
kafka-python, whose settings have other names and take certificates as PEM files: this
module translates what they share, so one file reaches a SASL or TLS broker from every
tool. What cannot be translated is refused with the property and the fix, not ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

from job.config import read_properties

# Java name -> kafka-python name, for the settings that mean the same thing.
SAME = {
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "client.id": "client_id",
    "ssl.key.password": "ssl_password",
    "request.timeout.ms": "request_timeout_ms",
}
_JAAS_OPTION = re.compile(r'(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"')


# For commands that must answer soon (`stack status`, `stack check`): a broker that does not
# answer within seconds counts as away, instead of Kafka's 30 s per client.
QUICK = {"bootstrap_timeout_ms": 5_000, "request_timeout_ms": 15_000}


class ClientSettingsError(ValueError):
    """A client setting the tools cannot use; the message names it and the fix."""


def kafka_settings(bootstrap_servers: str, properties_file: str = "", **extra) -> dict:
    """kafka-python keyword arguments for any client of the tools (`extra` as they are)."""
    settings: dict = {"bootstrap_servers": bootstrap_servers, **extra}
    if properties_file:
        settings.update(translate(read_properties(Path(properties_file))))
    return settings


def translate(properties: dict[str, str]) -> dict:
    """The kafka-python settings of a client properties file's SASL, TLS and client keys."""
    settings = {SAME[k]: _typed(SAME[k], v) for k, v in properties.items() if k in SAME}
    jaas = properties.get("sasl.jaas.config")
    if jaas:
        options = dict(_JAAS_OPTION.findall(jaas))
        if "username" not in options or "password" not in options:
            raise ClientSettingsError(
                'sasl.jaas.config: the tools need username="..." and password="..." '
                "(PLAIN or SCRAM login modules)"
            )
        settings["sasl_plain_username"] = options["username"]
        settings["sasl_plain_password"] = options["password"]
    for store, pem_setting in (("truststore", "ssl_cafile"), ("keystore", "ssl_certfile")):
        location = properties.get(f"ssl.{store}.location")
        if location:
            kind = properties.get(f"ssl.{store}.type", "JKS")
            if kind.upper() != "PEM":
                raise ClientSettingsError(
                    f"ssl.{store}.type {kind}: the tools read certificates as PEM; set "
                    f"ssl.{store}.type=PEM and ssl.{store}.location to a PEM file"
                )
            settings[pem_setting] = location
            if store == "keystore":
                settings["ssl_keyfile"] = location
    if properties.get("ssl.endpoint.identification.algorithm", "https") == "":
        settings["ssl_check_hostname"] = False
    return settings


def _typed(name: str, value: str):
    return int(value) if name.endswith("_ms") else value
