"""Collect: per-backend accounting, the pool and picking, the rolling latency histogram."""
