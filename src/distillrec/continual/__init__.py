"""continual room."""
