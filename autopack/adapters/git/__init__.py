"""Git adapters: ``calls`` (every git call), ``scratch`` (the evidence worktree); the run's worktree itself is still ``autopack.workspace``."""
