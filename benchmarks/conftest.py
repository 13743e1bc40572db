"""pytest-benchmark suites: tiny configurations so CI runs each once (--benchmark-disable, the
default in pyproject) as a smoke test; time them with `python -m pytest benchmarks
--benchmark-enable -m benchmark`. Not pass/fail timing: nothing here asserts a duration."""
