"""Load test: gunicorn on 127.0.0.1, the serving engine against the per-request path, under
1, 8, 32 and 128 concurrent clients.

    python bench/load.py [--model models/covfefe] [--clients 1 8 32 128] [--seconds 20]
    python bench/load.py --paths engine --clients 64 --n 1 8 --retry both   # overload
    python bench/load.py --paths engine --clients 20 --max-length 60 --reload-at 10


For each path (``COVFEFE_ENGINE=1``: the requests of a worker stepped together; ``=0``: each
request runs its own steps in its thread, as before the engine) it starts `covfefe serve` with
2 workers and the path's default settings, then, for each number of clients, has every client
post /api/generate (one candidate, the model's own length) back to back. Prints requests per
second, p50/p95/p99 latency of the answered requests, errors, deliberate 503s, the workers'
memory at the start and end of the run, and the CPU time per answered request of the workers
and of the clients (this process: it shares the machine); then the engine's figures as ratios
against the per-request path. The rate limit is lifted for the run.

``--retry``: polite clients wait as a 503's ``Retry-After`` says, impolite ones retry at once;
``both`` runs each and prints the impolite clients' figures as ratios against the polite
ones' (an overload that feeds on itself shows as a throughput ratio well under 1). ``--n A B``
asks for A to B candidates per request, at random. ``--reload-at S`` sends SIGHUP to gunicorn's
master S seconds into each run (a reload: serve/gunicorn_conf.py) and prints the slowest
answer and the failures.
"""

import argparse
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

PATHS = {"engine": "1", "per-request": "0"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def workers(master: int) -> list[str]:
    """The process ids of the gunicorn workers (the master's children)."""
    return Path(f"/proc/{master}/task/{master}/children").read_text().split()


def worker_rss_mb(master: int) -> list[float]:
    """Resident memory of each gunicorn worker, in MB."""
    sizes = []
    for child in workers(master):
        for line in Path(f"/proc/{child}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(int(line.split()[1]) / 1024)
    return sizes


def workers_cpu_s(master: int) -> float:
    """CPU seconds (user and system) the gunicorn workers have used so far."""
    ticks = 0
    for child in workers(master):
        fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def start_server(args, engine: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "covfefe", "serve", "--port", str(port),
               "--workers", str(args.workers)] + (["--model", args.model] if args.model else [])
    env = {**os.environ, "COVFEFE_RATE_LIMIT": "1000000 per minute", "COVFEFE_ENGINE": engine}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{base}/api/health", timeout=1)
            return server, base
        except OSError:
            time.sleep(0.2)
    server.kill()
    sys.exit("the server did not start")


def load(base: str, clients: int, seconds: float, body: dict, *, n: tuple[int, int] = (1, 1),
         polite: bool = True, reload_at: float | None = None, master: int | None = None
         ) -> dict:
    """Every client posts back to back for ``seconds`` (asking for ``n`` candidates, at random
    in that range; after a 503 waiting as Retry-After says when ``polite``, else at once);
    return what happened. With ``reload_at``, SIGHUP to ``master`` that far into the run."""
    latencies, refused, errors, lock = [], [], [], threading.Lock()
    deadline = time.monotonic() + seconds

    def client(rng):
        while time.monotonic() < deadline:
            data = json.dumps({**body, "n": rng.randint(*n)}).encode()
            request = urllib.request.Request(f"{base}/api/generate", data=data,
                                             headers={"Content-Type": "application/json"})
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    response.read()
                with lock:
                    latencies.append(time.perf_counter() - started)
            except urllib.error.HTTPError as error:
                error.read()
                with lock:
                    (refused if error.code == 503 else errors).append(error.code)
                if error.code == 503 and polite:  # as a client should: wait as it is told
                    time.sleep(float(error.headers.get("Retry-After") or 1))
            except (urllib.error.URLError, OSError) as error:
                with lock:
                    errors.append(repr(error))

    threads = [threading.Thread(target=client, args=(random.Random(seed),))
               for seed in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    if reload_at is not None:
        time.sleep(reload_at)
        os.kill(master, signal.SIGHUP)
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {"rps": len(latencies) / elapsed, "answered": len(latencies),
            "p50": percentile(0.5) if latencies else float("nan"),
            "p95": percentile(0.95) if latencies else float("nan"),
            "p99": percentile(0.99) if latencies else float("nan"),
            "max": latencies[-1] * 1000 if latencies else float("nan"),
            "errors": len(errors), "refused": len(refused), "error_sample": errors[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="artifact (default: the bundled model)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--seconds", type=float, default=20, help="per number of clients")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=280)
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS))
    parser.add_argument("--n", type=int, nargs=2, default=(1, 1), metavar=("LOW", "HIGH"),
                        help="candidates per request, at random in this range (default 1 1)")
    parser.add_argument("--retry", choices=("polite", "impolite", "both"), default="polite",
                        help="after a 503: wait as Retry-After says, retry at once, or each")
    parser.add_argument("--reload-at", type=float, default=None, metavar="SECONDS",
                        help="send SIGHUP to gunicorn's master this far into each run")
    args = parser.parse_args()
    body = {"max_length": args.max_length, "temperature": 0.8}
    manners = ["polite", "impolite"] if args.retry == "both" else [args.retry]
    results = {}
    print(f"{args.workers} gunicorn workers, {args.seconds:.0f} s per row, max_length "
          f"{args.max_length}, n {args.n[0]}-{args.n[1]}, CPU threads {os.cpu_count()}, load "
          f"average before {os.getloadavg()[0]:.1f}")
    for path in args.paths:
        server, base = start_server(args, PATHS[path])
        try:
            load(base, 2, 2, body)  # warm up: first requests, compiled kernels
            for clients in args.clients:
                for manners_now in manners:
                    before = worker_rss_mb(server.pid)
                    cpu = workers_cpu_s(server.pid), resource.getrusage(resource.RUSAGE_SELF)
                    result = load(base, clients, args.seconds, body, n=tuple(args.n),
                                  polite=manners_now == "polite", reload_at=args.reload_at,
                                  master=server.pid)
                    result["rss"] = (before, worker_rss_mb(server.pid))
                    used = resource.getrusage(resource.RUSAGE_SELF)
                    answered = max(result["answered"], 1)
                    result["server_cpu_ms"] = ((workers_cpu_s(server.pid) - cpu[0]) / answered
                                               * 1e3)
                    result["client_cpu_ms"] = (used.ru_utime + used.ru_stime - cpu[1].ru_utime
                                               - cpu[1].ru_stime) / answered * 1e3
                    results[path, clients, manners_now] = result
                    rss = " / ".join(f"{a:.0f}->{b:.0f}" for a, b in zip(*result["rss"],
                                                                           strict=False))
                    print(f"  {path:11s} {clients:4d} {manners_now:8s} clients: "
                          f"{result['rps']:6.1f} requests/s, p50 {result['p50']:6.0f} ms, p95 "
                          f"{result['p95']:6.0f} ms, p99 {result['p99']:6.0f} ms, max "
                          f"{result['max']:6.0f} ms, errors {result['errors']}, 503s "
                          f"{result['refused']}, worker RSS MB {rss}, CPU ms per answer: "
                          f"workers {result['server_cpu_ms']:.1f}, clients "
                          f"{result['client_cpu_ms']:.1f}"
                          + (f" {result['error_sample']}" if result["errors"] else ""),
                          flush=True)
                    if args.reload_at is not None:  # the new workers settle before the next
                        time.sleep(15)
        finally:
            server.terminate()
            server.wait(timeout=30)
    if set(args.paths) == set(PATHS):
        print("engine / per-request:")
        for clients in args.clients:
            for manners_now in manners:
                engine = results["engine", clients, manners_now]
                alone = results["per-request", clients, manners_now]
                print(f"  {clients:4d} {manners_now} clients: requests/s "
                      f"x{engine['rps'] / alone['rps']:.2f}, "
                      f"p50 x{engine['p50'] / alone['p50']:.2f}, "
                      f"p99 x{engine['p99'] / alone['p99']:.2f}")
    if len(manners) == 2:
        print("impolite / polite (clients retrying a 503 at once / waiting as told):")
        for path in args.paths:
            for clients in args.clients:
                polite, rude = (results[path, clients, manner] for manner in manners)
                print(f"  {path:11s} {clients:4d} clients: requests/s "
                      f"x{rude['rps'] / polite['rps']:.2f}, p99 x{rude['p99'] / polite['p99']:.2f}"
                      f", workers' CPU ms per answer x"
                      f"{rude['server_cpu_ms'] / polite['server_cpu_ms']:.2f}")


if __name__ == "__main__":
    main()
