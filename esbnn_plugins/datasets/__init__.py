"""Framework-free readers of the data sets the project ships configs for (numpy only)."""
