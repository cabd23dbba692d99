"""A conversation: inbound messages stored, the debounced turn, the engine, the prompt and its token budget."""
