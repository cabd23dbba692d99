"""Agents: the orchestrator and the specialised agents it routes a turn to (tool gating)."""
