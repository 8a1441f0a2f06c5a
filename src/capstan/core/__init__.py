"""Pure decisions: no I/O, no asyncio, no clocks (time is an argument)."""
