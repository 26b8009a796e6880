"""Loopback test doubles of the external services the project talks to (see docs: DESIGN.md)."""
