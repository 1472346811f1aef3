"""Operations as plans, without I/O: the sync and the asyncio backend run the same protocol.

A :data:`Plan` is a generator. It yields :data:`Step` s — one IMap request (:class:`Call`), or several
sent at once and answered together (:class:`Together`: one round trip) — and is sent each step's result,
or has the step's error thrown in (so a plan can undo or withdraw what it wrote, and its ``finally``
can still send a request). It returns the operation's result. Everything a lockapi operation does on
the cluster is written once as a plan (:mod:`.map_protocol`, :mod:`.fences`, :mod:`.extension`,
:mod:`.fair`, :mod:`.done`): the entry values, the order of the requests, the conditions, the pause
points between round trips (:func:`lockapi.spi.pause_point`, called by the plan itself, hence in the
same places whatever runs it) and the error messages.

A runner executes the steps: :class:`lockapi_hazelcast.client.ClientHolder` with the blocking client
(``hazelcast.HazelcastClient``: a request returns a Future, waited for on the calling thread), and
:class:`lockapi_hazelcast.aio_client.AsyncClientHolder` with ``hazelcast.asyncio`` (a request is a
coroutine, awaited on the event loop). Both bound every step by the operation's deadline and turn the
client's errors into lockapi errors through :mod:`.errors`; only the I/O differs.

A :class:`Call` names its map by role (``locks``, ``permits``, ``fences``, ``done``, ``queues``: the IMap
``<prefix>.<role>``) and an IMap method that both clients have with the same signature.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "DONE", "FENCES", "LOCKS", "MAP_ROLES", "PERMITS", "QUEUES",
    "Call", "Plan", "Step", "Together",
]

T = TypeVar("T")

LOCKS, PERMITS, FENCES, DONE, QUEUES = "locks", "permits", "fences", "done", "queues"
"""The roles of the IMaps (see :mod:`.map_backend` for what each holds)."""
MAP_ROLES = (LOCKS, PERMITS, FENCES, DONE, QUEUES)
"""Every IMap map mode uses (``<prefix>.<role>``); cp mode uses only ``done``."""


@dataclass(frozen=True, slots=True, eq=False)
class Call:
    """``<map>.<method>(*args, **kwargs)`` on the IMap of role ``map``; the step's result is its answer.

    ``what`` names the request in errors (``"release"``: "release failed ..."). With ``needs_answer``
    False the plan does not use the answer and a failure is only logged (e.g. unlocking a key lock that
    may have lapsed): the blocking runner sends it without waiting; the asyncio runner awaits it (the
    asyncio client ties a key lock to the task that calls it, so the unlock is sent from that task),
    within what is left of the deadline. Its result is None.
    """

    map: str
    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    what: str = ""
    needs_answer: bool = True


@dataclass(frozen=True, slots=True, eq=False)
class Together:
    """Several calls sent at once (one round trip); the step's result is the list of their answers."""

    calls: tuple[Call, ...]
    what: str


Step = Call | Together
Plan = Generator[Step, Any, T]
"""A lockapi operation: yields steps, is sent each step's result (or thrown its error), returns T."""


