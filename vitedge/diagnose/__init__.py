"""Per-layer divergence localisation: where an artifact departs from its fp32 reference."""
