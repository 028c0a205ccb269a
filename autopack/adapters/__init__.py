"""Adapters: the implementations of the ports (git, the test suite, the store, the LLM) as they move here."""
