"""The ``dbaas`` command line: the local platform (``stack``), topics, and — through the
gateway — the tenant-facing commands. Thin edges only: parse, call, print (``--json`` for
scripts)."""
