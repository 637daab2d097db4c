"""Configuration: defaults (no imports), the settings model, durations, the seed dict, and the endpoints built from Connections."""
