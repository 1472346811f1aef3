"""Runtime and tooling share this: decision records (:mod:`.model`), the background writer that stores
them (:mod:`.sink`) and the record stores (:mod:`.store`: SQL or Redis) that also hold the fleet
registry and the migration milestones."""
