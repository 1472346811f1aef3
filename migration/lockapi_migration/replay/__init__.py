"""Runtime: the replay of operations on the shadow backend, off the caller's path.

:mod:`.queue` is the bounded, name-sharded queue of replay tasks and its worker threads.
"""
