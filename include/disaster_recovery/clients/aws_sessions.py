"""boto3 sessions for an AWS Connection, with the credential options the amazon provider reads.

Inside Airflow the provider's own hook builds the session (see
:mod:`disaster_recovery.airflow_support.aws_hook`), so every option of that Connection type
works. Outside Airflow (the WAL archiver on a database host, the CLI on a laptop) this module
reads the same Connection JSON the same way: keys in login/password, ``profile_name``,
``role_arn`` with ``assume_role_method`` ``assume_role`` (default) or
``assume_role_with_web_identity`` and ``assume_role_kwargs``; as in the provider, the STS
endpoint of an assumed role is ``service_config.sts.endpoint_url`` (AWS's without it).

Assumed-role credentials refresh themselves before they expire: a six-hour dump outlives the
default one-hour session.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import TYPE_CHECKING, Any

from disaster_recovery.errors import ConfigError

if TYPE_CHECKING:
    from disaster_recovery.config.endpoints import AwsEndpoint

SESSION_NAME = "litper-dr"
ASSUME_METHODS = ("assume_role", "assume_role_with_web_identity")


def session_for(endpoint: AwsEndpoint, *, plain: Any = None) -> Any:
    """The boto3 session holding ``endpoint``'s credentials. A Connection with plain keys (or
    none: the default chain) gets ``plain`` or a new session, and its keys go to the client
    (:meth:`AwsEndpoint.client_kwargs`)."""
    import boto3

    if endpoint.session_factory is not None:
        return sharing_models(endpoint.session_factory())
    if not endpoint.role_arn and not endpoint.profile:
        return sharing_models(plain or boto3.session.Session())
    base = sharing_models(_base_session(endpoint))
    if not endpoint.role_arn:
        return base
    return sharing_models(_assumed_role_session(endpoint, base))


@functools.cache
def _shared_loader() -> Any:
    import botocore.session

    return botocore.session.Session().get_component("data_loader")


_SHARING = threading.Lock()


def sharing_models(session: Any) -> Any:
    """``session`` reading service models through the process's one botocore loader.

    Each new session parses S3's model, its endpoint rules and the partitions again (~1.5 MB of
    JSON, ~0.1 s per client), and one backup reaches S3 through some twenty stores; within one
    session botocore shares that cache between clients, and this shares it between sessions.
    The models are read-only once loaded. boto3 names its botocore session only ``_session``.

    Once per session, under a lock: the WAL archiver's regions build their clients from one
    session on two threads, and botocore's component registry is not safe to change while
    another thread reads it.
    """
    core = session._session
    with _SHARING:
        if not getattr(core, "_dr_shares_models", False):
            core.register_component("data_loader", _shared_loader())
            core._dr_shares_models = True
    return session


def aws_client(endpoint: AwsEndpoint, service: str, **kwargs: Any) -> Any:
    """A client of ``service`` for the endpoint (its region, endpoint URL and credentials)."""
    return session_for(endpoint).client(service, **endpoint.client_kwargs(service), **kwargs)


def _base_session(endpoint: AwsEndpoint) -> Any:
    import boto3
    from botocore.exceptions import ProfileNotFound

    try:
        if endpoint.profile:
            return boto3.session.Session(profile_name=endpoint.profile, region_name=endpoint.region)
    except ProfileNotFound as exc:
        raise ConfigError(f"connection {endpoint.conn_id!r}: profile_name: {exc}") from None
    if endpoint.access_key:
        return boto3.session.Session(
            aws_access_key_id=endpoint.access_key,
            aws_secret_access_key=endpoint.secret_key,
            region_name=endpoint.region,
        )
    return boto3.session.Session(region_name=endpoint.region)


def _assumed_role_session(endpoint: AwsEndpoint, base: Any) -> Any:
    import boto3
    import botocore.session
    from botocore.credentials import RefreshableCredentials

    if endpoint.assume_role_method not in ASSUME_METHODS:
        raise ConfigError(
            f"connection {endpoint.conn_id!r}: assume_role_method "
            f"{endpoint.assume_role_method!r} works only inside Airflow (the provider's hook); "
            f"outside it use {' or '.join(ASSUME_METHODS)}"
        )
    sts = base.client(
        "sts", region_name=endpoint.region, endpoint_url=endpoint.sts_endpoint_url or None
    )

    def assume() -> dict[str, str]:
        credentials = _assume(endpoint, sts)
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": credentials["Expiration"].isoformat(),
        }

    refreshable = RefreshableCredentials.create_from_metadata(
        metadata=assume(), refresh_using=assume, method="sts-assume-role"
    )
    core = botocore.session.get_session()
    core._credentials = refreshable  # botocore's documented way has no public setter
    core.set_config_variable("region", endpoint.region)
    return boto3.session.Session(botocore_session=core)


def _assume(endpoint: AwsEndpoint, sts: Any) -> dict[str, Any]:
    from botocore.exceptions import BotoCoreError, ClientError

    kwargs = {"RoleSessionName": SESSION_NAME, **endpoint.assume_role_kwargs}
    try:
        if endpoint.assume_role_method == "assume_role_with_web_identity":
            response = sts.assume_role_with_web_identity(
                RoleArn=endpoint.role_arn, WebIdentityToken=_web_identity_token(endpoint), **kwargs
            )
        else:
            response = sts.assume_role(RoleArn=endpoint.role_arn, **kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise ConfigError(
            f"connection {endpoint.conn_id!r}: STS refused to assume {endpoint.role_arn} "
            f"({code}): the base credentials need sts:AssumeRole on it and the role's trust "
            "policy must allow them"
        ) from None
    except BotoCoreError as exc:
        from disaster_recovery.errors import UnavailableError

        raise UnavailableError(
            f"connection {endpoint.conn_id!r}: cannot reach STS to assume {endpoint.role_arn}: "
            f"{exc}"
        ) from None
    return dict(response["Credentials"])


def _web_identity_token(endpoint: AwsEndpoint) -> str:
    path = endpoint.web_identity_token_file or os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE")
    if not path:
        raise ConfigError(
            f"connection {endpoint.conn_id!r}: assume_role_with_web_identity needs "
            "assume_role_with_web_identity_token_file (or AWS_WEB_IDENTITY_TOKEN_FILE)"
        )
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError as exc:
        raise ConfigError(f"connection {endpoint.conn_id!r}: web identity token: {exc}") from None
