"""Reliability suite: crashes, provider faults, hostile input, resource limits, secrets."""
