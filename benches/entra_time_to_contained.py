#!/usr/bin/env python3
"""Time to contained on the Entra side: one Entra ID Protection risky-user record through the
real custom handler, call by call.

Starts a fake of Microsoft Graph and of the App Service managed-identity endpoint that holds
every call for --delay ms (about what a Graph call costs) and logs when each starts and ends;
starts the release `handler` as the Functions host would (enforce mode, managed identity); posts
one `EntraRiskEvents` Event Hub batch holding a high-risk user, exactly as the host does; and
prints the call timeline, the time to the first containing write (the disable, or the session
revocation) and the whole invocation. The handler re-reads the record from Graph before acting
(ARCHITECTURE invariant 24), runs without a ledger here, and takes its first token in the
invocation (a cold handler; a warm one holds it).

Usage (after `cargo build --profile handler -p azure-handler`):
  python3 benches/entra_time_to_contained.py [--delay 100] [--runs 5]
"""
import argparse, http.client, json, os, statistics, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from azure_handler import ROOT, free_port, wait_ready  # noqa: E402
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
USER = "3b9e2f71-4c8d-4a5e-9f1b-6d2c8e7a0b45"
UPN = "rosa.garcia@contoso.com"


class Graph:
    def __init__(self, delay):
        self.calls = []
        self.lock = threading.Lock()
        g = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *a):
                pass

            def _answer(self, status, body=None):
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                start = time.perf_counter()
                n = int(self.headers.get("Content-Length", 0) or 0)
                if n:
                    self.rfile.read(n)
                time.sleep(delay)
                path = self.path.split("?")[0]
                if path == "/msi/token":
                    status, body = 200, {"access_token": "t", "expires_on": str(int(time.time()) + 3600),
                                         "token_type": "Bearer", "resource": "https://graph.microsoft.com"}
                elif self.command == "GET" and path == f"/v1.0/identityProtection/riskyUsers/{USER}":
                    status, body = 200, {"id": USER, "userPrincipalName": UPN, "riskLevel": "high",
                                         "riskState": "atRisk", "riskDetail": "none", "isDeleted": False,
                                         "isProcessing": False, "riskLastUpdatedDateTime": "2026-12-04T11:49:00Z"}
                elif self.command == "GET" and path.startswith("/v1.0/users/"):
                    status, body = 200, {"id": USER, "userPrincipalName": UPN, "accountEnabled": True,
                                         "onPremisesSyncEnabled": None,
                                         "signInSessionsValidFromDateTime": "2026-01-01T00:00:00Z"}
                elif self.command == "PATCH":
                    status, body = 204, None
                elif path.endswith("/revokeSignInSessions"):
                    status, body = 200, {"value": True}
                elif path.endswith("/confirmCompromised"):
                    status, body = 204, None
                else:
                    status, body = 200, {"value": []}
                end = time.perf_counter()
                with g.lock:
                    g.calls.append((start, end, f"{self.command} {path}"))
                self._answer(status, body)

            do_GET = do_POST = do_PATCH = _handle

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def containing(call):
    return call.startswith("PATCH /v1.0/users/") or call.endswith("/revokeSignInSessions")


def run_once(binary, delay, show):
    g = Graph(delay)
    url = f"http://127.0.0.1:{g.port}"
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""), "FUNCTIONS_CUSTOMHANDLER_PORT": str(port),
        "QUELL_MODE": "enforce", "QUELL_AZURE_CREDENTIAL": "managed_identity",
        "IDENTITY_ENDPOINT": f"{url}/msi/token", "IDENTITY_HEADER": "x",
        "QUELL_GRAPH_URL": url, "QUELL_GRAPH_SCOPE": "https://graph.microsoft.com/.default",
        "AZURE_TENANT_ID": TENANT, "RUST_LOG": "warn",
    }
    p = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port)
    record = {"records": [{"time": "2026-12-04T11:50:00Z", "tenantId": TENANT, "category": "RiskyUsers",
                           "properties": {"id": USER, "userPrincipalName": UPN, "riskLevel": "high",
                                          "riskState": "atRisk", "riskDetail": "none",
                                          "riskLastUpdatedDateTime": "2026-12-04T11:49:00Z",
                                          "isDeleted": False, "isProcessing": False}}]}
    body = json.dumps({"Data": {"events": json.dumps([json.dumps(record)])},
                       "Metadata": {"sys": {"MethodName": "EntraRiskEvents", "UtcNow": "2026-12-04T12:00:00Z"}}})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t0 = time.perf_counter()
    c.request("POST", "/EntraRiskEvents", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    out = json.loads(r.read())
    total = (time.perf_counter() - t0) * 1000
    p.kill()
    p.wait()
    g.server.shutdown()
    report = out.get("ReturnValue", {})
    applied = report.get("summary", {}).get("applied", 0)
    assert r.status == 200 and applied >= 2, out
    calls = sorted(g.calls)
    first = min((end for (start, end, name) in calls if containing(name)), default=None)
    if show:
        for start, end, name in calls:
            print(f"  {(start - t0) * 1000:7.0f} – {(end - t0) * 1000:7.0f}  {name}")
        print(f"  {len(calls)} calls; {applied} actions applied")
    return len(calls), (first - t0) * 1000, total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/handler/handler"))
    args = ap.parse_args()
    rows = [run_once(args.binary, args.delay / 1000, i == 0) for i in range(args.runs)]
    print("| finding | delay per call | calls | first containing write (median) | invocation (median) |")
    print("|---|---|---|---|---|")
    print(f"| Entra risky user (Event Hub) | {args.delay} ms | {rows[0][0]} | "
          f"{statistics.median(r[1] for r in rows):.0f} ms | {statistics.median(r[2] for r in rows):.0f} ms |")


if __name__ == "__main__":
    main()
