"""The benchmarks behind ``onlinenorm bench``: figures measured side by side in one process."""
