"""Benchmarks of the control plane (`make bench`), each printed with a baseline measured in the
same run and the ratio to it. Not part of the tests."""
