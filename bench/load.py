"""Load test: gunicorn on 127.0.0.1, the serving engine against the per-request path, under
1, 8, 32 and 128 concurrent clients.

    python bench/load.py [--model models/covfefe] [--clients 1 8 32 128] [--seconds 20]

For each path (``COVFEFE_ENGINE=1``: the requests of a worker stepped together; ``=0``: each
request runs its own steps in its thread, as before the engine) it starts `covfefe serve` with
2 workers and the path's default settings, then, for each number of clients, has every client
post /api/generate (one candidate, the model's own length) back to back. Prints requests per
second, p50/p95/p99 latency of the answered requests, errors, deliberate 503s, the workers'
memory at the start and end of the run, and the CPU time per answered request of the workers
and of the clients (this process: it shares the machine); then the engine's figures as ratios
against the per-request path. The rate limit is lifted for the run.
"""

import argparse
import json
import os
import resource
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


def load(base: str, clients: int, seconds: float, body: bytes) -> dict:
    """Every client posts back to back for ``seconds``; return what happened."""
    latencies, refused, errors, lock = [], [], [], threading.Lock()
    deadline = time.monotonic() + seconds

    def client():
        while time.monotonic() < deadline:
            request = urllib.request.Request(f"{base}/api/generate", data=body,
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
                if error.code == 503:  # as a client should: wait as Retry-After says
                    time.sleep(float(error.headers.get("Retry-After") or 1))
            except (urllib.error.URLError, OSError) as error:
                with lock:
                    errors.append(repr(error))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
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
            "errors": len(errors), "refused": len(refused), "error_sample": errors[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="artifact (default: the bundled model)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--seconds", type=float, default=20, help="per number of clients")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=280)
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS))
    args = parser.parse_args()
    body = json.dumps({"max_length": args.max_length, "temperature": 0.8}).encode()
    results = {}
    print(f"{args.workers} gunicorn workers, {args.seconds:.0f} s per row, max_length "
          f"{args.max_length}, CPU threads {os.cpu_count()}, load average before "
          f"{os.getloadavg()[0]:.1f}")
    for path in args.paths:
        server, base = start_server(args, PATHS[path])
        try:
            load(base, 2, 2, body)  # warm up: first requests, compiled kernels
            for clients in args.clients:
                before = worker_rss_mb(server.pid)
                cpu = workers_cpu_s(server.pid), resource.getrusage(resource.RUSAGE_SELF)
                result = load(base, clients, args.seconds, body)
                result["rss"] = (before, worker_rss_mb(server.pid))
                used = resource.getrusage(resource.RUSAGE_SELF)
                answered = max(result["answered"], 1)
                result["server_cpu_ms"] = (workers_cpu_s(server.pid) - cpu[0]) / answered * 1e3
                result["client_cpu_ms"] = (used.ru_utime + used.ru_stime - cpu[1].ru_utime
                                           - cpu[1].ru_stime) / answered * 1e3
                results[path, clients] = result
                rss = " / ".join(f"{a:.0f}->{b:.0f}" for a, b in zip(*result["rss"],
                                                                       strict=False))
                print(f"  {path:11s} {clients:4d} clients: {result['rps']:6.1f} requests/s, "
                      f"p50 {result['p50']:6.0f} ms, p95 {result['p95']:6.0f} ms, p99 "
                      f"{result['p99']:6.0f} ms, errors {result['errors']}, 503s "
                      f"{result['refused']}, worker RSS MB {rss}, CPU ms per answer: workers "
                      f"{result['server_cpu_ms']:.1f}, clients {result['client_cpu_ms']:.1f}"
                      + (f" {result['error_sample']}" if result["errors"] else ""), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    if set(args.paths) == set(PATHS):
        print("engine / per-request:")
        for clients in args.clients:
            engine, alone = results["engine", clients], results["per-request", clients]
            print(f"  {clients:4d} clients: requests/s x{engine['rps'] / alone['rps']:.2f}, "
                  f"p50 x{engine['p50'] / alone['p50']:.2f}, "
                  f"p99 x{engine['p99'] / alone['p99']:.2f}")


if __name__ == "__main__":
    main()
