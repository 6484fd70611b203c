//! Harness for the end-to-end tests: build paths, free ports, child processes.
