#!/usr/bin/env python3
"""Cold start of quell's Lambda functions, measured locally.

For each function binary: start moto (for sts:GetCallerIdentity at init) and a stub of the
Lambda Runtime API on 127.0.0.1, spawn the binary as Lambda would, and time
  init   = process start -> first GET /runtime/invocation/next (SDK clients built, STS answered)
  invoke = event handed out -> POST /response (decode, plan, dry-run report)
Also prints the size of every Lambda binary in the target directory. Usage (after `cargo build --release`):
  benches/lambda_cold_start.py [--runs 10] [--target-dir target/release]
"""
import argparse, json, os, socket, statistics, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUNCTIONS = {
    "aws-guardduty": "events/guardduty/instance-credential-exfiltration-outside.json",
    "aws-securityhub": "events/securityhub/imported-guardduty-access-key.json",
    "aws-access-analyzer": "events/access-analyzer/unused-access-key.json",
    "aws-runbook": "events/runbook/quarantine-iam-user.json",
}
# Every Lambda binary, for the size table (the goal: at most 8 MB each, stripped).
ALL_LAMBDAS = list(FUNCTIONS) + ["aws-verify", "aws-release-expired", "aws-sweep-scheduler", "aws-sweeper"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stub:
    """A minimal Lambda Runtime API: hands out one event, records timings."""

    def __init__(self, event):
        self.event = event
        self.first_next = None
        self.served_at = None
        self.response_at = None
        self.response = None
        self.done = threading.Event()
        stub = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if stub.first_next is None:
                    stub.first_next = time.perf_counter()
                    body = json.dumps(stub.event).encode()
                    self.send_response(200)
                    self.send_header("Lambda-Runtime-Aws-Request-Id", "bench-1")
                    self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 60000))
                    self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:111122223333:function:bench")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    stub.served_at = time.perf_counter()
                else:
                    stub.done.wait(30)  # hold the second /next until the run ends

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                stub.response = self.rfile.read(n)
                stub.response_at = time.perf_counter()
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                stub.done.set()

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.done.set()
        self.server.shutdown()


def start_moto():
    exe = os.environ.get("QUELL_MOTO_SERVER", os.path.join(ROOT, ".venv/moto/bin/moto_server"))
    port = free_port()
    env = dict(os.environ, MOTO_ACCOUNT_ID="111122223333", MOTO_IAM_LOAD_MANAGED_POLICIES="true")
    p = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return p, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise SystemExit("moto did not start: run scripts/test once to install it")


def run_once(binary, event, moto_url):
    stub = Stub(event)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{stub.port}",
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "AWS_LAMBDA_LOG_GROUP_NAME": "bench",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": moto_url,
        "QUELL_MODE": "dry-run",
        "RUST_LOG": "warn",
    }
    t0 = time.perf_counter()
    p = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stub.done.wait(30)
    p.kill()
    p.wait()
    stub.close()
    if stub.first_next is None or stub.response_at is None:
        raise SystemExit(f"{binary}: no invocation completed")
    report = json.loads(stub.response)
    assert report.get("mode") == "dry-run", report
    return (stub.first_next - t0) * 1000, (stub.response_at - stub.served_at) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--target-dir", default=os.path.join(ROOT, "target/release"))
    args = ap.parse_args()
    moto, url = start_moto()
    try:
        print(f"| function | binary size | init to first /next (median, p90) | first invoke (median) |")
        print(f"|---|---|---|---|")
        for fn, ev in FUNCTIONS.items():
            binary = os.path.join(args.target_dir, fn)
            event = json.load(open(os.path.join(ROOT, ev)))
            inits, invokes = [], []
            for _ in range(args.runs):
                i, v = run_once(binary, event, url)
                inits.append(i)
                invokes.append(v)
            inits.sort()
            p90 = inits[min(len(inits) - 1, int(len(inits) * 0.9))]
            size = os.path.getsize(binary) / 1e6
            print(f"| {fn} | {size:.1f} MB | {statistics.median(inits):.1f} ms, {p90:.1f} ms | {statistics.median(invokes):.2f} ms |")
    finally:
        moto.kill()
    print()
    print("| binary | stripped size |")
    print("|---|---|")
    for fn in ALL_LAMBDAS:
        path = os.path.join(args.target_dir, fn)
        if os.path.exists(path):
            print(f"| {fn} | {os.path.getsize(path) / 1e6:.2f} MB |")


if __name__ == "__main__":
    main()
