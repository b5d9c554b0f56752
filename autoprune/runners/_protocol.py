"""The one wire format between a timing process and the host.

The device side (the local runner's child process, or ``autoprune device-server`` on a
board) and every runner exchange a :class:`RunnerResult` as one JSON object; a child
process prints it on a line of its own behind :data:`RESULT_TAG`. The *kind* of a
failure is decided where it happens (a timing process that died, a board that dropped
off its tracker), so nobody downstream has to guess it from the wording of a message.

This module imports only the standard library and :mod:`autoprune.measure`: it runs on
the board.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from autoprune.measure import Measurement

RESULT_TAG = "AUTOPRUNE-RESULT "
SCHEMA = "autoprune.runner-result/1"
TOKEN_ENV = "AUTOPRUNE_DEVICE_TOKEN"  # shared by a device server and the hosts it times for


class ResultKind(str, enum.Enum):
    """What happened to one timing request."""

    OK = "ok"  # measured
    CANDIDATE_FAILED = "candidate_failed"  # the artifact failed to load or run: the candidate's fault
    TIMED_OUT = "timed_out"  # the timing did not finish within its limit
    DEVICE_LOST = "device_lost"  # the device died or wedged during the session: not the candidate's fault
    UNREACHABLE = "unreachable"  # no device could be reached; nothing ran (worth retrying)


@dataclass(frozen=True)
class RunnerResult:
    """A measurement, device facts, or the reason there is none, with its kind.

    Example:
        >>> RunnerResult.failed(ResultKind.TIMED_OUT, "timing timed out after 60 s").ok
        False
    """

    kind: ResultKind
    measurement: Measurement | None = None
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # what the device is (``devices check``)

    def __post_init__(self) -> None:
        if (self.kind is ResultKind.OK) != (self.error is None):
            raise ValueError(f"an {self.kind.value!r} result must {'not ' if self.kind is ResultKind.OK else ''}"
                             f"carry an error, but got error={self.error!r}.")

    @property
    def ok(self) -> bool:
        return self.kind is ResultKind.OK

    @classmethod
    def measured(cls, measurement: Measurement) -> RunnerResult:
        return cls(ResultKind.OK, measurement)

    @classmethod
    def failed(cls, kind: ResultKind, error: str) -> RunnerResult:
        return cls(kind, None, error)

    def to_json(self) -> str:
        return json.dumps({
            "schema": SCHEMA,
            "kind": self.kind.value,
            "measurement": None if self.measurement is None else self.measurement.to_dict(),
            "error": self.error,
            "info": self.info,
        })

    @classmethod
    def from_json(cls, text: str) -> RunnerResult:
        """Decode a result; anything malformed is a failed candidate that says so."""
        try:
            data = json.loads(text)
            if data.get("schema") != SCHEMA:
                raise ValueError(f"schema {data.get('schema')!r}, expected {SCHEMA!r}")
            m = data.get("measurement")
            return cls(ResultKind(data["kind"]), None if m is None else Measurement.from_dict(m),
                       data.get("error"), dict(data.get("info") or {}))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return cls.failed(ResultKind.CANDIDATE_FAILED,
                              f"the device answered with a malformed result ({type(exc).__name__}: {exc}); "
                              "is it running the same autoprune version as this host?")

    def line(self) -> str:
        """The result as a child process prints it."""
        return RESULT_TAG + self.to_json()


def sign(token: str, nonce: str, text: str) -> str:
    """HMAC-SHA256 of a reply to the request ``nonce``, keyed by the shared token."""
    import hashlib
    import hmac

    return hmac.new(token.encode(), f"{nonce}\n{text}".encode(), hashlib.sha256).hexdigest()


def signed(token: str | None, nonce: str, result: RunnerResult) -> str:
    """A device's reply: the result and, when the device has a token, its signature."""
    text = result.to_json()
    return json.dumps({"result": text, "signature": sign(token, nonce, text) if token else None})


def open_signed(token: str | None, nonce: str, reply: str) -> RunnerResult:
    """The result in a device's reply, if it is signed with ``token`` (when the host has one).

    A reply that is not signed for this request with this host's token is refused: a
    board registered under the key by someone else does not know the token, and a
    replayed reply carries another request's nonce.
    """
    import hmac

    try:
        data = json.loads(reply)
        text, signature = data["result"], data.get("signature")
    except (ValueError, TypeError, KeyError):
        return RunnerResult.from_json(reply)  # malformed: from_json says so
    if token and not (isinstance(signature, str) and hmac.compare_digest(signature, sign(token, nonce, text))):
        return RunnerResult.failed(
            ResultKind.UNREACHABLE,
            f"the device's reply is not signed with this host's token (${TOKEN_ENV}): a board that does not "
            "share it answered under this key. Start your boards' device servers with the same token.")
    return RunnerResult.from_json(text)


def from_output(stdout: str) -> RunnerResult | None:
    """The last result line a child process printed, or None if it printed none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return RunnerResult.from_json(line[len(RESULT_TAG):])
    return None
