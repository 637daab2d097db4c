"""Monitoring: health checks, heartbeats, alerts and the dashboard's data."""
