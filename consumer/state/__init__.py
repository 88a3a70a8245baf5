"""Partition state: a byte store per partition (memory or RocksDB), the core's view, changelog restore."""
