"""db_agent: the user's memory, items, events and reminders, and the business's documents, in the tenant database."""
from __future__ import annotations

from shared.agents.loop import ToolGroupAgent


class DbAgent(ToolGroupAgent):
    name = "db_agent"
    group = "db"
    intents = frozenset({"db", "mixed"})
