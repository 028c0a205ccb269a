"""autopack's benchmark suite: `python -m benchmarks` (see benchmarks/__main__.py and docs/performance.md)."""
