"""The backup store, both kinds, for real: a folder (the embedded default) and an S3-API store
(SeaweedFS over HTTP, through boto3).  An object goes in whole with its SHA-256 and version; a full
disk leaves nothing partial and nothing earlier touched."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from careflow.config import Settings
from careflow.dr.store import BackupStore, FolderStore, S3Store, StoreFull, open_store, sha256_file
from tests.support.s3_server import s3_server


@pytest.fixture(scope="module")
def s3_endpoint(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch
) -> Iterator[str]:
    monkeypatch_module.setenv("AWS_ACCESS_KEY_ID", "careflow-test")
    monkeypatch_module.setenv("AWS_SECRET_ACCESS_KEY", "careflow-test-secret")
    monkeypatch_module.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with s3_server(tmp_path_factory.mktemp("seaweedfs")) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _bucket(endpoint: str, versioned: bool) -> str:
    name = f"careflow-backups-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@pytest.fixture(
    params=["folder", pytest.param("s3", marks=pytest.mark.stack)]
)  # s3: a server (not `make unit`)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BackupStore:
    if request.param == "folder":
        return FolderStore(tmp_path / "backups")
    endpoint = request.getfixturevalue("s3_endpoint")
    return S3Store(f"s3://{_bucket(endpoint, versioned=True)}/site-a", endpoint)


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_an_object_goes_in_whole_with_its_checksum_and_comes_back_the_same(
    store: BackupStore, tmp_path: Path
) -> None:
    data = b"base backup bytes " * 200_000  # 3.6 MB: several chunks, a multipart upload on S3
    put = store.put("full/b1/base.tar.gz", _file(tmp_path / "src", data))
    assert put.sha256 == hashlib.sha256(data).hexdigest() and put.size == len(data) and put.version
    store.get("full/b1/base.tar.gz", put.version, tmp_path / "back")
    assert sha256_file(tmp_path / "back") == (put.sha256, len(data))
    store.put("wal/000000010000000000000001", _file(tmp_path / "w", b"wal"))
    assert store.keys() == ["full/b1/base.tar.gz", "wal/000000010000000000000001"]
    assert store.keys("wal/") == ["wal/000000010000000000000001"]
    store.delete("full/b1/base.tar.gz", put.version)
    assert store.keys() == ["wal/000000010000000000000001"]
    with pytest.raises(ValueError, match="not a backup object key"):
        store.put("../outside", tmp_path / "w")


def test_a_versioned_bucket_keeps_each_version_of_a_key(s3_endpoint: str, tmp_path: Path) -> None:
    store = S3Store(f"s3://{_bucket(s3_endpoint, versioned=True)}", s3_endpoint)
    first = store.put("full/b1/manifest.json", _file(tmp_path / "a", b"first"))
    second = store.put("full/b1/manifest.json", _file(tmp_path / "b", b"second"))
    assert first.version != second.version
    store.get("full/b1/manifest.json", first.version, tmp_path / "old")
    assert (tmp_path / "old").read_bytes() == b"first"  # an overwrite never loses the earlier object
    assert store.where.startswith("s3://careflow-backups-")


def test_the_configured_store_is_a_folder_under_home_unless_told_otherwise(tmp_path: Path) -> None:
    assert isinstance(s := open_store(Settings(home=tmp_path)), FolderStore)
    assert s.where == str((tmp_path / "backups").resolve())
    assert isinstance(open_store(Settings(backup_store=str(tmp_path / "nas"))), FolderStore)
    s3 = open_store(
        Settings(backup_store="s3://hospital-dr/careflow", backup_s3_endpoint_url="http://127.0.0.1:1")
    )
    assert isinstance(s3, S3Store) and s3.where == "s3://hospital-dr/careflow"


def test_a_full_disk_leaves_no_partial_object_and_every_earlier_one_intact(tmp_path: Path) -> None:
    """A real full filesystem: a 2 MiB tmpfs (root, as the embedded stack runs here and in CI)."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        store = FolderStore(mount)
        kept = store.put("full/b1/base.tar.gz", _file(tmp_path / "one", b"x" * 1_200_000))
        with pytest.raises(StoreFull, match=r"is full writing full/b2/base\.tar\.gz"):
            store.put("full/b2/base.tar.gz", _file(tmp_path / "two", b"y" * 1_200_000))
        assert store.keys() == ["full/b1/base.tar.gz"]
        assert not [p for p in mount.rglob("*") if p.is_file() and p.name.startswith(".")]  # no partial
        assert sha256_file(mount / "full/b1/base.tar.gz") == (kept.sha256, kept.size)
    finally:
        subprocess.run(["umount", str(mount)], check=True)
