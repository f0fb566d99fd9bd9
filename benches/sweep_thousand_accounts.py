#!/usr/bin/env python3
"""The scheduled sweep across a thousand accounts, the way it runs in AWS.

moto runs in-process (ThreadedMotoServer) so the bench can seed IAM in each account and count
every request per account. The world: an organization with N member accounts, each with a few
IAM users holding one recently used key and one key never used in 400 days.

Then the real function binaries run against a stub of the Lambda Runtime API:
  1. the sweep scheduler (`aws-sweep-scheduler`), once: it lists the organization and emits one
     `Sweep Requested` event per account onto the bus (PutEvents, 10 entries a call);
  2. the sweeper (`aws-sweeper`), handed each of those events as its own invocation, the way
     EventBridge invokes it: it assumes the member role in that account and sweeps it.
Lambda runs sweeper invocations concurrently, one per environment; this bench runs them one
after another in one process, so it reports the time per account and the sum.

It checks that every dormant key, and only those, was deactivated, then prints: scheduler time
and calls, total and per-account sweeper time (median, p95), calls per account (median, max),
and the sweeper process's peak RSS (its high-water mark over all N invocations).

Usage (after `cargo build --release -p aws-sweeper -p aws-sweep-scheduler`; moto from
scripts/test):
  .venv/moto/bin/python benches/sweep_thousand_accounts.py --accounts 1000 --users 3
"""
import argparse, collections, datetime, json, os, statistics, sys, threading, time, logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import subprocess

# quell's own account: moto's default, which it answers for any key it did not issue. Each
# member account is reached the real way, by AssumeRole into its member role: moto then serves
# that account for the session's keys (so MOTO_ACCOUNT_ID, which would pin one account for
# every request, must not be set).
HOME = "123456789012"
os.environ.pop("MOTO_ACCOUNT_ID", None)

import boto3
from moto.iam.models import AccessKeyLastUsed, iam_backends
from moto.moto_server import werkzeug_app
from moto.server import ThreadedMotoServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lambda_cold_start import ROOT, free_port  # noqa: E402

MEMBER_ROLE = "QuellMemberRole"
CALLS = collections.Counter()  # access key -> requests
KEY_ACCOUNT = {}  # access key -> account (from AssumeRole answers)
_LOCK = threading.Lock()
_orig_call = werkzeug_app.DomainDispatcherApplication.__call__


def _counting_call(self, environ, start_response):
    if not environ.get("PATH_INFO", "").startswith("/moto-api"):
        auth = environ.get("HTTP_AUTHORIZATION", "")
        key = auth.split("Credential=")[1].split("/")[0] if "Credential=" in auth else "-"
        with _LOCK:
            CALLS[key] += 1
    return _orig_call(self, environ, start_response)


werkzeug_app.DomainDispatcherApplication.__call__ = _counting_call
logging.getLogger("werkzeug").setLevel(logging.ERROR)


class Runtime:
    """A Lambda Runtime API stub that hands out `events` one by one and times each."""

    def __init__(self, events):
        self.events = list(events)
        self.i = 0
        self.served = {}
        self.answers = {}
        self.done = threading.Event()
        rt = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if rt.i >= len(rt.events):
                    rt.done.set()
                    time.sleep(60)
                    return
                i = rt.i
                rt.i += 1
                body = json.dumps(rt.events[i]).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", f"req-{i}")
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 900000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", f"arn:aws:lambda:us-east-1:{HOME}:function:bench")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                rt.served[i] = time.perf_counter()

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                i = int(self.path.split("/")[-2].split("-")[1])
                rt.answers[i] = (time.perf_counter(), json.loads(self.rfile.read(n) or b"null"))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def run(binary, events, url, extra):
    rt = Runtime(events)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{rt.port}",
        "AWS_LAMBDA_FUNCTION_NAME": "bench", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "AWS_LAMBDA_LOG_GROUP_NAME": "bench", "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "homekey0000000000000", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": url, "RUST_LOG": "error",
        "QUELL_MEMBER_ROLE_NAME": MEMBER_ROLE, **extra,
    }
    p = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(rt.answers) < len(events):
        if p.poll() is not None:
            raise SystemExit(f"{binary} exited after {len(rt.answers)} of {len(events)} invocations")
        time.sleep(0.01)
    # The process's high-water mark over every invocation it ran.
    peak_kib = 0
    for line in open(f"/proc/{p.pid}/status"):
        if line.startswith("VmHWM:"):
            peak_kib = int(line.split()[1])
    p.kill()
    p.wait()
    rt.server.shutdown()
    return rt, peak_kib / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--users", type=int, default=3)
    ap.add_argument("--target-dir", default=os.path.join(ROOT, "target/release"))
    args = ap.parse_args()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="seedkey000000000000",
              aws_secret_access_key="t")
    t0 = time.perf_counter()
    org = boto3.client("organizations", **kw)
    org.create_organization(FeatureSet="ALL")
    accounts = []
    for i in range(args.accounts):
        r = org.create_account(Email=f"acct{i}@example.com", AccountName=f"member-{i:04d}")
        accounts.append(r["CreateAccountStatus"]["AccountId"])
    sts = boto3.client("sts", **kw)
    bus = boto3.client("events", **kw)
    bus.create_event_bus(Name="quell-audit")
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    dormant = set()
    for a in accounts:
        c = sts.assume_role(RoleArn=f"arn:aws:iam::{a}:role/{MEMBER_ROLE}", RoleSessionName="seed")["Credentials"]
        iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id=c["AccessKeyId"],
                           aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"])
        for u in range(args.users):
            iam.create_user(UserName=f"user-{u}")
            iam.create_access_key(UserName=f"user-{u}")
            iam.create_access_key(UserName=f"user-{u}")
        backend = iam_backends[a]["global"]
        for user in backend.users.values():
            used, unused = user.access_keys[0], user.access_keys[1]
            used.create_date = now - datetime.timedelta(days=200)
            used.last_used = AccessKeyLastUsed(now - datetime.timedelta(days=2), "s3", "us-east-1")
            unused.create_date = now - datetime.timedelta(days=400)
            unused.last_used = None
            dormant.add((a, unused.access_key_id))
        backend.credential_report = None
    print(f"seeded {len(accounts)} accounts x {args.users} users in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    common = {"QUELL_MODE": "enforce", "QUELL_AUDIT_BUS": "quell-audit"}
    # 1. The scheduler: list the organization, request one sweep per account.
    CALLS.clear()
    sched, sched_rss = run(os.path.join(args.target_dir, "aws-sweep-scheduler"),
                           [{"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}], url, common)
    (t_end, answer) = sched.answers[0]
    # The organization's accounts: the members and the management account itself.
    listed = answer.get("accounts", []) if isinstance(answer, dict) else []
    assert set(accounts) <= set(listed) and len(listed) == len(accounts) + 1, answer
    sched_time = t_end - sched.served[0]
    sched_calls = sum(CALLS.values())

    # 2. The sweeper, one invocation per account, as EventBridge delivers the requests.
    events = [{"version": "0", "id": f"ev-{i}", "detail-type": "Sweep Requested", "source": "quell",
               "account": HOME, "time": now.isoformat().replace("+00:00", "Z"), "region": "us-east-1",
               "resources": [], "detail": {"account": a}} for i, a in enumerate(listed)]
    CALLS.clear()
    sweeps, sweep_rss = run(os.path.join(args.target_dir, "aws-sweeper"), events, url, common)
    times = [(sweeps.answers[i][0] - sweeps.served[i]) * 1000 for i in range(len(events))]
    failed = [sweeps.answers[i][1] for i in range(len(events)) if sweeps.answers[i][1].get("status") == "failed"]
    assert not failed, failed[:3]
    # Calls per account: requests signed with that account's member-role keys, plus its AssumeRole.
    per_key = {k: v for k, v in CALLS.items() if k not in ("homekey0000000000000", "-")}
    per_account = sorted(per_key.values())
    home_calls = CALLS.get("homekey0000000000000", 0)
    disabled = {(a, k.access_key_id) for a in accounts for u in iam_backends[a]["global"].users.values()
                for k in u.access_keys if k.status == "Inactive"}
    assert disabled == dormant, f"{len(disabled)} keys disabled, {len(dormant)} dormant"
    server.stop()

    q = statistics.quantiles(times, n=20)
    print(f"| accounts swept | users each | scheduler | sweeper, all accounts in a row | per account (median / p95) | calls per account (median / max) | peak RSS (scheduler / sweeper) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {len(listed)} | {args.users} | {sched_time:.2f} s, {sched_calls} calls | {sum(times) / 1000:.1f} s | "
          f"{statistics.median(times):.0f} / {q[18]:.0f} ms | {statistics.median(per_account):.0f} / {max(per_account)} "
          f"(+{home_calls / len(accounts):.1f} in quell's account) | {sched_rss:.0f} / {sweep_rss:.0f} MB |")


if __name__ == "__main__":
    main()
