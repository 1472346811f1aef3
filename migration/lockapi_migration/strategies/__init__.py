"""Runtime: what a migrating node does on each SPI call, per phase.

:mod:`.shadow` (shadow and cutover: the primary decides, the other backend is replayed behind it),
:mod:`.dual` (both backends required), and what both share (:mod:`.operations`, :mod:`.tokens`).
"""
