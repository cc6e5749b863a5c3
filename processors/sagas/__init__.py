"""Sagas: a pure policy per saga (`react(state, message) -> (state, effects)`, no I/O, no clock)
and one runner (`processors.sagas.runner`) that feeds it and performs its effects through
injected ports, with one retry and timeout policy for all of them."""
