"""Stream processors: the command processor (commands -> events, in Kafka transactions) and,
later, the sagas and the audit fan-out. Thin edges around the pure `decide`/`evolve`:
consume, decode, call the pure function, produce. May import `commands`, `events`, `schemas`,
`runtime`; never `projections` or `gateway`.
"""
