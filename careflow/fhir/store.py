"""The sandbox's FHIR R4 store over Postgres JSONB (migration 0002_fhir_store.sql).

Every write — a single create/update/delete as much as a transaction Bundle — runs through
`FhirStore.write`: one database transaction that

1. takes transaction-scoped advisory locks, in sorted order, on every conditional-create criteria and
   every resource addressed by id (PUT/DELETE), so that concurrent conditional creates with the same
   criteria serialise and the second one *finds* the first (READ COMMITTED: each statement after the
   lock sees the lock holder's commit); sorted order keeps two bundles from deadlocking each other;
2. resolves entries in the FHIR order DELETE, POST, PUT (conditional matches, If-Match versions,
   `urn:uuid:` fullUrls -> `Type/id`), then rewrites references, then writes all versions, identifiers
   and date ranges with a handful of set-based statements; then GET entries read;
3. raises `FhirRequestError` on the first bad entry, which rolls everything back (all-or-nothing).

Stored JSON is the client's own (validated, plus id and meta), with decimals kept digit for digit.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import asyncpg

from careflow.fhir.outcome import Issue
from careflow.fhir.resources import (
    ID_RE,
    InvalidResource,
    dumps,
    is_resource_type,
    loads,
    validate_resource,
)
from careflow.fhir.search import Query, SearchError, index_rows, parse_query

T = TypeVar("T")

# The resource as served: resourceType first, then the stored JSONB's members.
DOC_SQL = (
    "'{\"resourceType\":' || to_json(r.resource_type)::text || ','"
    " || substr((r.resource - 'resourceType')::text, 2)"
)
_DB_RETRIES = 3
_SERVER_META = ("versionId", "lastUpdated")


class FhirRequestError(Exception):
    """A request the store refuses: HTTP status + OperationOutcome issues."""

    def __init__(self, status: int, issues: list[Issue]) -> None:
        self.status = status
        self.issues = issues
        super().__init__(f"{status}: " + "; ".join(i.location_summary() for i in issues))


def request_error(status: int, code: str, diagnostics: str, where: str = "") -> FhirRequestError:
    return FhirRequestError(status, [Issue(code, diagnostics, (where,) if where else ())])


def instant(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def etag(version_id: int) -> str:
    return f'W/"{version_id}"'


@dataclass(frozen=True)
class Stored:
    """One version of a resource as stored; `doc` is its JSON text (None for a deletion)."""

    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    doc: str | None
    method: str = "PUT"

    @property
    def location(self) -> str:
        return f"{self.resource_type}/{self.id}/_history/{self.version_id}"


@dataclass
class Entry:
    """One interaction of a write request: a Bundle entry, or a single create/update/delete."""

    method: str  # GET | POST | PUT | DELETE
    rtype: str
    rid: str | None = None
    criteria: list[tuple[str, str]] | None = None  # conditional PUT/DELETE url, or a GET search
    resource: dict[str, Any] | None = None
    full_url: str | None = None
    if_none_exist: list[tuple[str, str]] | None = None
    if_match: int | None = None
    where: str = ""  # FHIRPath of the entry in its Bundle ("" for a single interaction)


@dataclass
class Result:
    status: int
    stored: Stored | None = None
    outcome: list[Issue] | None = None
    target: tuple[str, str] | None = None  # (type, id) the entry resolved to, when not yet `stored`


@dataclass
class _Write:
    entry: Entry
    rtype: str
    rid: str
    version_id: int
    method: str
    resource: dict[str, Any] | None  # None for a delete
    fresh: bool  # a brand-new id: nothing to clear in the index tables
    status: int


@dataclass
class _Tx:
    now: datetime
    full_urls: dict[str, str] = field(default_factory=dict)  # fullUrl -> "Type/id"
    claimed: set[tuple[str, str]] = field(default_factory=set)
    conditional: dict[tuple[str, str], str] = field(default_factory=dict)  # criteria -> id (this Bundle)
    prefetched: dict[tuple[str, str], list[Stored]] = field(default_factory=dict)  # criteria -> matches


def lock_key(*parts: str) -> int:
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _canonical(items: list[tuple[str, str]]) -> str:
    return urlencode(sorted(items))


def parse_criteria(text: str, where: str) -> list[tuple[str, str]]:
    items = parse_qsl(text.lstrip("?"), keep_blank_values=True)
    if not items:
        raise request_error(400, "invalid", "conditional criteria are empty", where)
    return items


def parse_version(value: str | None, where: str) -> int | None:
    """`W/"3"`, `"3"` or `3` -> 3."""
    if value is None:
        return None
    v = value.strip().removeprefix("W/").strip('"')
    if not v.isdigit():
        raise request_error(400, "invalid", 'If-Match must be a version, e.g. W/"3"', where)
    return int(v)


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource without its server-maintained meta, to tell a no-op update."""
    out = dict(resource)
    meta = {k: v for k, v in (out.pop("meta", None) or {}).items() if k not in _SERVER_META}
    if meta:
        out["meta"] = meta
    return out


class FhirStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # -- reads -------------------------------------------------------------------------------------
    async def read(self, rtype: str, rid: str) -> Stored:
        row = await self._pool.fetchrow(
            f"SELECT r.version_id, r.last_updated, r.deleted, {DOC_SQL} AS doc FROM fhir_resources r"  # noqa: S608
            " WHERE r.resource_type = $1 AND r.id = $2",
            rtype,
            rid,
        )
        if row is None:
            raise request_error(404, "not-found", f"{rtype}/{rid} is not known")
        if row["deleted"]:
            raise request_error(410, "deleted", f"{rtype}/{rid} was deleted")
        return Stored(rtype, rid, row["version_id"], row["last_updated"], row["doc"])

    async def vread(self, rtype: str, rid: str, version_id: int) -> Stored:
        row = await self._pool.fetchrow(
            f"SELECT r.last_updated, r.method, {DOC_SQL} AS doc FROM fhir_resource_history r"  # noqa: S608
            " WHERE r.resource_type = $1 AND r.id = $2 AND r.version_id = $3",
            rtype,
            rid,
            version_id,
        )
        if row is None:
            raise request_error(404, "not-found", f"{rtype}/{rid} has no version {version_id}")
        if row["doc"] is None:
            raise request_error(410, "deleted", f"version {version_id} of {rtype}/{rid} is a deletion")
        return Stored(rtype, rid, version_id, row["last_updated"], row["doc"], row["method"])

    async def history(self, rtype: str, rid: str, count: int, offset: int) -> tuple[int, list[Stored]]:
        rows = await self._pool.fetch(
            f"SELECT r.version_id, r.last_updated, r.method, {DOC_SQL} AS doc,"  # noqa: S608
            " count(*) OVER () AS total FROM fhir_resource_history r"
            " WHERE r.resource_type = $1 AND r.id = $2 ORDER BY r.version_id DESC LIMIT $3 OFFSET $4",
            rtype,
            rid,
            count,
            offset,
        )
        if not rows and offset == 0:
            raise request_error(404, "not-found", f"{rtype}/{rid} is not known")
        total = (
            rows[0]["total"]
            if rows
            else await self._pool.fetchval(
                "SELECT count(*) FROM fhir_resource_history WHERE resource_type = $1 AND id = $2", rtype, rid
            )
        )
        return total, [
            Stored(rtype, rid, r["version_id"], r["last_updated"], r["doc"], r["method"]) for r in rows
        ]

    async def search(self, q: Query) -> tuple[int, list[Stored]]:
        return await self._search(self._pool, q)

    @staticmethod
    async def _search(db: asyncpg.Pool | asyncpg.Connection, q: Query) -> tuple[int, list[Stored]]:
        where = " AND ".join(["r.resource_type = $1", "NOT r.deleted", *q.where])
        args = q.args
        order = ", ".join([*q.order, "r.id"])
        n = len(args)
        rows = await db.fetch(
            f"SELECT r.id, r.version_id, r.last_updated, {DOC_SQL} AS doc, count(*) OVER () AS total"  # noqa: S608
            f" FROM fhir_resources r WHERE {where} ORDER BY {order} LIMIT ${n + 1} OFFSET ${n + 2}",
            *args,
            q.count,
            q.offset,
        )
        if rows:
            total = rows[0]["total"]
        elif q.offset == 0:
            total = 0
        else:  # a page past the end: count with the same statement (its arguments include _sort's)
            total = await db.fetchval(
                f"SELECT count(*) OVER () FROM fhir_resources r WHERE {where} ORDER BY {order} LIMIT 1",  # noqa: S608
                *args,
            )
            total = total or 0
        return total, [Stored(q.rtype, r["id"], r["version_id"], r["last_updated"], r["doc"]) for r in rows]

    # -- writes ------------------------------------------------------------------------------------
    async def write(self, entries: list[Entry]) -> list[Result]:
        """All entries in one database transaction; the first error rolls back all of them."""
        return await self._atomic(lambda conn: self._transaction(conn, entries))

    async def write_each(self, entries: list[Entry]) -> list[Result]:
        """Batch semantics: each entry in its own transaction; a failure is that entry's result."""
        results = []
        for entry in entries:
            try:
                [res] = await self.write([entry])
            except FhirRequestError as exc:
                res = Result(exc.status, outcome=exc.issues)
            results.append(res)
        return results

    async def _atomic(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        for attempt in range(1, _DB_RETRIES + 1):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    return await fn(conn)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                if attempt == _DB_RETRIES:
                    raise request_error(
                        409, "transient", "the write conflicted with a concurrent one; retry"
                    ) from None
        raise AssertionError("unreachable")

    async def _transaction(self, conn: asyncpg.Connection, entries: list[Entry]) -> list[Result]:
        tx = _Tx(now=datetime.now(UTC))
        await self._lock(conn, entries)
        await self._prefetch_identifier_matches(conn, tx, entries)
        results: dict[int, Result] = {}
        writes: list[_Write] = []
        order = {"DELETE": 0, "POST": 1, "PUT": 2}
        writes_first = sorted(
            (i for i, e in enumerate(entries) if e.method != "GET"), key=lambda i: order[entries[i].method]
        )
        for i in writes_first:
            entry = entries[i]
            if entry.method == "DELETE":
                w = await self._plan_delete(conn, tx, entry)
            elif entry.method == "POST":
                w = await self._plan_create(conn, tx, entry)
            else:
                w = await self._plan_update(conn, tx, entry)
            if isinstance(w, Result):
                results[i] = w
            else:
                writes.append(w)
                results[i] = Result(w.status, target=(w.rtype, w.rid))
        for w in writes:
            if w.resource is not None:
                await self._resolve_references(conn, tx, w)
        stored = await self._store(conn, tx, writes)
        for res in results.values():
            if res.stored is None and res.target is not None:
                res.stored = stored.get(res.target) or await self._fetch(conn, *res.target)
        for i, entry in enumerate(entries):
            if entry.method == "GET":
                results[i] = Result(200, await self._get(conn, entry))
        return [results[i] for i in range(len(entries))]

    async def _lock(self, conn: asyncpg.Connection, entries: list[Entry]) -> None:
        keys = set()
        for e in entries:
            if e.method == "POST" and e.if_none_exist is not None:
                keys.add(lock_key("if-none-exist", e.rtype, _canonical(e.if_none_exist)))
            elif e.method in ("PUT", "DELETE"):
                if e.rid is not None:
                    keys.add(lock_key("id", e.rtype, e.rid))
                elif e.criteria is not None:
                    keys.add(lock_key("if-none-exist", e.rtype, _canonical(e.criteria)))
                    if e.resource is not None and isinstance(e.resource.get("id"), str):
                        keys.add(lock_key("id", e.rtype, e.resource["id"]))
        if keys:
            # unnest yields the sorted array in order: every writer takes its locks in one global order.
            await conn.execute(
                "SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k", sorted(keys)
            )

    async def _prefetch_identifier_matches(
        self, conn: asyncpg.Connection, tx: _Tx, entries: list[Entry]
    ) -> None:
        """Conditional creates on `identifier=system|value` (nearly all of them) looked up in one query
        driven by the identifier index, instead of one search each: loading a Bundle stays linear even
        before the planner has statistics of freshly loaded tables."""
        wanted: list[tuple[str, str, str]] = []
        for e in entries:
            crit = e.if_none_exist if e.method == "POST" else None
            if (
                crit
                and len(crit) == 1
                and crit[0][0] == "identifier"
                and not any(c in crit[0][1] for c in ",\\")
            ):
                system, sep, value = crit[0][1].partition("|")
                if sep and system and value:
                    wanted.append((e.rtype, system, value))
        if not wanted:
            return
        rows = await conn.fetch(
            f"""SELECT c.n, r.id, r.version_id, r.last_updated, {DOC_SQL} AS doc
                FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS c(t, s, v, n)
                JOIN fhir_identifiers i ON i.resource_type = c.t AND i.system = c.s AND i.value = c.v
                JOIN fhir_resources r ON r.resource_type = i.resource_type AND r.id = i.id
                WHERE NOT r.deleted ORDER BY c.n, r.id""",  # noqa: S608
            *(list(col) for col in zip(*wanted, strict=True)),
        )
        found: dict[int, dict[str, Stored]] = {}
        for row in rows:
            rtype = wanted[row["n"] - 1][0]
            found.setdefault(row["n"], {})[row["id"]] = Stored(
                rtype, row["id"], row["version_id"], row["last_updated"], row["doc"]
            )
        for n, (rtype, system, value) in enumerate(wanted, start=1):
            key = (rtype, _canonical([("identifier", f"{system}|{value}")]))
            tx.prefetched[key] = list(found.get(n, {}).values())

    async def _matches(
        self, conn: asyncpg.Connection, rtype: str, criteria: list[tuple[str, str]], where: str
    ) -> list[Stored]:
        try:
            q = parse_query(rtype, criteria, criteria_only=True)
        except SearchError as exc:
            raise FhirRequestError(
                400, [Issue(i.code, i.diagnostics, (where,)) for i in exc.issues]
            ) from None
        q.count, q.order = 2, ["r.id"]
        return (await self._search(conn, q))[1]

    def _claim(self, tx: _Tx, entry: Entry, rtype: str, rid: str) -> None:
        if (rtype, rid) in tx.claimed:
            raise request_error(
                400, "invalid", f"{rtype}/{rid} is the target of two entries of this Bundle", entry.where
            )
        tx.claimed.add((rtype, rid))

    async def _current(self, conn: asyncpg.Connection, rtype: str, rid: str) -> asyncpg.Record | None:
        return await conn.fetchrow(
            "SELECT version_id, deleted, resource::text AS doc FROM fhir_resources"
            " WHERE resource_type = $1 AND id = $2 FOR UPDATE",
            rtype,
            rid,
        )

    async def _plan_delete(self, conn: asyncpg.Connection, tx: _Tx, entry: Entry) -> _Write | Result:
        rid = entry.rid
        if rid is None:
            assert entry.criteria is not None
            found = await self._matches(conn, entry.rtype, entry.criteria, entry.where)
            if len(found) > 1:
                raise request_error(
                    412, "multiple-matches", "the delete criteria match more than one resource", entry.where
                )
            if not found:
                return Result(204)
            rid = found[0].id
        self._claim(tx, entry, entry.rtype, rid)
        cur = await self._current(conn, entry.rtype, rid)
        if cur is None or cur["deleted"]:
            return Result(204)
        return _Write(entry, entry.rtype, rid, cur["version_id"] + 1, "DELETE", None, False, 204)

    async def _plan_create(self, conn: asyncpg.Connection, tx: _Tx, entry: Entry) -> _Write | Result:
        assert entry.resource is not None
        if entry.if_none_exist is not None:
            key = (entry.rtype, _canonical(entry.if_none_exist))
            if key in tx.conditional:  # the same criteria earlier in this Bundle
                rid = tx.conditional[key]
                self._map_full_url(tx, entry, rid)
                return Result(200, target=(entry.rtype, rid))
            found = tx.prefetched.get(key)
            if found is None:
                found = await self._matches(conn, entry.rtype, entry.if_none_exist, entry.where)
            if len(found) > 1:
                raise request_error(
                    412,
                    "multiple-matches",
                    "If-None-Exist criteria match more than one resource",
                    entry.where,
                )
            if found:
                tx.conditional[key] = found[0].id
                self._map_full_url(tx, entry, found[0].id)
                return Result(200, found[0])
        rid = str(uuid.uuid4())
        if entry.if_none_exist is not None:
            tx.conditional[(entry.rtype, _canonical(entry.if_none_exist))] = rid
        self._claim(tx, entry, entry.rtype, rid)
        self._map_full_url(tx, entry, rid)
        return _Write(entry, entry.rtype, rid, 1, "POST", entry.resource, True, 201)

    async def _plan_update(self, conn: asyncpg.Connection, tx: _Tx, entry: Entry) -> _Write | Result:
        assert entry.resource is not None
        body_id = entry.resource.get("id")
        rid = entry.rid
        if rid is None:  # conditional update
            assert entry.criteria is not None
            found = await self._matches(conn, entry.rtype, entry.criteria, entry.where)
            if len(found) > 1:
                raise request_error(
                    412, "multiple-matches", "the update criteria match more than one resource", entry.where
                )
            if found and body_id is not None and body_id != found[0].id:
                raise request_error(
                    400, "invalid", "resource id differs from the resource the criteria match", entry.where
                )
            rid = found[0].id if found else (body_id or str(uuid.uuid4()))
        elif body_id != rid:
            where = f"{entry.where}.resource.id" if entry.where else f"{entry.rtype}.id"
            raise request_error(400, "invalid", "the resource's id must equal the id in the URL", where)
        self._claim(tx, entry, entry.rtype, rid)
        self._map_full_url(tx, entry, rid)
        cur = await self._current(conn, entry.rtype, rid)
        live = cur is not None and not cur["deleted"]
        current_version = cur["version_id"] if cur is not None else 0
        if entry.if_match is not None and (not live or current_version != entry.if_match):
            raise request_error(
                412, "conflict", "If-Match does not name the current version of the resource", entry.where
            )
        if (
            cur is not None
            and live
            and _content(loads(cur["doc"])) == _content({**entry.resource, "id": rid})
        ):
            # Nothing changed: no new version (a retried update is a no-op).
            return Result(200, await self._fetch(conn, entry.rtype, rid))
        status = 200 if live else 201
        return _Write(
            entry, entry.rtype, rid, current_version + 1, "PUT", entry.resource, cur is None, status
        )

    def _map_full_url(self, tx: _Tx, entry: Entry, rid: str) -> None:
        if entry.full_url:
            tx.full_urls[entry.full_url] = f"{entry.rtype}/{rid}"

    async def _resolve_references(self, conn: asyncpg.Connection, tx: _Tx, w: _Write) -> None:
        assert w.resource is not None
        pending: list[dict[str, Any]] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                ref = node.get("reference")
                if isinstance(ref, str) and (
                    ref in tx.full_urls or ref.startswith("urn:") or ("?" in ref and "://" not in ref)
                ):
                    pending.append(node)
                for v in node.values():
                    if isinstance(v, dict | list):
                        walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(w.resource)
        for node in pending:
            ref = node["reference"]
            if ref in tx.full_urls:
                node["reference"] = tx.full_urls[ref]
            elif ref.startswith("urn:"):
                raise request_error(
                    400, "not-found", "a urn: reference does not name a fullUrl of this Bundle", w.entry.where
                )
            else:  # conditional reference: Type?criteria, resolved to exactly one resource
                rtype, _, criteria = ref.partition("?")
                if not is_resource_type(rtype):
                    raise request_error(
                        400, "invalid", "a conditional reference needs a resource type", w.entry.where
                    )
                found = await self._matches(
                    conn, rtype, parse_criteria(criteria, w.entry.where), w.entry.where
                )
                if len(found) != 1:
                    raise request_error(
                        412,
                        "multiple-matches" if found else "not-found",
                        f"a conditional reference matched {len(found)} resources (needs exactly one)",
                        w.entry.where,
                    )
                node["reference"] = f"{rtype}/{found[0].id}"

    async def _store(
        self, conn: asyncpg.Connection, tx: _Tx, writes: list[_Write]
    ) -> dict[tuple[str, str], Stored]:
        """Write every planned version with set-based statements: current rows, history, index rows."""
        versions: list[tuple[str, str, int, bool, str | None, str | None, str]] = []
        idents: list[tuple[str, str, str, str]] = []
        dates: list[tuple[str, str, str, datetime, datetime]] = []
        stale: list[tuple[str, str]] = []  # index rows of these resources are replaced
        out: dict[tuple[str, str], Stored] = {}
        for w in writes:
            doc: str | None = None
            patient_id: str | None = None
            if w.resource is not None:
                meta = {k: v for k, v in (w.resource.get("meta") or {}).items() if k not in _SERVER_META}
                final = {
                    "resourceType": w.rtype,
                    "id": w.rid,
                    "meta": {"versionId": str(w.version_id), "lastUpdated": instant(tx.now), **meta},
                    **{k: v for k, v in w.resource.items() if k not in ("resourceType", "id", "meta")},
                }
                doc = dumps(final)
                index = index_rows(final)
                patient_id = index.patient_id
                idents += [(w.rtype, w.rid, system, value) for system, value in index.identifiers]
                dates += [(w.rtype, w.rid, param, start, end) for param, start, end in index.dates]
            if not w.fresh:
                stale.append((w.rtype, w.rid))
            versions.append((w.rtype, w.rid, w.version_id, w.resource is None, patient_id, doc, w.method))
            out[(w.rtype, w.rid)] = Stored(w.rtype, w.rid, w.version_id, tx.now, doc, w.method)
        if not versions:
            return out
        rtypes, ids, vers, deleted, patients, docs, methods = (list(c) for c in zip(*versions, strict=True))
        await conn.execute(
            """INSERT INTO fhir_resources
                   (resource_type, id, version_id, last_updated, deleted, patient_id, resource)
               SELECT t, i, v, $7, d, p, doc::jsonb
               FROM unnest($1::text[], $2::text[], $3::int[], $4::bool[], $5::text[], $6::text[])
                   AS u(t, i, v, d, p, doc)
               ON CONFLICT (resource_type, id) DO UPDATE SET version_id = EXCLUDED.version_id,
                   last_updated = EXCLUDED.last_updated, deleted = EXCLUDED.deleted,
                   patient_id = EXCLUDED.patient_id, resource = EXCLUDED.resource""",
            rtypes, ids, vers, deleted, patients, docs, tx.now,
        )  # fmt: skip
        await conn.execute(
            """INSERT INTO fhir_resource_history
                   (resource_type, id, version_id, last_updated, method, resource)
               SELECT t, i, v, $6, m, doc::jsonb
               FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[])
                   AS u(t, i, v, m, doc)""",
            rtypes, ids, vers, methods, docs, tx.now,
        )  # fmt: skip
        if stale:
            for table in ("fhir_identifiers", "fhir_dates"):
                await conn.execute(
                    f"DELETE FROM {table} WHERE (resource_type, id) IN"  # noqa: S608
                    " (SELECT * FROM unnest($1::text[], $2::text[]))",
                    *(list(c) for c in zip(*stale, strict=True)),
                )
        if idents:
            await conn.execute(
                "INSERT INTO fhir_identifiers (resource_type, id, system, value)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])",
                *(list(c) for c in zip(*idents, strict=True)),
            )
        if dates:
            await conn.execute(
                "INSERT INTO fhir_dates (resource_type, id, param, start_at, end_at)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
                " $4::timestamptz[], $5::timestamptz[])",
                *(list(c) for c in zip(*dates, strict=True)),
            )
        return out

    async def _fetch(self, conn: asyncpg.Connection, rtype: str, rid: str) -> Stored:
        row = await conn.fetchrow(
            f"SELECT r.version_id, r.last_updated, {DOC_SQL} AS doc FROM fhir_resources r"  # noqa: S608
            " WHERE r.resource_type = $1 AND r.id = $2",
            rtype,
            rid,
        )
        assert row is not None
        return Stored(rtype, rid, row["version_id"], row["last_updated"], row["doc"])

    async def _get(self, conn: asyncpg.Connection, entry: Entry) -> Stored:
        if entry.rid is None:
            raise request_error(
                400, "not-supported", "searches inside a transaction are not supported", entry.where
            )
        row = await conn.fetchrow(
            f"SELECT r.version_id, r.last_updated, r.deleted, {DOC_SQL} AS doc FROM fhir_resources r"  # noqa: S608
            " WHERE r.resource_type = $1 AND r.id = $2",
            entry.rtype,
            entry.rid,
        )
        if row is None or row["deleted"]:
            raise request_error(404, "not-found", f"{entry.rtype}/{entry.rid} is not known", entry.where)
        return Stored(entry.rtype, entry.rid, row["version_id"], row["last_updated"], row["doc"])


# -- parsing a write request ----------------------------------------------------------------------------
def validate_body(resource: Any, where: str, rtype: str | None = None) -> dict[str, Any]:
    """400 when the body is not a resource of the expected type at all, 422 when its content is invalid."""
    try:
        validate_resource(resource, where=where or None, expected_type=rtype)
    except InvalidResource as exc:
        got = resource.get("resourceType") if isinstance(resource, dict) else None
        shaped = isinstance(got, str) and is_resource_type(got) and rtype in (None, got)
        raise FhirRequestError(422 if shaped else 400, exc.issues) from None
    assert isinstance(resource, dict)
    return resource


def bundle_entries(bundle: Any) -> tuple[str, list[Entry]]:
    """Check a transaction/batch Bundle and turn its entries into Entries; every bad entry is reported."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise request_error(
            400, "invalid", "POST to the base URL takes a transaction or batch Bundle", "Bundle"
        )
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise request_error(400, "invalid", "Bundle.type must be transaction or batch", "Bundle.type")
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        raise request_error(400, "structure", "Bundle.entry must be a list", "Bundle.entry")
    entries: list[Entry] = []
    issues: list[Issue] = []
    status = 422
    full_urls: set[str] = set()
    for i, raw in enumerate(raw_entries):
        where = f"Bundle.entry[{i}]"
        try:
            entry = _entry(raw, where)
            if entry.full_url:
                if entry.full_url in full_urls:
                    raise request_error(400, "invalid", "two entries share this fullUrl", f"{where}.fullUrl")
                full_urls.add(entry.full_url)
            entries.append(entry)
        except FhirRequestError as exc:
            issues += exc.issues
            status = min(status, exc.status)
    if issues:
        raise FhirRequestError(status, issues)
    return kind, entries


def _entry(raw: Any, where: str) -> Entry:
    if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
        raise request_error(400, "structure", "each entry needs a request", f"{where}.request")
    req = raw["request"]
    method = req.get("method")
    url = req.get("url")
    if method not in ("GET", "POST", "PUT", "DELETE") or not isinstance(url, str) or not url:
        raise request_error(
            400,
            "not-supported",
            "request.method must be GET, POST, PUT or DELETE with a url",
            f"{where}.request",
        )
    path, _, query = url.lstrip("/").partition("?")
    parts = path.split("/")
    rtype = parts[0]
    if not is_resource_type(rtype):
        raise request_error(
            400, "not-supported", "request.url must start with an R4 resource type", f"{where}.request.url"
        )
    rid = parts[1] if len(parts) == 2 else None
    if len(parts) > 2 or (rid is not None and not ID_RE.match(rid)):
        raise request_error(
            400,
            "invalid",
            "request.url must be [type], [type]/[id] or [type]?[criteria]",
            f"{where}.request.url",
        )
    full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
    entry = Entry(method, rtype, rid, full_url=full_url, where=where)
    if query:
        entry.criteria = parse_criteria(query, f"{where}.request.url")
    if method in ("POST", "PUT"):
        entry.resource = validate_body(raw.get("resource"), f"{where}.resource", rtype)
        if method == "POST" and (rid is not None or query):
            raise request_error(
                400, "invalid", "POST request.url must be just the resource type", f"{where}.request.url"
            )
        if isinstance(req.get("ifNoneExist"), str):
            entry.if_none_exist = parse_criteria(req["ifNoneExist"], f"{where}.request.ifNoneExist")
        entry.if_match = parse_version(req.get("ifMatch"), f"{where}.request.ifMatch")
    if method in ("PUT", "DELETE") and rid is None and not query:
        raise request_error(
            400, "invalid", f"{method} needs [type]/[id] or [type]?[criteria]", f"{where}.request.url"
        )
    return entry
