"""Clients of the outside world: the one subprocess runner, S3, Redis, Route 53, the application's services and Slack."""
