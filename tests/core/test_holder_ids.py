"""Holder ids: unique per lease, with 64 random bits of their own (never a thread ident)."""

from __future__ import annotations

import threading

from lockapi.manager import _HolderIds, new_holder_id


def test_every_lease_gets_a_unique_id_with_its_own_random_part() -> None:
    ids = [new_holder_id() for _ in range(3 * _HolderIds.BATCH + 7)]  # across several os.urandom batches
    assert len(set(ids)) == len(ids)
    randoms = [i.split(":")[-2] for i in ids]
    assert all(len(r) == 16 and int(r, 16) >= 0 for r in randoms)
    assert len(set(randoms)) == len(randoms)  # 64 random bits per lease: a collision here is a bug
    assert all(str(threading.get_ident()) not in i.split(":") for i in ids)


def test_threads_drawing_ids_at_once_never_share_one() -> None:
    drawn: list[list[str]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def draw(out: list[str]) -> None:
        start.wait()
        out.extend(new_holder_id() for _ in range(2000))

    threads = [threading.Thread(target=draw, args=(out,)) for out in drawn]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for out in drawn for i in out]
    assert len(set(every)) == len(every) == 8000
    assert len({i.split(":")[-2] for i in every}) == 8000
