"""A local stand-in of the Cloudflare v4 API: zones and DNS records, enough for the official SDK.

It serves on 127.0.0.1 (a free port) and answers like api.cloudflare.com/client/v4 does:
- ``GET /zones`` (``name``, ``page``, ``per_page``),
- ``GET /zones/{zone}/dns_records`` (filters ``name``/``name.exact``, ``type``,
  ``content``/``content.exact``, ``proxied``; pages: ``page``, ``per_page``, ``result_info``
  with ``total_pages``; a page past the end is empty, as the SDK's paginator expects),
- ``POST /zones/{zone}/dns_records``, ``PUT`` and ``PATCH /zones/{zone}/dns_records/{id}``,
  ``GET`` and ``DELETE`` of one record,
every answer in the v4 envelope ``{success, errors, messages, result[, result_info]}``.

Tokens carry permissions (``zone:read``, ``dns:read``, ``dns:edit``): an unknown or missing
bearer token, or one that lacks the permission a call needs, gets Cloudflare's 403
``{"code": 10000, "message": "Authentication error"}``. Every request is recorded in
`CloudflareStandin.requests` (method, path, query, JSON body, whether the token was known; never
the token itself) so that tests can assert what the client did, and did not, send.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

API_PREFIX = "/client/v4"
ALL_PERMISSIONS = frozenset({"zone:read", "dns:read", "dns:edit"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PROXIABLE_TYPES = frozenset({"A", "AAAA", "CNAME"})


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stand-in received (the token itself is never kept)."""

    method: str
    path: str
    query: dict[str, str]
    body: object
    token_known: bool
    # Whether a global API key or e-mail (X-Auth-Key, X-Auth-Email) came along as well.
    global_key_sent: bool = False


class ApiError(Exception):
    """An error answer in Cloudflare's shape: HTTP status plus ``errors`` entries."""

    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class _Zone:
    id: str
    name: str
    records: list[dict] = field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _new_id() -> str:
    return secrets.token_hex(16)


class CloudflareStandin:
    """A threaded HTTP server that imitates the parts of the Cloudflare v4 API listed above.

    Use it as a context manager (or call `start` and `stop`); `base_url` is what the SDK's
    ``base_url`` (and ``cloudflare_dns.py --base-url``) takes.
    """

    def __init__(self, tokens: dict[str, frozenset[str] | set[str]]):
        self.tokens = {token: frozenset(perms) for token, perms in tokens.items()}
        self.requests: list[RecordedRequest] = []
        self._zones: dict[str, _Zone] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- state -------------------------------------------------------------------------------

    def add_zone(self, name: str) -> str:
        """Add a zone; returns its id."""
        zone = _Zone(id=_new_id(), name=name.lower())
        with self._lock:
            self._zones[zone.id] = zone
        return zone.id

    def add_record(self, zone_name: str, name: str, type: str, content: str, *,
                   proxied: bool = False, ttl: int = 1, comment: str | None = None) -> dict:
        """Put a record straight into a zone (no request); returns a copy of it."""
        with self._lock:
            zone = self._zone_by_name(zone_name)
            record = self._make_record(zone, {"name": name, "type": type, "content": content,
                                              "proxied": proxied, "ttl": ttl,
                                              "comment": comment})
            zone.records.append(record)
            return dict(record)

    def records(self, zone_name: str, name: str | None = None,
                type: str | None = None) -> list[dict]:
        """Copies of a zone's records, optionally only those with a name (FQDN) and type."""
        with self._lock:
            zone = self._zone_by_name(zone_name)
            return [dict(r) for r in zone.records
                    if (name is None or r["name"] == name.lower())
                    and (type is None or r["type"] == type)]

    def writes(self) -> list[RecordedRequest]:
        """The recorded requests that would change something (POST, PUT, PATCH, DELETE)."""
        return [r for r in self.requests if r.method in WRITE_METHODS]

    def _zone_by_name(self, name: str) -> _Zone:
        for zone in self._zones.values():
            if zone.name == name.lower():
                return zone
        raise KeyError(f"no zone {name!r} in the stand-in")

    # -- server ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}{API_PREFIX}"

    def start(self) -> CloudflareStandin:
        standin = self

        class Handler(_Handler):
            api = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> CloudflareStandin:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the API -----------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: object,
               token: str | None, global_key_sent: bool = False) -> tuple[int, dict]:
        """Answer one request: (HTTP status, v4 envelope)."""
        permissions = self.tokens.get(token or "")
        with self._lock:
            self.requests.append(RecordedRequest(method, path, dict(query), body,
                                                 token_known=permissions is not None,
                                                 global_key_sent=global_key_sent))
            try:
                if not path.startswith(API_PREFIX + "/"):
                    raise ApiError(404, 7000, "No route for that URI")
                parts = path[len(API_PREFIX) + 1:].strip("/").split("/")
                result, info = self._route(method, parts, query, body, permissions)
            except ApiError as err:
                return err.status, {"success": False,
                                    "errors": [{"code": err.code, "message": err.message}],
                                    "messages": [], "result": None}
        envelope = {"success": True, "errors": [], "messages": [], "result": result}
        if info is not None:
            envelope["result_info"] = info
        return 200, envelope

    def _route(self, method, parts, query, body, permissions):
        if parts == ["zones"] and method == "GET":
            self._require(permissions, "zone:read", "dns:read", "dns:edit")
            return self._list_zones(query)
        if len(parts) >= 3 and parts[0] == "zones" and parts[2] == "dns_records":
            zone = self._zones.get(parts[1])
            if method == "GET":
                self._require(permissions, "dns:read", "dns:edit")
            else:
                self._require(permissions, "dns:edit")
            if zone is None:
                raise ApiError(400, 7003, "Could not route to /zones/" + parts[1] +
                               "/dns_records, perhaps your object identifier is invalid?")
            if len(parts) == 3 and method == "GET":
                return self._list_records(zone, query)
            if len(parts) == 3 and method == "POST":
                return self._create_record(zone, body), None
            if len(parts) == 4:
                record = next((r for r in zone.records if r["id"] == parts[3]), None)
                if record is None:
                    raise ApiError(404, 81044, "Record does not exist.")
                if method == "GET":
                    return dict(record), None
                if method in ("PUT", "PATCH"):
                    return self._change_record(zone, record, body, replace=method == "PUT"), None
                if method == "DELETE":
                    zone.records.remove(record)
                    return {"id": record["id"]}, None
        raise ApiError(404 if method == "GET" else 405, 7000, "No route for that URI")

    @staticmethod
    def _require(permissions, *any_of: str) -> None:
        if permissions is None or not permissions.intersection(any_of):
            raise ApiError(403, 10000, "Authentication error")

    @staticmethod
    def _paginate(items: list[dict], query: dict[str, str], default_per_page: int):
        try:
            page = int(query.get("page", 1))
            per_page = int(query.get("per_page", default_per_page))
        except ValueError as err:
            raise ApiError(400, 1004, "page and per_page must be integers") from err
        if page < 1 or not 5 <= per_page <= 5_000_000:
            raise ApiError(400, 1004, "page must be >= 1 and per_page between 5 and 5000000")
        chunk = items[(page - 1) * per_page:page * per_page]
        total_pages = max(1, -(-len(items) // per_page))
        info = {"page": page, "per_page": per_page, "count": len(chunk),
                "total_count": len(items), "total_pages": total_pages}
        return [dict(item) for item in chunk], info

    def _list_zones(self, query):
        zones = [z for z in self._zones.values()
                 if "name" not in query or z.name == query["name"].lower()]
        items = [{"id": z.id, "name": z.name, "status": "active", "paused": False,
                  "type": "full", "development_mode": 0,
                  "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
                  "original_name_servers": None, "original_registrar": None,
                  "original_dnshost": None, "created_on": "2024-01-01T00:00:00Z",
                  "modified_on": "2024-01-01T00:00:00Z", "activated_on": "2024-01-01T00:00:00Z",
                  "meta": {}, "owner": {"id": None, "type": "user", "email": None},
                  "account": {"id": "0" * 32, "name": "covfefe"}, "permissions": [],
                  "plan": {"id": "0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "name": "Free Website"}}
                 for z in zones]
        return self._paginate(items, query, default_per_page=20)

    def _list_records(self, zone: _Zone, query):
        def matches(record: dict) -> bool:
            for key, field_name in (("name", "name"), ("name.exact", "name"),
                                    ("content", "content"), ("content.exact", "content")):
                if key in query and record[field_name].lower() != query[key].lower():
                    return False
            if "type" in query and record["type"] != query["type"]:
                return False
            return "proxied" not in query or str(record["proxied"]).lower() == query["proxied"]

        return self._paginate([r for r in zone.records if matches(r)], query,
                              default_per_page=100)

    def _fqdn(self, zone: _Zone, name: object) -> str:
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, 9005, "DNS record name is required.")
        name = name.strip().rstrip(".").lower()
        if name in ("@", zone.name):
            return zone.name
        return name if name.endswith("." + zone.name) else f"{name}.{zone.name}"

    def _make_record(self, zone: _Zone, fields: dict) -> dict:
        name = self._fqdn(zone, fields.get("name"))
        type_ = fields.get("type")
        content = fields.get("content")
        if not isinstance(type_, str) or not isinstance(content, str):
            raise ApiError(400, 9005, "DNS record type and content are required.")
        if type_ == "A":
            try:
                ipaddress.IPv4Address(content)
            except ValueError as err:
                raise ApiError(400, 9005,
                               "Content for A record must be a valid IPv4 address.") from err
        proxied = bool(fields.get("proxied", False))
        if proxied and type_ not in PROXIABLE_TYPES:
            raise ApiError(400, 9004, f"This record type cannot be proxied: {type_}.")
        ttl = fields.get("ttl", 1)
        if not isinstance(ttl, int) or not (ttl == 1 or 60 <= ttl <= 86400):
            raise ApiError(400, 9021, "Invalid TTL. Must be between 60 and 86400 or 1 for auto.")
        now = _now()
        record = {"id": _new_id(), "zone_id": zone.id, "zone_name": zone.name, "name": name,
                  "type": type_, "content": content, "proxiable": type_ in PROXIABLE_TYPES,
                  "proxied": proxied, "ttl": ttl, "settings": {}, "meta": {},
                  "comment": fields.get("comment"), "tags": [], "created_on": now,
                  "modified_on": now}
        return record

    def _check_conflicts(self, zone: _Zone, record: dict, ignore_id: str | None = None) -> None:
        for other in zone.records:
            if other["id"] == ignore_id or other["name"] != record["name"]:
                continue
            if (other["type"], other["content"]) == (record["type"], record["content"]):
                raise ApiError(400, 81058, "An identical record already exists.")
            if "CNAME" in (other["type"], record["type"]) and {other["type"], record["type"]} \
                    <= {"A", "AAAA", "CNAME"}:
                raise ApiError(400, 81053,
                               "An A, AAAA, or CNAME record with that host already exists.")

    def _create_record(self, zone: _Zone, body: object) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, 9207, "Request body is invalid.")
        record = self._make_record(zone, body)
        self._check_conflicts(zone, record)
        zone.records.append(record)
        return dict(record)

    def _change_record(self, zone: _Zone, record: dict, body: object, *, replace: bool) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, 9207, "Request body is invalid.")
        keep = {} if replace else {k: record[k] for k in ("name", "type", "content", "proxied",
                                                          "ttl", "comment")}
        changed = self._make_record(zone, {**keep, **body})
        self._check_conflicts(zone, changed, ignore_id=record["id"])
        changed.update(id=record["id"], created_on=record["created_on"])
        record.clear()
        record.update(changed)
        return dict(record)


class _Handler(BaseHTTPRequestHandler):
    api: CloudflareStandin
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _answer(self) -> None:
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        global_key_sent = any(self.headers.get(h) for h in ("X-Auth-Key", "X-Auth-Email"))
        status, envelope = self.api.handle(self.command, url.path, query, body, token,
                                           global_key_sent)
        payload = json.dumps(envelope).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer
