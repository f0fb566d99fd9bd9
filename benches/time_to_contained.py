#!/usr/bin/env python3
"""Time to contained: one GuardDuty finding through the real Lambda binary, call by call.

Starts moto, a proxy in front of it that holds every AWS call for --delay ms (about what an IAM
or DynamoDB call costs from a Lambda) and logs when each call starts and ends, and a stub of
the Lambda Runtime API. Seeds an IAM user with an access key, the ledger table, the verify
queue and the audit bus; hands the function one finding (GuardDuty, the user's key used from
Tor) in enforce mode, and prints the call timeline, the time to the first containing write and
the whole invocation. Usage (after `cargo build --release -p aws-guardduty`, with moto installed
by scripts/test):
  .venv/moto/bin/python benches/time_to_contained.py [--delay 100] [--runs 3]
"""
import argparse, json, os, socket, statistics, subprocess, sys, threading, time, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lambda_cold_start import ROOT, Stub, free_port, start_moto  # noqa: E402

# The writes that contain: the first of these is the moment the identity is contained.
CONTAINING = {
    "UpdateAccessKey", "AttachUserPolicy", "AttachRolePolicy", "PutUserPolicy", "PutRolePolicy",
    "DeleteLoginProfile",
}


class Proxy:
    """Forwards to moto after `delay` seconds; records (start, end, action) per call."""

    def __init__(self, upstream, delay):
        self.calls = []
        self.lock = threading.Lock()
        proxy = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without this, Nagle's algorithm and
            # the client's delayed ACK hold each answer about 40 ms, which is the proxy's, not
            # quell's.
            disable_nagle_algorithm = True

            def log_message(self, *a):
                pass

            def _forward(self):
                start = time.perf_counter()
                n = int(self.headers.get("Content-Length", 0) or 0)
                body = self.rfile.read(n) if n else b""
                target = self.headers.get("X-Amz-Target", "")
                action = target.split(".")[-1] if target else ""
                if not action and b"Action=" in body:
                    action = body.split(b"Action=")[1].split(b"&")[0].decode()
                if not action:
                    action = f"{self.command} {self.path.split('?')[0]}"
                time.sleep(delay)
                req = urllib.request.Request(upstream + self.path, data=body or None, method=self.command)
                for k, v in self.headers.items():
                    if k.lower() not in ("host", "content-length", "connection"):
                        req.add_header(k, v)
                try:
                    with urllib.request.urlopen(req) as r:
                        status, headers, data = r.status, r.getheaders(), r.read()
                except urllib.error.HTTPError as e:
                    status, headers, data = e.code, e.headers.items(), e.read()
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                with proxy.lock:
                    proxy.calls.append((start, time.perf_counter(), action))

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def seed(moto_url, kind):
    """A fresh principal: an IAM user with an access key, or a role (its session is stolen)."""
    import boto3

    kw = dict(endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    iam = boto3.client("iam", **kw)
    name = f"bench-{os.getpid()}-{time.time_ns()}"
    if kind == "role":
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
        role_id = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["RoleId"]
        return name, role_id
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]["AccessKeyId"]
    return name, key


def setup(moto_url, table):
    import boto3

    kw = dict(endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    queue = boto3.client("sqs", **kw).create_queue(QueueName="quell-verify-bench")["QueueUrl"]
    boto3.client("events", **kw).create_event_bus(Name="quell-bench")
    cli = os.path.join(ROOT, "target/release/quell")
    if not os.path.exists(cli):
        cli = os.path.join(ROOT, "target/debug/quell")
    env = dict(os.environ, AWS_ENDPOINT_URL=moto_url, AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_EC2_METADATA_DISABLED="true", QUELL_LEDGER_TABLE=table)
    subprocess.run([cli, "ledger", "init"], env=env, check=True, stdout=subprocess.DEVNULL)
    return queue


def event(kind, name, ident):
    if kind == "role":
        # An EC2 instance's role session used from outside AWS.
        v = json.load(open(os.path.join(ROOT, "events/guardduty/instance-credential-exfiltration-outside.json")))
        d = v["detail"]["resource"]["accessKeyDetails"]
        d["userName"], d["principalId"] = name, f"{ident}:i-0a7c3e9f1b2d4e6f8"
    else:
        v = json.load(open(os.path.join(ROOT, "events/guardduty/iamuser-tor-caller-akia.json")))
        d = v["detail"]["resource"]["accessKeyDetails"]
        d["userName"], d["accessKeyId"] = name, ident
    v["detail"]["accountId"] = "111122223333"
    v["detail"]["id"] = f"bench-{time.time_ns()}"
    v["id"] = f"bench-event-{time.time_ns()}"
    return v


def run_once(binary, moto_url, delay, table, queue, kind):
    name, ident = seed(moto_url, kind)
    proxy = Proxy(moto_url, delay)
    stub = Stub(event(kind, name, ident))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{stub.port}",
        "AWS_LAMBDA_FUNCTION_NAME": "bench", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "AWS_LAMBDA_LOG_GROUP_NAME": "bench", "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}",
        "QUELL_MODE": "enforce", "QUELL_LEDGER_TABLE": table, "QUELL_VERIFY_QUEUE": queue,
        "QUELL_AUDIT_BUS": "quell-bench", "RUST_LOG": "warn",
    }
    p = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stub.done.wait(60)
    p.kill()
    p.wait()
    stub.close()
    proxy.close()
    if stub.served_at is None or stub.response_at is None:
        raise SystemExit(f"{binary}: no invocation completed")
    report = json.loads(stub.response)
    applied = report.get("summary", {}).get("applied", 0)
    t0 = stub.served_at
    calls = sorted((s - t0, e - t0, a) for s, e, a in proxy.calls if s >= t0)
    first = next((e for s, e, a in calls if a in CONTAINING), None)
    return calls, first, stub.response_at - t0, applied


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", type=float, default=100, help="ms held per AWS call")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/aws-guardduty"))
    ap.add_argument("--finding", choices=["user-key", "role-session"], default="user-key",
                    help="an IAM user's access key from Tor, or an EC2 role session used outside AWS")
    args = ap.parse_args()
    moto, url = start_moto()
    try:
        table = f"quell-bench-{os.getpid()}"
        queue = setup(url, table)
        firsts, totals = [], []
        for i in range(args.runs):
            kind = "role" if args.finding == "role-session" else "user"
            calls, first, total, applied = run_once(args.binary, url, args.delay / 1000, table, queue, kind)
            if i == 0:
                print(f"call timeline, {args.delay:.0f} ms per call (ms after the event reached the function):")
                for s, e, a in calls:
                    mark = "  <- first containing write" if a in CONTAINING and e == first else ""
                    print(f"  {s * 1000:7.0f} – {e * 1000:7.0f}  {a}{mark}")
                print(f"  {len(calls)} calls; {applied} actions applied")
            firsts.append(first * 1000 if first is not None else float("nan"))
            totals.append(total * 1000)
        print(f"| finding | delay per call | calls | first containing write (median) | invocation (median) |")
        print(f"|---|---|---|---|---|")
        print(f"| {args.finding} | {args.delay:.0f} ms | {len(calls)} | {statistics.median(firsts):.0f} ms | {statistics.median(totals):.0f} ms |")
    finally:
        moto.kill()


if __name__ == "__main__":
    main()
