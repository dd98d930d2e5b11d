"""What retention keeps and which WAL file a position lives in: pure decisions, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from careflow.dr.backup import Kept, archived, expired, removable_wal, wal_name


def test_a_position_lives_in_the_segment_its_16_mib_block_names() -> None:
    assert wal_name("0/2000028", 1) == "000000010000000000000002"
    assert wal_name("1/FF000000", 2) == "0000000200000001000000FF"
    assert wal_name("2/0", 3) == "000000030000000200000000"


def test_the_newest_complete_backups_are_kept_the_rest_expire() -> None:
    t = datetime(2026, 12, 1, 2, 30, tzinfo=UTC)
    backups = [Kept(f"b{i}", t + timedelta(days=i), f"00000001000000000000000{i}") for i in range(5)]
    kept, old = expired(backups[::-1][1:] + backups[-1:], keep=2)  # any order in
    assert [b.backup_id for b in kept] == ["b4", "b3"] and [b.backup_id for b in old] == ["b2", "b1", "b0"]
    assert expired(backups, keep=9) == (sorted(backups, key=lambda b: b.finished_at, reverse=True), [])


def test_wal_before_the_oldest_kept_backup_goes_on_every_timeline_histories_stay() -> None:
    names = [
        "000000010000000000000001",
        "000000010000000000000002.00000028.backup",
        "000000010000000000000003",
        "00000002.history",
        "000000020000000000000003",
        "000000020000000000000004",
    ]
    assert removable_wal(names, "000000020000000000000003") == [
        "000000010000000000000001",
        "000000010000000000000002.00000028.backup",
    ]
    assert removable_wal(names, "000000010000000000000001") == []


def test_only_finished_wal_files_count_as_archived(tmp_path: Path) -> None:
    for name in [
        "000000010000000000000001",
        "000000010000000000000002.part",
        "00000002.history",
        "notes.txt",
    ]:
        (tmp_path / name).write_text("x")
    assert [p.name for p in archived(tmp_path)] == ["000000010000000000000001", "00000002.history"]
    assert archived(tmp_path / "absent") == []
