"""Object storage (S3 or anything that speaks it, such as moto): stream in, stream out, hash.

Objects are never staged on disk: uploads read from a pipe through a SHA-256 hasher into a
multipart upload, downloads stream back through the same hasher. S3's own checksums of a
multipart object are checksums of parts, so the file's SHA-256 is ours and lives in manifests.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from disaster_recovery.clients.aws_sessions import session_for
from disaster_recovery.clients.object_lock import Locked, LockPolicy
from disaster_recovery.config.encryption import Encryption
from disaster_recovery.config.endpoints import AwsEndpoint, Deployment
from disaster_recovery.errors import (
    ConfigError,
    ConflictError,
    DisasterRecoveryError,
    NotFoundError,
    UnavailableError,
    VerificationError,
)

if TYPE_CHECKING:
    from disaster_recovery.config.endpoints import Deployment

log = logging.getLogger(__name__)

MIB = 1024 * 1024
READ_CHUNK = 1 * MIB
# HEADs in flight when reading the Object Lock of many object versions (one HEAD each).
LOCK_CHECK_THREADS = 8
UPLOAD_THREADS = 4
# The largest object one CopyObject request may copy; larger ones are copied in parts.
COPY_OBJECT_LIMIT = 5 * 1024 * MIB
MAX_PARTS = 10_000


class HashingReader:
    """A file-like reader that hashes and counts what passes through it.

    ``at_eof`` is called when the source is exhausted and may raise: this is how a producer that
    died mid-stream (pg_dump killed) aborts the multipart upload instead of completing a
    truncated object, which boto3 would otherwise do. With ``part_size`` (the upload's part
    size) it also computes the checksum S3 keeps of the stored object (:attr:`s3_checksum`).
    """

    def __init__(
        self,
        source: IO[bytes],
        at_eof: Callable[[], None] | None = None,
        *,
        part_size: int | None = None,
    ):
        self._source = source
        self._at_eof = at_eof
        self._hasher = hashlib.sha256()
        self.size = 0
        self._finished = False
        self._part_size = part_size
        self._parts: list[bytes] = []  # SHA-256 of each finished part
        self._part = hashlib.sha256()
        self._in_part = 0

    def read(self, size: int = -1) -> bytes:
        """``size`` bytes, fewer only at the end; all that is left for ``size < 0``. boto3 takes
        a short read for the end of the stream (a small object's one PUT, or a short part)."""
        pieces: list[bytes] = []
        wanted = size if size is not None and size >= 0 else None
        while wanted is None or wanted > 0:
            piece = self._read_some(READ_CHUNK if wanted is None else wanted)
            if not piece:
                break
            pieces.append(piece)
            if wanted is not None:
                wanted -= len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _read_some(self, size: int) -> bytes:
        data = self._source.read(size)
        if data:
            self._hasher.update(data)
            self.size += len(data)
            if self._part_size:
                self._hash_parts(memoryview(data))
        elif not self._finished:
            self._finished = True
            if self._at_eof:
                self._at_eof()
        return data

    def _hash_parts(self, data: memoryview) -> None:
        assert self._part_size
        while data:
            room = self._part_size - self._in_part
            self._part.update(data[:room])
            self._in_part += min(room, len(data))
            data = data[room:]
            if self._in_part == self._part_size:
                self._parts.append(self._part.digest())
                self._part, self._in_part = hashlib.sha256(), 0

    @property
    def sha256(self) -> str:
        return self._hasher.hexdigest()

    @property
    def s3_checksum(self) -> str | None:
        """S3's ChecksumSHA256 of the object as boto3 uploads it: of the whole object below one
        part (a single PUT), else of the parts' checksums with the part count."""
        if not self._part_size:
            return None
        if self.size < self._part_size:
            return full_object_checksum(self.sha256)
        parts = self._parts + ([self._part.digest()] if self._in_part else [])
        combined = base64.b64encode(hashlib.sha256(b"".join(parts)).digest()).decode()
        return f"{combined}-{len(parts)}"


def full_object_checksum(sha256_hex: str) -> str:
    """S3's ChecksumSHA256 (base64) of an object whose SHA-256 is ``sha256_hex``."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def same_checksum(a: str | None, b: str | None) -> bool:
    """Two S3 SHA-256 checksums agree (the ``-<parts>`` suffix is not always reported)."""
    return bool(a and b) and str(a).split("-")[0] == str(b).split("-")[0]


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    size: int
    sha256: str
    s3_checksum: str | None = None  # S3's own SHA-256 as it should hold it (see HashingReader)


def _translate(exc: Exception, what: str, endpoint: AwsEndpoint) -> DisasterRecoveryError:
    where = f"{what} (connection {endpoint.conn_id!r}, region {endpoint.region})"
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = exc.response.get("Error", {}).get("Message", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotFoundError(f"{where}: object not found")
        if code == "NoSuchBucket":
            return ConfigError(f"{where}: bucket does not exist")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return ConfigError(
                f"{where}: access denied ({code}); check the connection's credentials"
            )
        if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
            return UnavailableError(f"{where}: S3 error {code or status}: {message}")
        return DisasterRecoveryError(f"{where}: S3 error {code or status}: {message}")
    if isinstance(exc, EndpointConnectionError):
        return UnavailableError(
            f"{where}: cannot reach S3 at {endpoint.endpoint_url or 'AWS'}: {exc}"
        )
    return UnavailableError(f"{where}: {exc}")


# A conditional write lost: the condition no longer holds (412), another conditional write to
# the same key is in flight (409), or the object is gone (If-Match on a deleted key).
_LOST_RACE = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404")


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def delete_refused(
    store: ObjectStore, refused: list[dict[str, Any]], *, deleted_before: int
) -> DisasterRecoveryError:
    """The error for keys a DeleteObjects request refused, naming them and what to do."""
    codes = sorted({str(item.get("Code", "")) for item in refused})
    keys = ", ".join(store.url(str(item.get("Key"))) for item in refused[:5])
    more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
    where = f"connection {store.endpoint.conn_id!r}, region {store.endpoint.region}"
    if codes == ["AccessDenied"]:
        return ConfigError(
            f"DELETE refused (AccessDenied) for {keys}{more} ({where}): these credentials may "
            "not delete backups, as least privilege wants for every role but the cleanup's. "
            "Run the cleanup with the cleanup role (`dr iam-policy --role cleanup`); "
            f"{deleted_before} object(s) of this request were deleted."
        )
    return DisasterRecoveryError(
        f"DELETE refused ({', '.join(codes)}) for {keys}{more} ({where}); "
        f"{deleted_before} object(s) of this request were deleted."
    )


def s3_client(
    endpoint: AwsEndpoint,
    *,
    session: Any = None,
    max_attempts: int = 5,
    connect_timeout: float = 10,
    read_timeout: float = 120,
) -> Any:
    """A boto3 S3 client for ``endpoint`` (a new session unless one is given)."""
    config = Config(
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        # Our own SHA-256 is the check; S3's per-part checksums break after a server-side
        # copy of a multipart object (FlexibleChecksumError on the bytes that are right).
        response_checksum_validation="when_required",
        request_checksum_calculation="when_required",
    )
    session = session_for(endpoint, plain=session)
    client = session.client("s3", config=config, **endpoint.client_kwargs())
    client.meta.events.register("after-call.s3", _refuse_non_s3_answer(endpoint))
    return client


def _refuse_non_s3_answer(endpoint: AwsEndpoint) -> Callable[..., None]:
    """A check on every response: a web page is not an S3 answer.

    A wrong ``endpoint_url`` (a web server, a login portal, a proxy's error page) answers 200
    with HTML; botocore parses that as an empty listing or an existing object, which would turn
    into a false "no backups" or "already uploaded". S3 and its emulators always send an
    ``x-amz-*`` header (``x-amz-request-id``; moto ``x-amzn-requestid``); an HTML answer
    without one is refused.
    """

    def check(http_response: Any, model: Any, **_: Any) -> None:
        headers = {name.lower(): value for name, value in http_response.headers.items()}
        from_s3 = any(name.startswith("x-amz") for name in headers)
        if not from_s3 and "html" in headers.get("content-type", "").lower():
            raise ConfigError(
                f"{model.name} (connection {endpoint.conn_id!r}, region {endpoint.region}): "
                f"{endpoint.endpoint_url or 'the endpoint'} answered with a web page (HTTP "
                f"{http_response.status_code}, {headers.get('content-type')}), not S3; "
                "check the connection's endpoint_url"
            )

    return check


class ObjectStore:
    """One bucket in one region, reached through one Connection.

    Every write (put, multipart upload, copy) carries the bucket's server-side encryption;
    without a configured one that is AES256, so nothing is ever stored unencrypted.
    """

    def __init__(
        self,
        endpoint: AwsEndpoint,
        bucket: str,
        *,
        chunk_mib: int = 16,
        client: Any = None,
        encryption: Encryption | None = None,
        lock: LockPolicy | None = None,
    ):
        self.endpoint = endpoint
        self.bucket = bucket
        self.encryption = encryption or Encryption()
        self.lock = lock  # Object Lock: retain-until dates on writes, version-aware deletes
        self.locked: list[Locked] = []  # what delete() left under a lock
        self._client = client  # built on first use unless given (see s3_client)
        self.transfer = TransferConfig(
            multipart_threshold=chunk_mib * MIB,
            multipart_chunksize=chunk_mib * MIB,
            max_concurrency=UPLOAD_THREADS,
            use_threads=True,
        )
        # A stream's parts wait in memory for a free thread; s3transfer allows 10 by default
        # (160 MiB at 16 MiB parts). One per thread plus one being read bounds memory, and a slow
        # S3 then slows pg_dump down (pipe back-pressure) instead of growing the worker.
        self.transfer.max_in_memory_upload_chunks = UPLOAD_THREADS + 1
        self.copy_object_limit = COPY_OBJECT_LIMIT

    def check_encrypted(self, key: str, head: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The object's encryption is this store's configured one, else VerificationError."""
        head = head if head is not None else self.head(key)
        if head is None:
            raise VerificationError(f"{self.url(key)} does not exist", check="exists", key=key)
        problem = self.encryption.problem(head)
        if problem:
            raise VerificationError(
                f"{self.url(key)} is {problem}: it was written without the configured encryption "
                f"(storage.encryption for {self.endpoint.region}). Copy it over itself with the "
                "right encryption or take a new backup, and find the writer that skipped it.",
                check="encryption",
                key=key,
            )
        return {
            "ok": True,
            "algorithm": head.get("ServerSideEncryption"),
            "kms_key_id": head.get("SSEKMSKeyId"),
        }

    def write_args(self, key: str) -> dict[str, Any]:
        """What every write of ``key`` carries: encryption, and its lock when configured."""
        return {**self.encryption.write_args(), **(self.lock.write_args(key) if self.lock else {})}

    def __repr__(self) -> str:
        return f"ObjectStore(s3://{self.bucket}, region={self.endpoint.region})"

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client(self.endpoint)
        return self._client

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, what, self.endpoint) from exc

    # -- reading -------------------------------------------------------------------------

    def head(self, key: str, *, checksum: bool = False) -> dict[str, Any] | None:
        """The object's metadata (with S3's checksum of it when asked), or None when it does
        not exist."""
        extra = {"ChecksumMode": "ENABLED"} if checksum else {}
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key, **extra)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise _translate(exc, f"HEAD {self.url(key)}", self.endpoint) from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"HEAD {self.url(key)}", self.endpoint) from exc

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def open(self, key: str) -> Any:
        """A streaming body (``read``, ``iter_chunks``) of the object."""
        response = self._call(
            f"GET {self.url(key)}", self.client.get_object, Bucket=self.bucket, Key=key
        )
        return response["Body"]

    def iter_bytes(self, key: str, chunk: int = READ_CHUNK) -> Iterator[bytes]:
        body = self.open(key)
        try:
            yield from body.iter_chunks(chunk)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"GET {self.url(key)}", self.endpoint) from exc
        finally:
            body.close()

    def digest(self, key: str, *, copy_to: Path | None = None) -> StoredObject:
        """Stream the object back and compute its size and SHA-256, writing it to ``copy_to``
        on the way when given (a download checked in the same pass)."""
        hasher = hashlib.sha256()
        size = 0
        with open(copy_to, "wb") if copy_to else contextlib.nullcontext() as out:
            for data in self.iter_bytes(key):
                hasher.update(data)
                size += len(data)
                if out:
                    out.write(data)
        return StoredObject(self.bucket, key, size, hasher.hexdigest())

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.iter_bytes(key))

    def get_with_metadata(self, key: str) -> tuple[bytes, dict[str, str]] | None:
        """The object's body and user metadata in one GET (a WAL fetch's one round trip), or
        None when it does not exist."""
        found = self._get_whole(key)
        return None if found is None else (found[0], dict(found[1].get("Metadata") or {}))

    def _get_whole(self, key: str) -> tuple[bytes, dict[str, Any]] | None:
        """The object's body and GET response, or None when it does not exist."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            return response["Body"].read(), response
        except ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise _translate(exc, f"GET {self.url(key)}", self.endpoint) from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"GET {self.url(key)}", self.endpoint) from exc

    def get_json(self, key: str) -> dict[str, Any]:
        data = self.get_bytes(key)
        try:
            parsed = json.loads(data)
        except json.JSONDecodeError as exc:
            raise DisasterRecoveryError(f"{self.url(key)}: not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise DisasterRecoveryError(f"{self.url(key)}: expected a JSON object")
        return parsed

    def list_keys(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Every object under ``prefix`` (dicts with Key, Size, LastModified)."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Contents", [])
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"LIST {self.url(prefix)}", self.endpoint) from exc

    # -- writing -------------------------------------------------------------------------

    def upload_stream(
        self,
        key: str,
        source: IO[bytes],
        *,
        at_eof: Callable[[], None] | None = None,
        metadata: dict[str, str] | None = None,
        content_type: str = "application/octet-stream",
    ) -> StoredObject:
        """Stream ``source`` into ``key`` (multipart above the chunk size), hashing on the way.

        If reading fails or ``at_eof`` raises, boto3 aborts the multipart upload: no object and
        no open upload is left behind.
        """
        reader = HashingReader(source, at_eof, part_size=self.transfer.multipart_chunksize)
        # S3 checks each part against its SHA-256 on receipt and keeps the object's checksum,
        # which later proves a copy without downloading it (StoredObject.s3_checksum).
        extra: dict[str, Any] = {
            "ContentType": content_type,
            "ChecksumAlgorithm": "SHA256",
            **self.write_args(key),
        }
        if metadata:
            extra["Metadata"] = metadata
        try:
            self.client.upload_fileobj(
                reader, self.bucket, key, ExtraArgs=extra, Config=self.transfer
            )
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"upload to {self.url(key)}", self.endpoint) from exc
        except Exception as exc:
            # boto3 wraps errors raised by our reader (a failed producer) in its own types.
            cause = exc
            while cause.__cause__ is not None or cause.__context__ is not None:
                if isinstance(cause, DisasterRecoveryError):
                    break
                cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
            if isinstance(cause, DisasterRecoveryError):
                raise cause from exc
            raise
        # Object Lock headers on a multipart upload are S3's contract, yet S3-compatible stores
        # (moto among them) drop them at completion: set the retention on the new version too.
        self._retain(key)
        return StoredObject(self.bucket, key, reader.size, reader.sha256, reader.s3_checksum)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> None:
        extra: dict[str, Any] = {"ContentType": content_type, **self.write_args(key)}
        if metadata:
            extra["Metadata"] = metadata
        self._call(
            f"PUT {self.url(key)}",
            self.client.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=data,
            **extra,
        )

    def put_json(self, key: str, document: dict[str, Any]) -> None:
        body = json.dumps(document, indent=2, sort_keys=True, default=str).encode()
        self.put_bytes(key, body, content_type="application/json")

    def put_if_absent(
        self,
        key: str,
        data: bytes,
        *,
        metadata: dict[str, str] | None = None,
        sha256: str | None = None,
    ) -> bool:
        """Write ``data`` unless the object exists. Returns True if written, False if an identical
        object was already there; raises :class:`ConflictError` for a different one. ``sha256``
        is the content's digest when ``data`` is an encoding of it (a compressed WAL segment):
        two encodings of one content are identical."""
        sha = sha256 or hashlib.sha256(data).hexdigest()
        existing = self.head(key)
        if existing is not None:
            if existing.get("Metadata", {}).get("sha256") == sha or self.digest(key).sha256 == sha:
                return False
            raise ConflictError(
                f"{self.url(key)} already exists with different content; refusing to overwrite"
            )
        self.put_bytes(key, data, metadata={**(metadata or {}), "sha256": sha})
        return True

    # -- conditional writes: one writer wins, the other learns it lost ---------------------

    def put_new(
        self, key: str, data: bytes, *, content_type: str = "application/json"
    ) -> str | None:
        """Create ``key`` only if no object has that name (``If-None-Match: *``): the new ETag,
        or None when one exists. Atomic in S3: of two runs creating one name, exactly one wins."""
        return self._conditional_put(key, data, content_type, IfNoneMatch="*")

    def replace_if(
        self, key: str, data: bytes, etag: str, *, content_type: str = "application/json"
    ) -> str | None:
        """Overwrite ``key`` only if it is still the version ``etag`` (``If-Match``): the new
        ETag, or None when another writer changed or removed it in between."""
        return self._conditional_put(key, data, content_type, IfMatch=etag)

    def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag (for a later :meth:`replace_if`), or None if absent."""
        found = self._get_whole(key)
        return None if found is None else (found[0], str(found[1]["ETag"]))

    def delete_if(self, key: str, etag: str) -> bool:
        """Delete ``key`` only if it is still the version ``etag``; False otherwise."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key, IfMatch=etag)
            return True
        except ClientError as exc:
            if _error_code(exc) in _LOST_RACE:
                return False
            raise _translate(exc, f"DELETE {self.url(key)}", self.endpoint) from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"DELETE {self.url(key)}", self.endpoint) from exc

    def _conditional_put(
        self, key: str, data: bytes, content_type: str, **condition: str
    ) -> str | None:
        try:
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                **self.encryption.write_args(),
                **condition,
            )
            return str(response["ETag"])
        except ClientError as exc:
            if _error_code(exc) in _LOST_RACE:
                return None
            raise _translate(exc, f"PUT {self.url(key)} ({condition})", self.endpoint) from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"PUT {self.url(key)}", self.endpoint) from exc

    def delete(self, keys: list[str]) -> int:
        """Delete ``keys``; returns how many went. With Object Lock every version goes, and a
        key still locked stays whole, listed in :attr:`locked` (never an error)."""
        if self.lock is not None:
            removed, locked = remove_versions(self, keys)
            self.locked.extend(locked)
            return removed
        deleted = 0
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            response = self._call(
                f"DELETE {len(batch)} objects in s3://{self.bucket}",
                self.client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": batch, "Quiet": True},
            )
            # DeleteObjects answers 200 and lists per key what it refused (a missing delete
            # right, an Object Lock): counting those as deleted would report a lie.
            refused = response.get("Errors") or []
            if refused:
                raise delete_refused(
                    self, refused, deleted_before=deleted + len(batch) - len(refused)
                )
            deleted += len(batch)
        return deleted

    def delete_versions(self, versions: list[tuple[str, str]]) -> None:
        """Delete these (key, version id) pairs, a thousand per request (a locked one makes S3
        refuse: raised)."""
        for start in range(0, len(versions), 1000):
            batch = [{"Key": key, "VersionId": v} for key, v in versions[start : start + 1000]]
            response = self._call(
                f"DELETE {len(batch)} object versions in s3://{self.bucket}",
                self.client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": batch, "Quiet": True},
            )
            refused = response.get("Errors") or []
            if refused:
                deleted = start + len(batch) - len(refused)
                raise delete_refused(self, refused, deleted_before=deleted)

    def copy_from(self, source: ObjectStore, key: str) -> StoredObject | None:
        """Copy ``key`` from another bucket (possibly another region), encrypted with this
        bucket's setting (a KMS key is the destination region's), then locked like any write of
        that key (a retention set on the new version: a copy request cannot carry the checksum
        S3 demands of a locking write).

        Server-side when both buckets are behind one S3 endpoint: one CopyObject up to 5 GB,
        parallel UploadPartCopy above, both asking S3 for the copy's SHA-256 (returns None:
        nothing passed through here). Buckets behind different endpoints (emulators, one per
        region) cannot copy server-side: the bytes stream through this process once, content
        type and metadata kept, and the returned object carries the SHA-256 taken on the way.
        """
        if source.endpoint.endpoint_url != self.endpoint.endpoint_url:
            return self._stream_copy(source, key)
        head = source.head(key)
        if head is None:
            raise NotFoundError(f"COPY {source.url(key)} -> {self.url(key)}: source not found")
        size = int(head.get("ContentLength", 0))
        if size <= self.copy_object_limit:
            self._call(
                f"COPY {source.url(key)} -> {self.url(key)}",
                self.client.copy_object,
                CopySource={"Bucket": source.bucket, "Key": key},
                Bucket=self.bucket,
                Key=key,
                ChecksumAlgorithm="SHA256",
                **self.encryption.write_args(),
            )
        else:
            self._copy_in_parts(source, key, head, size)
        self._retain(key)
        return None

    def _copy_in_parts(
        self, source: ObjectStore, key: str, head: Mapping[str, Any], size: int
    ) -> None:
        """UploadPartCopy, parts in parallel, at this store's part size (so the copy's composite
        checksum is the original upload's) unless that would exceed S3's 10,000 parts."""
        part = max(self.transfer.multipart_chunksize, -(-size // MAX_PARTS))
        what = f"COPY {source.url(key)} -> {self.url(key)} in parts"
        extra: dict[str, Any] = {
            "ContentType": head.get("ContentType") or "application/octet-stream"
        }
        if head.get("Metadata"):
            extra["Metadata"] = head["Metadata"]
        upload = self._call(
            what,
            self.client.create_multipart_upload,
            Bucket=self.bucket,
            Key=key,
            ChecksumAlgorithm="SHA256",
            **extra,
            **self.encryption.write_args(),
        )
        upload_id = upload["UploadId"]

        def copy_part(number: int) -> dict[str, Any]:
            first = (number - 1) * part
            result = self._call(
                f"{what} (part {number})",
                self.client.upload_part_copy,
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                CopySource={"Bucket": source.bucket, "Key": key},
                CopySourceRange=f"bytes={first}-{min(first + part, size) - 1}",
            )["CopyPartResult"]
            done = {"PartNumber": number, "ETag": result["ETag"]}
            if result.get("ChecksumSHA256"):
                done["ChecksumSHA256"] = result["ChecksumSHA256"]
            return done

        try:
            with ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="dr-copy") as pool:
                parts = list(pool.map(copy_part, range(1, -(-size // part) + 1)))
            self._call(
                what,
                self.client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with contextlib.suppress(DisasterRecoveryError):
                self.abort_upload(key, upload_id)
            raise

    def stored_checksum(self, key: str) -> tuple[int, str | None] | None:
        """The object's size and the SHA-256 checksum S3 keeps of it (None when it was written
        without one), or None when the object does not exist."""
        head = self.head(key, checksum=True)
        if head is None:
            return None
        return int(head.get("ContentLength", -1)), head.get("ChecksumSHA256")

    def _retain(self, key: str) -> None:
        """Lock the newest version of ``key`` until its retain-until date (from now: only ever
        later than a date the write itself carried, which S3 allows in every mode)."""
        until = self.lock.retain_until(key) if self.lock else None
        if self.lock is not None and until is not None:
            self._call(
                f"LOCK {self.url(key)}",
                self.client.put_object_retention,
                Bucket=self.bucket,
                Key=key,
                Retention={"Mode": self.lock.mode.upper(), "RetainUntilDate": until},
            )

    def _stream_copy(self, source: ObjectStore, key: str) -> StoredObject:
        head = source.head(key)
        if head is None:
            raise NotFoundError(f"COPY {source.url(key)} -> {self.url(key)}: source not found")
        body = source.open(key)
        try:
            return self.upload_stream(
                key,
                body,
                metadata=head.get("Metadata") or None,
                content_type=head.get("ContentType") or "application/octet-stream",
            )
        finally:
            body.close()

    def open_multipart_uploads(self, prefix: str = "") -> list[str]:
        return [upload["Key"] for upload in self.multipart_uploads(prefix)]

    def multipart_uploads(self, prefix: str = "") -> list[dict[str, Any]]:
        """Multipart uploads begun and never completed nor aborted (Key, UploadId, Initiated)."""
        paginator = self.client.get_paginator("list_multipart_uploads")
        try:
            return [
                upload
                for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
                for upload in page.get("Uploads", [])
            ]
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"LIST uploads in s3://{self.bucket}", self.endpoint) from exc

    def abort_upload(self, key: str, upload_id: str) -> None:
        self._call(
            f"ABORT upload of {self.url(key)}",
            self.client.abort_multipart_upload,
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
        )

    def ensure_bucket(self) -> None:
        """Create the bucket if missing (sandbox and tests; real buckets come from IaC), with
        Object Lock (and so versioning) when the store locks its objects."""
        if self.bucket_exists():
            return
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.lock is not None:
            kwargs["ObjectLockEnabledForBucket"] = True
        if self.endpoint.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.endpoint.region}
        self._call(f"CREATE s3://{self.bucket}", self.client.create_bucket, **kwargs)

    def bucket_exists(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                return False
            raise _translate(exc, f"HEAD s3://{self.bucket}", self.endpoint) from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"HEAD s3://{self.bucket}", self.endpoint) from exc


# -- versioned buckets under Object Lock ---------------------------------------------------------


def versions_of(store: ObjectStore, key: str) -> list[dict[str, Any]]:
    """Every version and delete marker of exactly ``key``."""
    return versions_by_key(store, [key])[key]


def versions_by_key(store: ObjectStore, keys: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every version and delete marker of each of ``keys``: one listing per folder, under the
    common prefix of its keys there (a day of WAL segments shares most of its name), instead of
    one per key. S3 lists by prefix only, and a listing per key made a retention run of a
    thousand segments cost a thousand round trips before any HEAD."""
    found: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
    folders: dict[str, list[str]] = {}
    for key in found:
        folders.setdefault(key.rpartition("/")[0], []).append(key)
    paginator = store.client.get_paginator("list_object_versions")
    for names in folders.values():
        # Character by character on purpose: S3 prefixes are strings, not path components.
        prefix = os.path.commonprefix(names)  # noqa: RUF071
        try:
            for page in paginator.paginate(Bucket=store.bucket, Prefix=prefix):
                for entry in page.get("Versions", []) + page.get("DeleteMarkers", []):
                    if entry["Key"] in found:
                        found[entry["Key"]].append(entry)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"LIST versions {store.url(prefix)}", store.endpoint) from exc
    return found


def locked_keys(
    store: ObjectStore, versions: dict[str, list[dict[str, Any]]]
) -> dict[str, datetime]:
    """Of the keys in ``versions`` (:func:`versions_by_key`), those with a version still under
    Object Lock now, with the latest retain-until date. The date is only in each version's
    HEAD, so those run :data:`LOCK_CHECK_THREADS` at a time."""
    now = datetime.now(UTC)
    pairs = [(key, v["VersionId"]) for key, found in versions.items() for v in found if "ETag" in v]

    def retain_until(pair: tuple[str, str]) -> datetime | None:
        key, version = pair
        head = store._call(
            f"HEAD {store.url(key)} version {version}",
            store.client.head_object,
            Bucket=store.bucket,
            Key=key,
            VersionId=version,
        )
        return head.get("ObjectLockRetainUntilDate")

    locked: dict[str, datetime] = {}
    with ThreadPoolExecutor(max_workers=LOCK_CHECK_THREADS) as pool:
        for (key, _), until in zip(pairs, pool.map(retain_until, pairs), strict=True):
            if until is not None and until > now and (key not in locked or until > locked[key]):
                locked[key] = until
    return locked


def remove_versions(store: ObjectStore, keys: list[str]) -> tuple[int, list[Locked]]:
    """Delete every version of each key whose lock has passed; keys with a version still
    locked are left whole and returned. Returns (keys removed, keys locked)."""
    versions = versions_by_key(store, keys)
    held = locked_keys(store, versions)
    locked = [Locked(key, store.endpoint.region, until) for key, until in held.items()]
    doomed = {key: found for key, found in versions.items() if found and key not in held}
    store.delete_versions([(key, v["VersionId"]) for key, found in doomed.items() for v in found])
    if locked:
        log.warning(
            "left %d object(s) under Object Lock in %s: %s",
            len(locked),
            store.url(""),
            ", ".join(f"{item.key} until {item.until.isoformat()}" for item in locked[:5]),
        )
    return len(doomed), locked


def regional_store(deployment: Deployment, region: str, *, client: Any = None) -> ObjectStore:
    """The backup bucket of ``region``, reached through that region's AWS Connection (or
    ``client``, for callers that need other timeouts), with the encryption and Object Lock the
    settings name for it: how every procedure gets a bucket."""
    from disaster_recovery.clients.object_lock import lock_policy

    storage = deployment.settings.storage
    return ObjectStore(
        deployment.aws(region),
        deployment.settings.bucket(region),
        chunk_mib=storage.multipart_chunk_mib,
        encryption=storage.encryption_for(region),
        lock=lock_policy(deployment.settings),
        client=client,
    )


def region_lost(store: ObjectStore, key: str) -> str | None:
    """Why ``store``'s S3 cannot be reached now, or None when it answers: a lost region's copy
    is owed instead of failing the backup in the region that survives. Asked with a HEAD of
    ``key`` (the object about to be copied), which least-privilege roles may do; a refusal
    (403) is not a lost region and surfaces at the copy itself."""
    try:
        store.head(key)
    except UnavailableError as exc:
        return str(exc).splitlines()[0]
    return None
