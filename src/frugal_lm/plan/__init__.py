"""Budget planner: FLOP and parameter counting, device table, time, dollars and memory."""
