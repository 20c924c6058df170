"""Contract suites: one per pluggable family, each run on the memory and the Redis backend."""
