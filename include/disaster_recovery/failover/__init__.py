"""Failover and failback: the plan, the steps, the engine that runs them, and the seed's FailoverOrchestrator.

``python -m disaster_recovery.failover`` is the runbook command."""
