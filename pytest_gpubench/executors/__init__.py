"""Where a cell runs: in this process (local); later a subprocess of another environment, or a Modal container."""
