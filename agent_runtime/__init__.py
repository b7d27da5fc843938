"""StreamSpace agent: runs session workloads for the control plane (no Django import)."""

from __future__ import annotations

__version__ = "1.0.0"
