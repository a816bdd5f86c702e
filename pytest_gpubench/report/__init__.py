"""Reports: the terminal summary (later: markdown, CSV, plots, cost)."""
