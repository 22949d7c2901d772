#!/usr/bin/env python3
"""Report (or wait for) the health of a swarm stack: replicas running and rolling updates.

For each service of the stack it prints the replicas running (a task with a health check only
counts once it is healthy: swarm starts it that way) against those wanted, and the state of its
last update or rollback:

    covfefe_serve    3/3 running   update completed
    covfefe_web      1/1 running

With --wait SECONDS it polls until every service has all its replicas running and no update is
in progress, and prints the final table. Exit status: 0 when the stack is there and converged;
1 when it did not converge in time or an update was paused or rolled back (the message says
which service and why); 2 for a mistake the operator can fix (no stack of that name, the
Docker daemon unreachable, an engine that is not a swarm manager).

It talks to the engine with the Docker SDK, configured like the docker CLI from the environment
(DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH: what `eval "$(deploy/use-host.sh aws)"` or
`docker-machine env` sets), and is run by deploy/07-stack.sh after each deploy, scale or
rollback.

    python deploy/stack_health.py --stack covfefe --wait 600
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import docker
import docker.errors

DEFAULT_STACK = "covfefe"
STACK_LABEL = "com.docker.stack.namespace"
UPDATE_IN_PROGRESS = {"updating", "rollback_started"}
UPDATE_STOPPED = {"paused", "rollback_paused", "rollback_completed"}


class UserError(Exception):
    """A mistake the operator can fix (exit status 2)."""


@dataclass(frozen=True)
class ServiceHealth:
    """One service of the stack, as swarm sees it now."""

    name: str
    running: int
    wanted: int | None  # None for a global service (one task per node)
    update: str  # "" when the service was never updated
    message: str

    @property
    def converged(self) -> bool:
        replicas_ok = self.running >= 1 if self.wanted is None else self.running == self.wanted
        return replicas_ok and self.update not in UPDATE_IN_PROGRESS

    @property
    def failed(self) -> bool:
        return self.update in UPDATE_STOPPED

    def __str__(self) -> str:
        wanted = "global" if self.wanted is None else str(self.wanted)
        line = f"{self.name:<24} {self.running}/{wanted} running"
        if self.update == "completed":
            line += "   update completed"
        elif self.update:
            line += f"   {self.update.replace('_', ' ')}"
            if self.message:
                line += f": {self.message}"
        return line


def connect() -> docker.DockerClient:
    """A client of the engine the environment names; UserError when it does not answer."""
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (the default)"
    try:
        client = docker.from_env(version="auto")
        client.ping()
    except docker.errors.DockerException:
        raise UserError(f"cannot reach the Docker daemon at {where} (DOCKER_HOST): start it, "
                        "or point DOCKER_HOST at it (eval \"$(deploy/use-host.sh aws)\")"
                        ) from None
    return client


def stack_health(client: docker.DockerClient, stack: str) -> list[ServiceHealth]:
    """The health of every service of the stack, sorted by name."""
    try:
        services = client.services.list(filters={"label": f"{STACK_LABEL}={stack}"})
    except docker.errors.APIError as error:
        if error.status_code == 503:  # "This node is not a swarm manager."
            raise UserError(f"the Docker engine at {client.api.base_url} is not a swarm "
                            "manager: run deploy/06-swarm.sh first, or point DOCKER_HOST at "
                            "the manager") from None
        raise
    if not services:
        raise UserError(f"no stack named {stack!r} on this swarm (docker stack ls lists them)")
    health = []
    for service in services:
        mode = service.attrs["Spec"]["Mode"]
        wanted = mode["Replicated"]["Replicas"] if "Replicated" in mode else None
        tasks = service.tasks(filters={"desired-state": "running"})
        running = sum(task["Status"]["State"] == "running" for task in tasks)
        status = service.attrs.get("UpdateStatus") or {}
        health.append(ServiceHealth(service.name, running, wanted, status.get("State", ""),
                                    status.get("Message", "")))
    return sorted(health, key=lambda item: item.name)


def wait(client: docker.DockerClient, stack: str, seconds: float, interval: float,
         out=sys.stdout) -> list[ServiceHealth]:
    """Poll until every service has converged or an update stopped; return the last health."""
    deadline = time.monotonic() + seconds
    while True:
        health = stack_health(client, stack)
        if all(item.converged for item in health) or any(item.failed for item in health):
            return health
        if time.monotonic() >= deadline:
            return health
        waiting = ", ".join(item.name for item in health if not item.converged)
        print(f"waiting for {waiting}", file=out, flush=True)
        time.sleep(interval)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="stack_health.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default=DEFAULT_STACK,
                        help=f"the stack's name (default: {DEFAULT_STACK})")
    parser.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                        help="wait up to SECONDS for the stack to converge (default: 0, report)")
    parser.add_argument("--interval", type=float, default=5, metavar="SECONDS",
                        help="seconds between two looks while waiting (default: 5)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        client = connect()
        health = wait(client, args.stack, args.wait, args.interval)
    except UserError as error:
        print(f"stack_health.py: error: {error}", file=sys.stderr)
        return 2
    except docker.errors.DockerException as error:
        print(f"stack_health.py: error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    for item in health:
        print(item)
    failed = [item for item in health if item.failed]
    if failed:
        for item in failed:
            print(f"stack_health.py: error: {item.name}: {item.update.replace('_', ' ')}: "
                  f"{item.message}", file=sys.stderr)
        return 1
    late = [item.name for item in health if not item.converged]
    if late:
        print(f"stack_health.py: error: not converged after {args.wait:.0f} s: "
              f"{', '.join(late)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
