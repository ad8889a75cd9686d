"""The service's published API description."""

from __future__ import annotations

from pathlib import Path

SPEC = Path(__file__).resolve().parents[2] / "openapi.yaml"
