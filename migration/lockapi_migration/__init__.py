"""Migration tooling between lock backends (shadow mode, phases, reports)."""
