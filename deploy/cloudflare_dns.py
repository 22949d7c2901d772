#!/usr/bin/env python3
"""Point the domain at the host: Cloudflare A records for the apex, www and api.

Upserts three A records in the Cloudflare zone DOMAIN, all pointing at --ip:

    DOMAIN        proxied (Cloudflare's CDN; the apex redirects to www)
    www.DOMAIN    proxied (the web page, through the CDN)
    api.DOMAIN    DNS only (the API, straight to the host: long-lived event streams)

It is idempotent: a record that is already right is left alone, a wrong one (another IP or
proxy setting) is updated in place, a missing one is created; a second run changes nothing and
says so. `--dry-run` reads the zone and prints what would change without writing (without a
token it only prints the records it would set).

The API token comes from CLOUDFLARE_API_TOKEN (deploy/deploy.secrets.env) and is never printed.
It needs the permission Zone.DNS Edit on the zone: make it from Cloudflare's "Edit zone DNS"
template. The zone defaults to $DOMAIN (deploy/config.env).

Exit status: 0 done (or nothing to do), 2 a user error (missing token, unknown zone, token
without permission, invalid IP, a conflicting record), 1 Cloudflare could not be reached or
failed.

Example:
    python deploy/cloudflare_dns.py --ip "$(docker-machine ip covfefe-aws)"
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cloudflare
from cloudflare import Cloudflare

TOKEN_VARIABLE = "CLOUDFLARE_API_TOKEN"
# Cloudflare's "automatic" TTL (300 s for DNS-only records; proxied ones always use it).
AUTOMATIC_TTL = 1
# Records are listed a page at a time; the SDK follows the pages.
PAGE_SIZE = 100
DNS_EDIT = 'Zone.DNS Edit (Cloudflare\'s "Edit zone DNS" token template)'


class DnsError(Exception):
    """A failure to report as one line; `exit_code` 2 for user errors, 1 otherwise."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class WantedRecord:
    """An A record this script manages: its full name, target and proxy setting."""

    name: str
    ip: str
    proxied: bool

    def describe(self) -> str:
        return f"A {self.name} -> {self.target()}"

    def target(self) -> str:
        return f"{self.ip} ({'proxied' if self.proxied else 'DNS only'})"


@dataclass(frozen=True)
class Change:
    """What to do for one wanted record: "create", "update" (record_id set) or "keep"."""

    action: str
    wanted: WantedRecord
    record_id: str | None = None
    was: str | None = None


def wanted_records(zone: str, ip: str) -> list[WantedRecord]:
    """The three A records: apex and www through the CDN, api straight to the host."""
    return [WantedRecord(zone, ip, proxied=True),
            WantedRecord(f"www.{zone}", ip, proxied=True),
            WantedRecord(f"api.{zone}", ip, proxied=False)]


def parse_ip(text: str) -> str:
    """Return the IPv4 address in `text`, or raise DnsError."""
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except ValueError:
        raise DnsError(f"--ip {text!r} is not an IPv4 address (an A record needs one, such as "
                       "the host's public IP from `docker-machine ip covfefe-aws`)") from None


def _cloudflare_reason(err: cloudflare.APIStatusError) -> str:
    """Cloudflare's own error codes and messages from an error answer, in one line."""
    body = err.body if isinstance(err.body, dict) else {}
    errors = body.get("errors") or []
    details = "; ".join(f"code {e.get('code')}: {e.get('message')}" for e in errors
                        if isinstance(e, dict))
    return f"HTTP {err.status_code}" + (f", {details}" if details else "")


@contextmanager
def cloudflare_errors(doing: str, zone: str, permission: str) -> Iterator[None]:
    """Turn the SDK's exceptions raised while `doing` something into one-line DnsErrors."""
    try:
        yield
    except cloudflare.PermissionDeniedError as err:
        raise DnsError(f"Cloudflare refused to {doing} ({_cloudflare_reason(err)}): the token in "
                       f"{TOKEN_VARIABLE} is wrong or lacks the permission {permission} on "
                       f"the zone {zone}") from None
    except cloudflare.AuthenticationError as err:
        raise DnsError(f"Cloudflare rejected the token in {TOKEN_VARIABLE} while trying to "
                       f"{doing} ({_cloudflare_reason(err)}): make a new one with "
                       f"{DNS_EDIT}") from None
    except cloudflare.APIStatusError as err:
        user_error = 400 <= err.status_code < 500
        raise DnsError(f"Cloudflare could not {doing} ({_cloudflare_reason(err)})",
                       exit_code=2 if user_error else 1) from None
    except cloudflare.APIConnectionError as err:
        raise DnsError(f"could not reach the Cloudflare API to {doing}: "
                       f"{type(err).__name__}", exit_code=1) from None


def find_zone_id(client: Cloudflare, zone: str) -> str:
    """The id of the zone named `zone`, or raise DnsError."""
    with cloudflare_errors(f"look up the zone {zone}", zone, "Zone.Zone Read or " + DNS_EDIT):
        zones = [z for z in client.zones.list(name=zone) if z.name.lower() == zone]
    if not zones:
        raise DnsError(f"no Cloudflare zone named {zone} is visible to the token in "
                       f"{TOKEN_VARIABLE}: add the site to Cloudflare first, or give the token "
                       f"{DNS_EDIT} on that zone")
    return zones[0].id


def list_records(client: Cloudflare, zone_id: str, zone: str) -> list:
    """Every DNS record of the zone, following all pages of the listing."""
    with cloudflare_errors(f"list the DNS records of {zone}", zone, DNS_EDIT):
        return list(client.dns.records.list(zone_id=zone_id, per_page=PAGE_SIZE))


def _fqdn(name: str) -> str:
    return name.rstrip(".").lower()


def plan_changes(wanted: list[WantedRecord], records: list) -> tuple[list[Change], list[str]]:
    """Compare the wanted A records with the zone's records: (changes, notes for the operator).

    Raises DnsError when a name holds a CNAME (no A record may sit beside it) or more than one
    A record (this script manages exactly one per name and will not guess which to keep).
    """
    changes, notes = [], []
    for want in wanted:
        same_name = [r for r in records if _fqdn(r.name) == want.name]
        cnames = [r for r in same_name if r.type == "CNAME"]
        if cnames:
            raise DnsError(f"{want.name} has a CNAME record (to {cnames[0].content}), and "
                           "Cloudflare allows no A record beside it: delete the CNAME in the "
                           "Cloudflare dashboard, then run this again")
        a_records = [r for r in same_name if r.type == "A"]
        if len(a_records) > 1:
            ips = ", ".join(r.content for r in a_records)
            raise DnsError(f"{want.name} has {len(a_records)} A records ({ips}); this script "
                           "manages exactly one: delete the extra ones in the Cloudflare "
                           "dashboard, then run this again")
        notes += [f"note: {want.name} also has an AAAA record ({r.content}) that this script "
                  "does not manage" for r in same_name if r.type == "AAAA"]
        if not a_records:
            changes.append(Change("create", want))
            continue
        record = a_records[0]
        if record.content == want.ip and bool(record.proxied) == want.proxied:
            changes.append(Change("keep", want, record.id))
        else:
            current = WantedRecord(want.name, record.content, bool(record.proxied))
            changes.append(Change("update", want, record.id, was=current.target()))
    return changes, notes


def apply_change(client: Cloudflare, zone_id: str, zone: str, change: Change) -> None:
    """Create or update one record (a "keep" change sends nothing)."""
    want = change.wanted
    if change.action == "create":
        with cloudflare_errors(f"create {want.name}", zone, DNS_EDIT):
            client.dns.records.create(zone_id=zone_id, type="A", name=want.name,
                                      content=want.ip, proxied=want.proxied, ttl=AUTOMATIC_TTL)
    elif change.action == "update":
        # PATCH: only the address and the proxy flag change; the TTL, comment and tags stay.
        with cloudflare_errors(f"update {want.name}", zone, DNS_EDIT):
            client.dns.records.edit(change.record_id, zone_id=zone_id, type="A",
                                    name=want.name, content=want.ip, proxied=want.proxied)


def upsert_dns(client: Cloudflare, zone: str, ip: str, *, dry_run: bool = False,
               say: Callable[[str], None] = print,
               warn: Callable[[str], None] = print) -> list[Change]:
    """Make the zone's apex, www and api A records point at `ip`; returns what was planned."""
    zone_id = find_zone_id(client, zone)
    records = list_records(client, zone_id, zone)
    changes, notes = plan_changes(wanted_records(zone, ip), records)
    for note in notes:
        warn(note)
    say(f"zone {zone}: {len(records)} DNS records")
    prefix = "would " if dry_run else ""
    for change in changes:
        if change.action == "keep":
            say(f"ok: {change.wanted.describe()}")
            continue
        was = f" (was {change.was})" if change.was else ""
        say(f"{prefix}{change.action}: {change.wanted.describe()}{was}")
        if not dry_run:
            apply_change(client, zone_id, zone, change)
    counts = {action: sum(c.action == action for c in changes)
              for action in ("create", "update", "keep")}
    if counts["create"] == counts["update"] == 0:
        say(f"{zone}: all {counts['keep']} records already correct, nothing changed")
    elif dry_run:
        say(f"dry run: would create {counts['create']} and update {counts['update']} "
            "records; nothing written")
    else:
        say(f"{zone}: created {counts['create']}, updated {counts['update']}, "
            f"{counts['keep']} already correct")
    return changes


def make_client(token: str, base_url: str | None) -> Cloudflare:
    """An SDK client that authenticates with the API token only."""
    client = Cloudflare(api_token=token, base_url=base_url, timeout=30.0, max_retries=2)
    # The SDK would also pick up a global API key or e-mail from the environment and prefer
    # them over the token; this script is meant to run with the scoped token alone.
    client.api_key = client.api_email = client.user_service_key = None
    return client


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudflare_dns.py",
        description="Upsert the Cloudflare A records of DOMAIN, www.DOMAIN (both proxied "
                    "through the CDN) and api.DOMAIN (DNS only), all pointing at --ip. The API "
                    f"token comes from {TOKEN_VARIABLE} and needs Zone.DNS Edit on the zone.")
    parser.add_argument("--ip", required=True,
                        help="the host's public IPv4 address (docker-machine ip covfefe-aws)")
    parser.add_argument("--zone", default=os.environ.get("DOMAIN"),
                        help="the Cloudflare zone, the apex domain (default: $DOMAIN)")
    parser.add_argument("--base-url", default=None,
                        help="the Cloudflare API's base URL (default: the SDK's, "
                             "https://api.cloudflare.com/client/v4; tests use a local one)")
    parser.add_argument("--dry-run", action="store_true",
                        help="read the zone and print what would change, writing nothing")
    return parser


def run(args: argparse.Namespace, token: str) -> int:
    """Do what the parsed command line asks; raises DnsError on failure."""
    ip = parse_ip(args.ip)
    zone = _fqdn(args.zone or "")
    if not zone:
        raise DnsError("no zone given: pass --zone DOMAIN or set DOMAIN (deploy/config.env)")
    if not token:
        if not args.dry_run:
            raise DnsError(f"{TOKEN_VARIABLE} is not set: put an API token with {DNS_EDIT} "
                           "for the zone in deploy/deploy.secrets.env")
        for want in wanted_records(zone, ip):
            print(f"would upsert: {want.describe()}")
        print(f"dry run: {TOKEN_VARIABLE} is not set, so the zone's current records were not "
              "read; nothing written")
        return 0
    with make_client(token, args.base_url) as client:
        upsert_dns(client, zone, ip, dry_run=args.dry_run,
                   warn=lambda line: print(line, file=sys.stderr))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    try:
        return run(args, token)
    except DnsError as err:
        message = str(err)
        if token:  # Belt and braces: nothing above formats the token, but never let it out.
            message = message.replace(token, "***")
        print(f"cloudflare_dns.py: error: {message}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
