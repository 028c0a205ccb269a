"""autopack: carry out a plan on a git repository, phase by phase, with Claude."""

__version__ = "0.1.0"
