"""Load test: gunicorn with 2 workers on 127.0.0.1 under 32 concurrent clients for 30 s.

    python bench/load.py [--model models/covfefe] [--clients 32] [--seconds 30]

Each client posts /api/generate (one candidate, the model's own length) back to back. Prints
requests per second, p50/p99 latency and errors. The rate limit is lifted for the run.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="artifact (default: the bundled model)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=280)
    args = parser.parse_args()
    port = free_port()
    command = [sys.executable, "-m", "covfefe", "serve", "--port", str(port),
               "--workers", str(args.workers)] + (["--model", args.model] if args.model else [])
    env = {**os.environ, "COVFEFE_RATE_LIMIT": "1000000 per minute"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{base}/api/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        else:
            sys.exit("the server did not start")
        body = json.dumps({"max_length": args.max_length, "temperature": 0.8}).encode()
        latencies, errors, lock = [], [], threading.Lock()
        deadline = time.monotonic() + args.seconds

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
                except (urllib.error.URLError, OSError) as error:
                    with lock:
                        errors.append(repr(error))

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    print(f"{args.workers} gunicorn workers, {args.clients} clients, {elapsed:.0f} s, "
          f"max_length {args.max_length}, CPU threads {os.cpu_count()}")
    if latencies:
        print(f"  {len(latencies) / elapsed:.1f} requests/s, p50 {percentile(0.5):.0f} ms, "
              f"p99 {percentile(0.99):.0f} ms, errors {len(errors)}")
    else:
        print(f"  no request succeeded; errors {len(errors)}: {errors[:3]}")


if __name__ == "__main__":
    main()
