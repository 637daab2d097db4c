"""What one region's WAL archive lacks while that region's S3 is gone, and filling it back.

``dr wal push`` succeeds once a file is stored in at least one region: PostgreSQL's archiver
must never stop (and ``pg_wal`` grow until the disk is full) because one region is lost. For
each region that did not get the file, a *debt* marker is written next to the copy that exists::

    <prefix>/postgresql_wal/_debt/<lacking region>/<file name>   (JSON: sha256, since)

When the region answers again, :func:`fill_missing` (the WAL DAG's first task) copies each owed
file from the region that holds it, checks its SHA-256 in the region that lacked it, and only
then deletes the marker. Until then :func:`replica_debt` says how many files each region lacks
and since when (the ``WALReplicaBehind`` alert).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from typing import Any

from disaster_recovery.errors import (
    DisasterRecoveryError,
    PermanentError,
    VerificationError,
    WalCorruptError,
)
from disaster_recovery.wal.archive import WalArchive, debt_prefix

log = logging.getLogger(__name__)


def _debts_in(archive: WalArchive, region: str) -> list[dict[str, Any]]:
    """The debt markers stored in ``region`` (files it holds that another region lacks)."""
    prefix = debt_prefix(archive.prefix)
    found = []
    for item in archive.store(region).list_keys(prefix):
        lacking, _, name = item["Key"][len(prefix) :].partition("/")
        if name:
            found.append(
                {
                    "key": item["Key"],
                    "file": name,
                    "lacking": lacking,
                    "held_in": region,
                    "recorded_at": item["LastModified"],
                }
            )
    return found


def owed_files(archive: WalArchive) -> dict[str, set[str]]:
    """Per lacking region, the names of the files it is owed (from every readable region)."""
    owed: dict[str, set[str]] = {}
    for region in archive.regions:
        try:
            debts = _debts_in(archive, region)
        except DisasterRecoveryError:
            continue
        for debt in debts:
            owed.setdefault(debt["lacking"], set()).add(debt["file"])
    return owed


class ReplicaBehind(PermanentError):
    """A region's WAL archive lacks files pushed while it was down (alert WALReplicaBehind)."""


def raise_if_behind(result: dict[str, Any]) -> None:
    behind = result.get("behind") or {}
    if behind:
        raise ReplicaBehind(
            "; ".join(
                f"{region}'s WAL archive lacks {facts['files']} file(s) since {facts['since']} "
                f"(oldest {facts['oldest']})"
                for region, facts in sorted(behind.items())
            )
            + ": they are archived in the other region and are copied when this one answers"
            + (f" (waiting: {result['waiting']})" if result.get("waiting") else "")
        )


def replica_debt(archive: WalArchive) -> dict[str, Any]:
    """Per lacking region: how many files, the oldest since when; and which regions could not
    be read. A file owed by markers in both regions counts once."""
    owed: dict[str, dict[str, datetime]] = {}
    unreadable: dict[str, str] = {}
    for region in archive.regions:
        try:
            debts = _debts_in(archive, region)
        except DisasterRecoveryError as exc:
            unreadable[region] = str(exc).splitlines()[0]
            continue
        for debt in debts:
            files = owed.setdefault(debt["lacking"], {})
            when = debt["recorded_at"]
            files[debt["file"]] = min(when, files.get(debt["file"], when))
    regions = {
        region: {
            "files": len(files),
            "since": min(files.values()).isoformat(),
            "oldest": min(files, key=lambda name: files[name]),
        }
        for region, files in owed.items()
        if files
    }
    return {"behind": regions, "unreadable": unreadable}


def fill_missing(archive: WalArchive) -> dict[str, Any]:
    """Copy every owed file to the region that lacks it, when that region answers: read from the
    holder with its SHA-256 checked, write, read back and check again, then drop the marker."""
    copied: dict[str, list[str]] = {}
    waiting: dict[str, str] = {}
    for holder in archive.regions:
        try:
            debts = _debts_in(archive, holder)
        except DisasterRecoveryError as exc:
            waiting[holder] = f"cannot list its debts: {str(exc).splitlines()[0]}"
            continue
        for debt in debts:
            lacking = debt["lacking"]
            if lacking in waiting or lacking not in archive.regions:
                continue
            try:
                _copy_one(archive, holder, lacking, debt["file"])
            except VerificationError:
                raise
            except DisasterRecoveryError as exc:
                waiting[lacking] = str(exc).splitlines()[0]
                continue
            archive.store(holder).delete([debt["key"]])
            copied.setdefault(lacking, []).append(debt["file"])
    return {
        "copied": {region: sorted(names) for region, names in copied.items()},
        "waiting": waiting,
        **replica_debt(archive),
    }


def _copy_one(archive: WalArchive, holder: str, lacking: str, name: str) -> None:
    # Checked against the SHA-256 of the push, then copied as stored (compressed, metadata).
    data, stored, metadata = archive._read_stored(holder, name)
    sha256 = hashlib.sha256(data).hexdigest()
    target = archive.store(lacking)
    key = archive.key(name)
    # An identical copy already there is fine (it may be stored in another codec).
    target.put_if_absent(key, stored, sha256=sha256, metadata=metadata)
    try:  # read back as restore_command will: decoded, checked against its own metadata
        copied = hashlib.sha256(archive._read_verified(lacking, name)).hexdigest()
    except WalCorruptError as exc:
        copied = f"(unreadable: {str(exc).splitlines()[0]})"
    if copied != sha256:
        raise VerificationError(
            f"{target.url(key)}: SHA-256 {copied} after filling the gap, expected {sha256}; "
            "the copy is not trusted, find out what wrote it",
            check="wal_replica",
            key=key,
        )
    log.info("filled %s in %s from %s", name, lacking, holder)
