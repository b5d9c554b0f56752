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


def request_text(nonce: str, files: dict[str, str], profile_json: str, tag: str) -> str:
    """What one timing request is, canonically: its nonce, the sha256 of every file it
    uploaded (the artifact and its side files), the sha256 of the profile it sent (the
    backend, threads and measurement settings) and its tag. Host and board each compute
    it from what they hold; a signature over it binds a reply to this request alone."""
    import hashlib

    return json.dumps({"nonce": nonce, "files": dict(sorted(files.items())),
                       "profile": hashlib.sha256(profile_json.encode()).hexdigest(), "tag": tag}, sort_keys=True)


def sign(token: str, purpose: str, request: str, text: str = "") -> str:
    """HMAC-SHA256, keyed by the shared token, of a ``purpose`` ("request" from the host,
    "reply" from the board: one is never accepted as the other), the request and a text."""
    import hashlib
    import hmac

    return hmac.new(token.encode(), f"{purpose}\n{request}\n{text}".encode(), hashlib.sha256).hexdigest()


def _valid(token: str, signature: object, purpose: str, request: str, text: str = "") -> bool:
    import hmac

    return isinstance(signature, str) and hmac.compare_digest(signature, sign(token, purpose, request, text))


def sign_request(token: str | None, request: str) -> str:
    """The host's signature of its request ("" without a token)."""
    return sign(token, "request", request) if token else ""


def request_ok(token: str | None, request: str, request_mac: str) -> bool:
    """Did a host with this board's token sign ``request``? (Always, without a token.)"""
    return not token or _valid(token, request_mac, "request", request)


def refusal() -> str:
    """A board's reply to a request not signed with its token: a refusal, itself unsigned
    (unauthenticated clients get nothing signed)."""
    result = RunnerResult.failed(ResultKind.UNREACHABLE, f"the board refused the request: it is not signed with "
                                                         f"the board's token (${TOKEN_ENV}).")
    return json.dumps({"result": result.to_json(), "signature": None})


def signed(token: str | None, request: str, result: RunnerResult) -> str:
    """A device's reply to ``request`` (which :func:`request_ok` accepted): the result
    and, when the device has a token, its signature over the request and the result."""
    text = result.to_json()
    return json.dumps({"result": text, "signature": sign(token, "reply", request, text) if token else None})


def open_signed(token: str | None, request: str, reply: str) -> RunnerResult:
    """The result in a device's reply, if it is signed with ``token`` for ``request``
    (when the host has a token: then nothing else is accepted, a bare result included).

    Refused: a board registered under the key by someone else (it does not know the
    token), a reply replayed from another request (another nonce), and a reply an honest
    board signed for another artifact, profile or tag (a rogue board relaying the nonce).
    """
    try:
        data = json.loads(reply)
        text, signature = data["result"], data.get("signature")
        if not isinstance(text, str):
            raise TypeError("result is not a string")
    except (ValueError, TypeError, KeyError, AttributeError):
        if token:
            return _refused("a reply that is not signed at all")
        return RunnerResult.from_json(reply)  # malformed: from_json says so
    if token and not _valid(token, signature, "reply", request, text):
        inner = RunnerResult.from_json(text)
        said = signature is None and not inner.ok and "board refused the request" in (inner.error or "")
        return _refused("the board says the request is not signed with its token: the two tokens differ" if said
                        else "a reply not signed for this request")
    return RunnerResult.from_json(text)


def _refused(what: str) -> RunnerResult:
    return RunnerResult.failed(
        ResultKind.UNREACHABLE,
        f"the device's reply is not signed with this host's token (${TOKEN_ENV}) for this request ({what}): a "
        "board that does not share the token answered under this key, or relayed another's answer. Start your "
        "boards' device servers with the same token.")


def from_output(stdout: str) -> RunnerResult | None:
    """The last result line a child process printed, or None if it printed none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return RunnerResult.from_json(line[len(RESULT_TAG):])
    return None
