"""Load generation and benchmark harness for authbench."""
