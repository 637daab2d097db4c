"""AWS sessions inside Airflow: the amazon provider's hook for the Connection.

The hook reads every credential option of the ``aws`` Connection type (``role_arn`` with any
``assume_role_method``, ``profile_name``, web identity federation, session tokens, the region and
endpoint extras) and refreshes assumed-role credentials itself; the library only asks it for a
boto3 session (:attr:`disaster_recovery.config.endpoints.Deployment.aws_sessions`).
"""

from __future__ import annotations

from typing import Any


def provider_session(conn_id: str, region: str) -> Any:
    """The boto3 session AwsBaseHook builds for ``conn_id`` in ``region``."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=conn_id, region_name=region).get_session(region_name=region)
