"""Git adapters; the run's worktree itself is still ``autopack.workspace``."""
