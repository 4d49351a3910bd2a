"""The tables on disk: the Parquet contract of every table (contract), reading and writing them atomically (tables),
units and shards, the unit writer, manifests, prediction rows, and a synthetic run for tests and benchmarks.
Imports analysis.data and analysis.model."""
