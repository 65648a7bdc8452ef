"""Storage: fsspec I/O, input readers, shard formats, atomic commits and manifests."""
