"""Three small rules every layer shares: asyncio helpers, the one backoff, and the clock that never jumps."""
