"""Orchestration over the ports: the agent builder's turn loop and the tools it works with."""
