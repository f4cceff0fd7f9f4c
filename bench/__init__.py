"""Load benchmarks of the gateway (`make bench`); not part of the test suite. See README.md."""
