"""Export: tokenise a pinned table version into Megatron indexed datasets + `shard_manifest`."""
