"""The product's brain: pure functions from rollups and definitions to traits and reasons.

No Flask, no SQLAlchemy, no HTTP, no clock: every time is passed in.
"""
