"""Per-user memory and tenant knowledge: embedders and the store (pgvector, or full-text search without it)."""
