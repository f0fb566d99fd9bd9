#!/usr/bin/env python3
"""quell's dormant-key sweep against Cloud Custodian on the same emulated AWS account.

Runs moto in-process (ThreadedMotoServer) so it can backdate keys and count every API request.
The world: N IAM users, each with two keys. One key was used two days ago; the other was never
used and was created 400 days ago. Both tools run against the same endpoint, each on a fresh
copy of that world:
  (a) `quell sweep aws --yes` (default policy: dormant after 90 days)
  (b) `custodian run` with the equivalent iam-user policy: credential filters
      (last_used_date absent, last_rotated older than 90 days) and
      `remove-keys {disable: true, matched: true}`
The script checks that both disabled exactly the never-used keys, then prints wall time, API
calls (counted at moto) and peak RSS for each.

Usage (run with moto's Python; scripts/test installs it):
  .venv/moto/bin/python benches/sweep_vs_custodian.py --users 100 1000
Needs: target/release/quell (cargo build --release -p quell-cli) and .venv/custodian (pip install c7n).
"""
import argparse, datetime, json, os, socket, subprocess, sys, tempfile, threading, time

import logging

import boto3
from moto.iam.models import AccessKeyLastUsed, iam_backends
from moto.moto_server import werkzeug_app
from moto.server import ThreadedMotoServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCOUNT = "123456789012"  # moto's default account
CALLS = {"n": 0}
_LOCK = threading.Lock()

# Count every API request moto serves (not its own /moto-api endpoints).
_orig_call = werkzeug_app.DomainDispatcherApplication.__call__


def _counting_call(self, environ, start_response):
    if not environ.get("PATH_INFO", "").startswith("/moto-api"):
        with _LOCK:
            CALLS["n"] += 1
    return _orig_call(self, environ, start_response)


werkzeug_app.DomainDispatcherApplication.__call__ = _counting_call
logging.getLogger("werkzeug").setLevel(logging.ERROR)

POLICY = """
policies:
  - name: disable-dormant-access-keys
    resource: iam-user
    filters:
      - type: credential
        key: access_keys.last_used_date
        value: absent
      - type: credential
        key: access_keys.last_rotated
        value_type: age
        op: greater-than
        value: 90
    actions:
      - type: remove-keys
        disable: true
        matched: true
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(url, n):
    iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    for i in range(n):
        name = f"bench-user-{i:05d}"
        iam.create_user(UserName=name)
        iam.create_access_key(UserName=name)
        iam.create_access_key(UserName=name)
    # AWS reports key creation to the second; so must the backdated world.
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    backend = iam_backends[ACCOUNT]["global"]
    dormant = set()
    for user in backend.users.values():
        if not user.name.startswith("bench-user-"):
            continue
        used, unused = user.access_keys[0], user.access_keys[1]
        used.create_date = now - datetime.timedelta(days=200)
        used.last_used = AccessKeyLastUsed(now - datetime.timedelta(days=2), "s3", "us-east-1")
        unused.create_date = now - datetime.timedelta(days=400)
        unused.last_used = None
        dormant.add(unused.access_key_id)
    backend.credential_report = None
    return dormant


def reset_world():
    backend = iam_backends[ACCOUNT]["global"]
    for user in backend.users.values():
        for k in user.access_keys:
            k.status = "Active"
    backend.credential_report = None


def disabled_keys():
    backend = iam_backends[ACCOUNT]["global"]
    return {k.access_key_id for u in backend.users.values() for k in u.access_keys if k.status == "Inactive"}


def measure(cmd, env):
    """Wall time, API calls counted at moto, and peak RSS from GNU time (the exec'd program's
    own peak; Python's wait4 would also count the forked interpreter)."""
    before = CALLS["n"]
    with tempfile.NamedTemporaryFile("r") as rss:
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"{cmd[0]} failed: {p.stderr.decode(errors='replace')[-2000:]}")
        peak_kib = int(rss.read().strip().splitlines()[-1])
    return wall, CALLS["n"] - before, peak_kib / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--quell", default=os.path.join(ROOT, "target/release/quell"))
    ap.add_argument("--custodian", default=os.path.join(ROOT, ".venv/custodian/bin/custodian"))
    args = ap.parse_args()
    rows = []
    for n in args.users:
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        url = f"http://127.0.0.1:{port}"
        try:
            requests_session = boto3.client("iam", endpoint_url=url, region_name="us-east-1",
                                            aws_access_key_id="t", aws_secret_access_key="t")
            requests_session.list_users()  # warm up moto
            dormant = seed(url, n)
            env = dict(os.environ, AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="testing",
                       AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1",
                       AWS_EC2_METADATA_DISABLED="true", MOTO_ACCOUNT_ID=ACCOUNT,
                       MOTO_IAM_LOAD_MANAGED_POLICIES="true")
            results = {}
            reset_world()
            results["quell"] = measure([args.quell, "sweep", "aws", "--yes", "--format", "json"], env)
            assert disabled_keys() == dormant, f"quell disabled {len(disabled_keys())} keys, expected {len(dormant)}"
            reset_world()
            with tempfile.TemporaryDirectory() as d:
                pol = os.path.join(d, "policy.yml")
                open(pol, "w").write(POLICY)
                results["custodian"] = measure([args.custodian, "run", "--cache-period", "0", "-s", os.path.join(d, "out"), "--region", "us-east-1", pol], env)
            assert disabled_keys() == dormant, f"custodian disabled {len(disabled_keys())} keys, expected {len(dormant)}"
            for tool, (wall, calls, rss) in results.items():
                rows.append((n, tool, calls, wall, rss))
        finally:
            server.stop()
            iam_backends[ACCOUNT]["global"].reset()
    print("| users | tool | API calls | wall time | peak RSS |")
    print("|---|---|---|---|---|")
    for n, tool, calls, wall, rss in rows:
        print(f"| {n} | {tool} | {calls} | {wall:.1f} s | {rss:.0f} MB |")


if __name__ == "__main__":
    main()
