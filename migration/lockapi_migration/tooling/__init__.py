"""Operator tooling, never on an application's path: ``lockapi migrate`` (:mod:`.cli`), the readiness
gate (:mod:`.check`), classification of records (:mod:`.classify`), reports (:mod:`.report`,
:mod:`.html`) and the done-marker backfill (:mod:`.backfill`)."""
