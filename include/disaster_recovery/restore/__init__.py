"""Restores: a logical backup into a database, and point-in-time recovery of the physical chain."""
