"""Analysis passes over the IR (pure Python, no torch)."""
