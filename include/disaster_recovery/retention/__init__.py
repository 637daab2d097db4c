"""Retention: the pure policies for the logical tiers and the physical chain, and the cleanup that applies them."""
