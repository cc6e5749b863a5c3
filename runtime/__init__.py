"""Process runtime shared by every dbaas process: structured logging, Prometheus metrics,
clean shutdown on SIGTERM.

Infrastructure only: this package imports nothing of the domain (commands, events, processors,
projections, operators) so that every layer can use it.
"""
