"""Frozen-backbone embeddings: the batched, streamed embedding loop and its multi-process sharding."""
