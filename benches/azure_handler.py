#!/usr/bin/env python3
"""The Azure custom handler's start-up time and memory, measured locally.

Spawns the release `handler` on a free 127.0.0.1 port as the Functions host would, times
process start -> first answered GET / (the host's readiness probe), then sends N invocations
of the triple-encoded Defender XDR Event Hub batch (dry-run) over one keep-alive connection and
reads the resident memory (VmRSS) before and after. Usage (after `cargo build --profile handler -p azure-handler`):
  benches/azure_handler.py [--invocations 10000] [--binary target/handler/handler]
"""
import argparse, http.client, json, os, socket, statistics, subprocess, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port):
    """Polls the handler's readiness probe (`GET /`), as the Functions host does."""
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/")
            if c.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.0005)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--invocations", type=int, default=10000)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/handler/handler"))
    ap.add_argument("--starts", type=int, default=10)
    args = ap.parse_args()
    body = open(os.path.join(ROOT, "events/functions-host/eventhub-batch-triple-encoded.json"), "rb").read()
    env = {"PATH": os.environ.get("PATH", ""), "QUELL_MODE": "dry-run", "RUST_LOG": "warn"}

    starts = []
    for i in range(args.starts):
        port = free_port()
        t0 = time.perf_counter()
        p = subprocess.Popen([args.binary], env=dict(env, FUNCTIONS_CUSTOMHANDLER_PORT=str(port)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready(port)
        starts.append((time.perf_counter() - t0) * 1000)
        if i < args.starts - 1:
            p.kill(); p.wait()

    pid = p.pid
    rss_start = rss_kib(pid)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t0 = time.perf_counter()
    for _ in range(args.invocations):
        c.request("POST", "/DefenderEvents", body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        out = r.read()
        assert r.status == 200, out
    elapsed = time.perf_counter() - t0
    rss_end = rss_kib(pid)
    report = json.loads(out)["ReturnValue"]
    assert report["summary"]["dry_run"] == 4, report
    p.kill(); p.wait()
    print(f"| measure | value |")
    print(f"|---|---|")
    print(f"| binary size | {os.path.getsize(args.binary) / 1e6:.1f} MB |")
    print(f"| start to first answered GET / (median of {args.starts}) | {statistics.median(starts):.1f} ms |")
    print(f"| RSS after start | {rss_start / 1024:.1f} MiB |")
    print(f"| RSS after {args.invocations} invocations | {rss_end / 1024:.1f} MiB |")
    print(f"| throughput (one connection, dry-run) | {args.invocations / elapsed:.0f} invocations/s |")


if __name__ == "__main__":
    main()
