"""Where runs execute besides this process: the Ray backend (`backend = "ray"`) spreads them over a cluster."""
