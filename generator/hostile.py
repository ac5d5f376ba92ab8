"""Records built to hurt the job: every malformed and hostile class the tests and the soak
send (no Kafka involved here)."""

from __future__ import annotations

import random

_DEEP = b"[" * 1200 + b"]" * 1200


def hostile_values(rng: random.Random, count: int = 300) -> list[bytes | None]:
    """One of each kind, then random bytes: `count` records in all."""
    kinds: list[bytes | None] = [
        b'{"transaction": "sur-\\ud800-a", "log": "x"}',  # a lone surrogate in the id
        b'{"transaction": "sur-b", "log": "\\udc00"}',  # ... in another field
        b'{"transaction": "sur-c", "\\udbff": "in a key"}',
        b'{"transaction": "nan", "log": NaN}',
        b'{"transaction": "inf", "n": Infinity, "m": -Infinity}',
        b'{"transaction": "huge-float", "n": 1e999}',
        b'{"transaction": "huge-int", "n": ' + b"7" * 5000 + b"}",
        b'{"transaction": "deep", "n": ' + _DEEP + b"}",  # RecursionError in json.loads
        _DEEP,
        b"\xef\xbb\xbf" + b'{"transaction": "bom"}',
        b'{"transaction": "bad-utf8-\xc3\x28"}',
        b'{"transaction": "cesu-\xed\xa0\x80"}',  # a surrogate encoded as UTF-8 bytes
        b"",
        None,  # a tombstone
        b"null",
        b'{"transaction": null}',
        b'{"transaction": ["a"]}',
        b'{"transaction": "ts-text", "ts": "not a number"}',  # non-numeric --timestamp-field
        b'{"transaction": "ts-huge", "ts": 9223372036854775807}',
        b'{"transaction": "ts-neg", "ts": -9223372036854775808}',
        b'{"transaction": "ts-float", "ts": 1.5e300}',
        b'{"transaction": "ts-deep", "ts": ' + _DEEP + b"}",
        b'{"transaction": "' + b"L" * 1024 + b'"}',  # the longest id (valid: it expires)
        b'{"transaction": "' + b"L" * 100_000 + b'"}',  # a 100 KB id: bad_transaction
        b'{"transaction": "nul-\\u0000-id"}',  # U+0000 in the id: bad_transaction
        b'{"transaction": "dup-1", "transaction": "dup-2"}',  # duplicate keys (valid)
        b'{"transaction": "pair-\\ud83d\\ude00", "log": "\\u0000\\u001f"}',  # valid
        b'{"transaction": "ctrl-\x01"}',  # a raw control character: not JSON
        b'{"transaction": "x", "log": "' + b"p" * 300_000 + b'"}',
        b"\xff" * 999_000,  # just under --max-record-bytes: its dead letter leaves it out
        b'{"transaction": "x", "log": "' + b"q" * 1_000_001 + b'"}',  # over the limit
    ]
    randoms = [rng.randbytes(rng.randint(1, 400)) for _ in range(max(count - len(kinds), 0))]
    return kinds + randoms
