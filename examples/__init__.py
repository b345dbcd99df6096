"""Examples that are not part of the package: the built-in corpus builder, the swap-detection task
(imported by the tests and benchmarks as `examples.<module>` from the repository root)."""
