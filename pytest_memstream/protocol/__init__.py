"""The wire formats that workers, the sink and viewers share, and their one vocabulary.

- :mod:`.stream`: what a worker sends to the sink (frames of messages, numbered).
- :mod:`.viewer`: what the sink and its viewers say to each other (the clone pattern).
- :mod:`.checks`: the field checks both are declared with, and strict msgpack decoding.

Both travel over ZeroMQ sockets secured with CURVE (``pytest_memstream.security``): a
frame that reaches a decoder came from a peer that proved it holds the run's keys.
Decoding is strict all the same: size caps, msgpack limits, no extension types, a schema
and range check of every field.  Anything else raises :class:`ProtocolError` with a short
``reason`` that the receiver counts.  docs/protocol.md describes both for viewer authors;
docs/versioning.md says when a version changes.
"""

from __future__ import annotations

PHASES = ("setup", "call", "teardown")
PHASE_OUTCOMES = frozenset({"passed", "failed", "skipped"})
TEST_OUTCOMES = frozenset({"passed", "failed", "skipped", "error", "crashed", "xfailed", "xpassed"})
#: How a peak was obtained: the kernel's high-water mark, or the largest sample.
HWM, SAMPLED, RUSAGE = "hwm", "sampled", "rusage"
PEAK_METHODS = frozenset({HWM, SAMPLED})
#: How a child process's peak was obtained: also ``rusage``, wait4()'s ru_maxrss of a
#: reaped child.
CHILD_METHODS = PEAK_METHODS | {RUSAGE}
#: What a memory limit is on: the worker's growth or peak, or its process tree's growth.
LIMIT_ON = ("growth", "peak", "tree")


class ProtocolError(ValueError):
    """A frame or message that does not follow the protocol.

    ``reason`` is one of a fixed set of short words, so that counting rejects by reason
    can never grow without bound.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
