"""Profiling: power sampling, load generation, sweeps and the SQLite profile store."""
