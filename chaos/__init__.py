"""The fault suite (``make chaos``): Djinn's real processes with faults injected, checked for what must hold."""
