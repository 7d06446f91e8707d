"""Reports rendered from result records (never from live objects)."""
