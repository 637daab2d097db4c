"""Keep a sandbox region's S3 objects across its loss.

Real S3 is durable: a region that goes down comes back with its objects. moto keeps objects in
memory and loses them when its process dies, so ``kill-region`` saves every bucket's objects
(body, content type, user metadata, server-side encryption) through the S3 API into a folder before it kills that
region's moto server, and ``revive-region`` puts them back into the new server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from disaster_recovery.clients.s3 import ObjectStore, s3_client
from disaster_recovery.config.endpoints import AwsEndpoint

INDEX = "index.json"


def save_objects(endpoint: AwsEndpoint, folder: Path) -> int:
    """Every object of every bucket behind ``endpoint`` into ``folder``; returns the count."""
    client = s3_client(endpoint)
    folder.mkdir(parents=True, exist_ok=True)
    index: list[dict[str, Any]] = []
    for bucket in client.list_buckets().get("Buckets", []):
        store = ObjectStore(endpoint, bucket["Name"], client=client)
        index.append({"bucket": store.bucket, "key": None})
        for item in store.list_keys(""):
            head = store.head(item["Key"]) or {}
            body = folder / f"{len(index):08d}.bin"
            store.digest(item["Key"], copy_to=body)
            index.append(
                {
                    "bucket": store.bucket,
                    "key": item["Key"],
                    "file": body.name,
                    "content_type": head.get("ContentType") or "application/octet-stream",
                    "metadata": head.get("Metadata") or {},
                    # Kept as written: a revived region's objects are as encrypted as before.
                    "encryption": {
                        name: head[name]
                        for name in ("ServerSideEncryption", "SSEKMSKeyId")
                        if head.get(name)
                    },
                }
            )
    (folder / INDEX).write_text(json.dumps(index))
    return sum(1 for entry in index if entry["key"] is not None)


def restore_objects(endpoint: AwsEndpoint, folder: Path) -> int:
    """Recreate the buckets and objects :func:`save_objects` kept; returns the object count."""
    client = s3_client(endpoint)
    restored = 0
    stores: dict[str, ObjectStore] = {}
    for entry in json.loads((folder / INDEX).read_text()):
        bucket = entry["bucket"]
        if bucket not in stores:
            stores[bucket] = ObjectStore(endpoint, bucket, client=client)
            stores[bucket].ensure_bucket()
        if entry["key"] is None:
            continue
        client.upload_file(
            str(folder / entry["file"]),
            bucket,
            entry["key"],
            ExtraArgs={
                "ContentType": entry["content_type"],
                "Metadata": entry["metadata"],
                **entry.get("encryption", {}),
            },
            Config=stores[bucket].transfer,
        )
        restored += 1
    return restored
