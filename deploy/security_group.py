#!/usr/bin/env python3
"""Create or update the EC2 security group of the covfefe-flow host (idempotent).

The group ends up holding exactly these rules, and nothing else:

    inbound   tcp 80, 443    from 0.0.0.0/0 and ::/0      (the web page, the API, ACME http-01)
    inbound   tcp 22, 2376   from the operator's IP only   (SSH and the TLS Docker API that
                                                             docker-machine drives)
    outbound  tcp 80, 443    to 0.0.0.0/0 and ::/0        (apt, get.docker.com, image pulls,
                                                             Let's Encrypt)
    in + out  tcp 2377, 7946, udp 7946, 4789   the group itself   (Docker swarm: management,
                                                             gossip, overlay network traffic)

The swarm rules name the group itself as source and destination: only the hosts in this group
(the manager and the workers of deploy/06-swarm.sh) reach each other's swarm ports; nobody else
does. A single host has no one to talk to, so they open nothing there.

The operator's IP (a /32, or a /128 for an IPv6 address) comes from --operator-ip or, without
it, from https://checkip.amazonaws.com (--checkip-url changes that). The rule that AWS adds to
every new group (all outbound traffic allowed, IPv4 and, in an IPv6 VPC, IPv6) is revoked.

Why no outbound DNS (53) or NTP (123): security groups never filter traffic to the Amazon DNS
resolver (the VPC's +2 address, 169.254.169.253) or to the Amazon Time Sync Service
(169.254.169.123), which EC2 hosts use by default (AWS: "Amazon Linux AMIs ... and most partner
AMIs"); an image that syncs with public NTP servers should be pointed at 169.254.169.123
(chrony: `server 169.254.169.123 prefer iburst`) rather than 123 opened here. Replies to inbound
connections (SSH, Docker, HTTPS) need no outbound rule: security groups are stateful. What the
host itself starts goes over 80 and 443: apt, get.docker.com when docker-machine provisions it,
image pulls, certbot talking to Let's Encrypt.

docker-machine's amazonec2 driver adds 22 and 2376 open to 0.0.0.0/0 to the group it is given
when they are missing; they are present here, and `--amazonec2-security-group-readonly` keeps
it from touching the group at all. When the operator's IP changes, run this script again.

The script reads the group's current rules, adds what is missing and revokes what should not
be there (an old operator IP, a rule added by hand, the default egress rule); a second run
changes nothing and says so. --dry-run prints the changes without making them. Defaults come
from the environment (AWS_REGION, AWS_SECURITY_GROUP, AWS_VPC_ID: empty means the region's
default VPC). The last line printed on stdout is the group id (``sg-new`` for a dry run that
would create the group). User errors (no credentials, an unknown VPC, an invalid IP) print one
line on stderr and exit with status 2; other failures exit with status 1.

    python deploy/security_group.py --region us-east-1 --name covfefe-flow --dry-run
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass

import boto3
import botocore.exceptions

CHECKIP_URL = "https://checkip.amazonaws.com"
GROUP_DESCRIPTION = ("covfefe-flow: web 80 and 443 for everyone, SSH and Docker for the operator,"
                     " swarm ports between members")
WEB_PORTS = (80, 443)
OPERATOR_PORTS = (22, 2376)
# Docker swarm mode between the group's members: cluster management, node gossip, and the
# VXLAN data path of overlay networks.
SWARM_PORTS = (("tcp", 2377, "management"), ("tcp", 7946, "gossip"), ("udp", 7946, "gossip"),
               ("udp", 4789, "overlay"))
EVERYWHERE = ("0.0.0.0/0", "::/0")
DRY_RUN_GROUP_ID = "sg-new"

# Rejections that mean the credentials (or their permissions) are wrong: the operator's to fix.
CREDENTIAL_ERRORS = {
    "AuthFailure",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
}
PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}


class UserError(Exception):
    """A mistake the operator can fix (exit status 2)."""


class DeployError(Exception):
    """A failure outside the operator's input: network, AWS refusing a call (exit status 1)."""


@dataclass(frozen=True, order=True)
class Rule:
    """One security group rule with a single source or destination."""

    direction: str  # "ingress" or "egress"
    protocol: str  # "tcp", "udp", "icmp", ... or "-1" for all traffic
    from_port: int | None
    to_port: int | None
    kind: str  # "ipv4", "ipv6", "group" or "prefix-list"
    target: str  # a CIDR, a security group id or a prefix list id
    description: str = ""

    def key(self) -> tuple:
        """What makes two rules the same rule for AWS (the description is only a label)."""
        return (self.direction, self.protocol, self.from_port, self.to_port, self.kind,
                self.target)

    def permission(self) -> dict:
        """This rule as one EC2 ``IpPermission``, for authorize and revoke calls."""
        perm: dict = {"IpProtocol": self.protocol}
        if self.from_port is not None:
            perm["FromPort"] = self.from_port
            perm["ToPort"] = self.to_port
        entry: dict
        if self.kind == "ipv4":
            entry, field = {"CidrIp": self.target}, "IpRanges"
        elif self.kind == "ipv6":
            entry, field = {"CidrIpv6": self.target}, "Ipv6Ranges"
        elif self.kind == "group":
            entry, field = {"GroupId": self.target}, "UserIdGroupPairs"
        else:
            entry, field = {"PrefixListId": self.target}, "PrefixListIds"
        if self.description:
            entry["Description"] = self.description
        perm[field] = [entry]
        return perm

    def __str__(self) -> str:
        if self.protocol == "-1":
            what = "all traffic"
        elif self.from_port == self.to_port:
            what = f"{self.protocol} {self.from_port}"
        else:
            what = f"{self.protocol} {self.from_port}-{self.to_port}"
        way = "from" if self.direction == "ingress" else "to"
        return f"{self.direction:<7} {what:<11} {way} {self.target}"


def cidr_kind(cidr: str) -> str:
    """Return "ipv6" for an IPv6 CIDR, "ipv4" otherwise."""
    return "ipv6" if ":" in cidr else "ipv4"


def operator_cidr(ip: str) -> str:
    """Return the single-address CIDR of the operator's IP; UserError if it is not an IP."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        raise UserError(
            f"invalid operator IP {ip!r}: give one IPv4 or IPv6 address, like 203.0.113.7"
        ) from None
    return f"{address}/{address.max_prefixlen}"


def desired_rules(operator: str, group_id: str) -> set[Rule]:
    """The complete rule set of the group (whose id is `group_id`) for the operator's CIDR."""
    rules = set()
    for port in WEB_PORTS:
        for cidr in EVERYWHERE:
            rules.add(Rule("ingress", "tcp", port, port, cidr_kind(cidr), cidr,
                           f"covfefe-flow web {port}"))
            rules.add(Rule("egress", "tcp", port, port, cidr_kind(cidr), cidr,
                           f"covfefe-flow host out {port}"))
    names = {22: "ssh", 2376: "docker"}
    for port in OPERATOR_PORTS:
        rules.add(Rule("ingress", "tcp", port, port, cidr_kind(operator), operator,
                       f"covfefe-flow operator {names[port]}"))
    for protocol, port, purpose in SWARM_PORTS:
        for direction in ("ingress", "egress"):
            rules.add(Rule(direction, protocol, port, port, "group", group_id,
                           f"covfefe-flow swarm {purpose}"))
    return rules


def rules_from_permissions(permissions: list[dict], direction: str) -> set[Rule]:
    """Split EC2 ``IpPermissions`` into one `Rule` per source or destination."""
    rules = set()
    for perm in permissions:
        protocol = str(perm["IpProtocol"])
        protocol = PROTOCOL_NAMES.get(protocol, protocol)
        from_port, to_port = perm.get("FromPort"), perm.get("ToPort")
        if protocol == "-1":
            from_port = to_port = None
        sources = (
            [("ipv4", r["CidrIp"], r.get("Description", "")) for r in perm.get("IpRanges", [])]
            + [("ipv6", r["CidrIpv6"], r.get("Description", ""))
               for r in perm.get("Ipv6Ranges", [])]
            + [("group", r["GroupId"], r.get("Description", ""))
               for r in perm.get("UserIdGroupPairs", [])]
            + [("prefix-list", r["PrefixListId"], r.get("Description", ""))
               for r in perm.get("PrefixListIds", [])]
        )
        for kind, target, description in sources:
            rules.add(Rule(direction, protocol, from_port, to_port, kind, target, description))
    return rules


def plan(current: set[Rule], wanted: set[Rule]) -> tuple[list[Rule], list[Rule]]:
    """Return (rules to add, rules to revoke), comparing rules without their descriptions."""
    current_keys = {rule.key() for rule in current}
    wanted_keys = {rule.key() for rule in wanted}
    to_add = sorted(rule for rule in wanted if rule.key() not in current_keys)
    to_revoke = sorted(rule for rule in current if rule.key() not in wanted_keys)
    return to_add, to_revoke


def lookup_operator_ip(url: str, timeout: float = 10.0) -> str:
    """Ask a checkip service (one address in a text body) for this machine's public IP."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read(200).decode("ascii", "replace").strip()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DeployError(
            f"could not find your public IP at {url} ({reason}); pass --operator-ip"
        ) from None
    try:
        ipaddress.ip_address(body)
    except ValueError:
        raise DeployError(
            f"{url} did not answer with an IP address; pass --operator-ip"
        ) from None
    return body


def find_vpc(ec2, vpc_id: str | None) -> dict:
    """Return the VPC to use (as described): the given one, checked to exist, or the default."""
    if vpc_id:
        try:
            vpcs = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"]
        except botocore.exceptions.ClientError as error:
            if error.response["Error"]["Code"].startswith("InvalidVpcID"):
                raise UserError(
                    f"unknown VPC {vpc_id!r} in region {ec2.meta.region_name}: check --vpc-id"
                    " (or AWS_VPC_ID), or leave it empty for the default VPC"
                ) from None
            raise
        if not vpcs:
            raise UserError(f"unknown VPC {vpc_id!r} in region {ec2.meta.region_name}")
        return vpcs[0]
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise UserError(
            f"region {ec2.meta.region_name} has no default VPC: pass --vpc-id (or set AWS_VPC_ID)"
        )
    return vpcs[0]


def default_egress(vpc: dict) -> set[Rule]:
    """The allow-all egress rules AWS gives a new group in this VPC (::/0 too with IPv6)."""
    rules = {Rule("egress", "-1", None, None, "ipv4", "0.0.0.0/0")}
    if any(assoc.get("Ipv6CidrBlockState", {}).get("State") == "associated"
           for assoc in vpc.get("Ipv6CidrBlockAssociationSet", [])):
        rules.add(Rule("egress", "-1", None, None, "ipv6", "::/0"))
    return rules


def find_group(ec2, name: str, vpc_id: str) -> dict | None:
    """Return the security group called `name` in the VPC, or None."""
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}]
    )["SecurityGroups"]
    return groups[0] if groups else None


def apply(ec2, group_id: str, to_add: list[Rule], to_revoke: list[Rule]) -> None:
    """Add the missing rules first, then revoke the unwanted ones (no moment without access)."""
    for direction in ("ingress", "egress"):
        adds = [r.permission() for r in to_add if r.direction == direction]
        if adds:
            call = getattr(ec2, f"authorize_security_group_{direction}")
            call(GroupId=group_id, IpPermissions=adds)
    for direction in ("ingress", "egress"):
        revokes = [r.permission() for r in to_revoke if r.direction == direction]
        if revokes:
            call = getattr(ec2, f"revoke_security_group_{direction}")
            call(GroupId=group_id, IpPermissions=revokes)


def ensure_group(ec2, name: str, vpc: dict, operator: str, dry_run: bool,
                 out=sys.stdout) -> str:
    """Bring the group to `desired_rules`; print each change; return the group id."""
    vpc_id = vpc["VpcId"]
    group = find_group(ec2, name, vpc_id)
    verb_add, verb_revoke = ("would add", "would revoke") if dry_run else ("added", "revoked")
    if group is None and dry_run:
        print(f"would create security group {name} in {vpc_id}", file=out)
        group_id, current = DRY_RUN_GROUP_ID, default_egress(vpc)
    else:
        if group is None:
            group_id = ec2.create_security_group(
                GroupName=name, Description=GROUP_DESCRIPTION, VpcId=vpc_id,
                TagSpecifications=[{"ResourceType": "security-group",
                                    "Tags": [{"Key": "Name", "Value": name}]}],
            )["GroupId"]
            print(f"created security group {name} ({group_id}) in {vpc_id}", file=out)
            # Read back what AWS put in the new group (its default egress rules).
            group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
        group_id = group["GroupId"]
        current = (rules_from_permissions(group.get("IpPermissions", []), "ingress")
                   | rules_from_permissions(group.get("IpPermissionsEgress", []), "egress"))
    to_add, to_revoke = plan(current, desired_rules(operator, group_id))
    if not dry_run:
        apply(ec2, group_id, to_add, to_revoke)
    for rule in to_add:
        print(f"{verb_add:<12} {rule}", file=out)
    for rule in to_revoke:
        print(f"{verb_revoke:<12} {rule}", file=out)
    changes = len(to_add) + len(to_revoke)
    if changes == 0:
        print(f"security group {name} ({group_id}) is up to date: nothing changed", file=out)
    elif dry_run:
        print(f"dry run: {changes} rule changes not made", file=out)
    else:
        print(f"security group {name} ({group_id}): {changes} rule changes made", file=out)
    return group_id


def ec2_client(region: str, endpoint_url: str | None):
    """An EC2 client; UserError when no credentials can be found."""
    session = boto3.session.Session(region_name=region)
    if session.get_credentials() is None:
        raise UserError(
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            " (deploy/deploy.secrets.env) or an AWS profile"
        )
    return session.client("ec2", endpoint_url=endpoint_url)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="security_group.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--region", default=os.environ.get("AWS_REGION") or None,
                        help="AWS region (default: $AWS_REGION)")
    parser.add_argument("--name", default=os.environ.get("AWS_SECURITY_GROUP") or "covfefe-flow",
                        help="security group name (default: $AWS_SECURITY_GROUP or covfefe-flow)")
    parser.add_argument("--vpc-id", default=os.environ.get("AWS_VPC_ID") or None,
                        help="VPC id (default: $AWS_VPC_ID, or the region's default VPC)")
    parser.add_argument("--operator-ip",
                        help="the IP allowed to reach SSH (22) and Docker (2376)"
                             " (default: looked up at --checkip-url)")
    parser.add_argument("--checkip-url", default=CHECKIP_URL,
                        help=f"service answering with your public IP (default: {CHECKIP_URL})")
    parser.add_argument("--endpoint-url",
                        help="EC2 API endpoint, for a local stand-in such as moto")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the changes without making them")
    return parser.parse_args(argv)


def fail(message: str, status: int) -> int:
    """Print one error line on stderr, with any secret from the environment masked."""
    line = " ".join(message.split())
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        secret = os.environ.get(name)
        if secret:
            line = line.replace(secret, "***")
    print(f"security_group.py: error: {line}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if not args.region:
            raise UserError("no AWS region: pass --region or set AWS_REGION (deploy/config.env)")
        if not args.name.strip():
            raise UserError("empty security group name: pass --name or set AWS_SECURITY_GROUP")
        if args.operator_ip is not None:
            operator = operator_cidr(args.operator_ip)
            ec2 = ec2_client(args.region, args.endpoint_url)
        else:
            ec2 = ec2_client(args.region, args.endpoint_url)
            operator = operator_cidr(lookup_operator_ip(args.checkip_url))
        vpc = find_vpc(ec2, args.vpc_id)
        group_id = ensure_group(ec2, args.name, vpc, operator, args.dry_run)
    except UserError as error:
        return fail(str(error), 2)
    except DeployError as error:
        return fail(str(error), 1)
    except botocore.exceptions.NoCredentialsError:
        return fail("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    " (deploy/deploy.secrets.env) or an AWS profile", 2)
    except botocore.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "?")
        message = error.response.get("Error", {}).get("Message", "")
        if code in CREDENTIAL_ERRORS:
            return fail(f"AWS rejected the credentials or their permissions ({code}): {message}",
                        2)
        return fail(f"AWS refused the request ({code}): {message}", 1)
    except botocore.exceptions.BotoCoreError as error:
        # Connection failures, a malformed region and the like.
        return fail(str(error), 1)
    print(group_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
