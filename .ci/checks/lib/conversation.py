#!/usr/bin/env python3
"""The conversation happy path against a running HeartRule server.

Usage: conversation.py BASE_URL SESSIONS [--expect-failures]

Creates SESSIONS sessions of the `hello` script, sends one turn to every
session at once (one thread each), reads every history back and checks the
AI's and the user's messages are there. Prints one summary line.

Exit status: 0 when every request succeeded; with --expect-failures, 0 when
at least one request failed (the refusal a check wants to prove) and 1 when
everything succeeded.
"""
import json
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw)
        except ValueError:
            return error.code, raw.decode(errors="replace")


def main():
    base, sessions = sys.argv[1], int(sys.argv[2])
    expect_failures = "--expect-failures" in sys.argv[3:]
    failures = []

    def check(what, status, body, ok=lambda b: True):
        if status != 200 or not ok(body):
            failures.append(f"{what}: HTTP {status}: {json.dumps(body, ensure_ascii=False)[:300]}")
            return False
        return True

    status, scripts = call("GET", f"{base}/api/scripts")
    if not check("list scripts", status, scripts):
        return report(failures, expect_failures, 0)
    hello = [s["id"] for s in scripts["scripts"] if s["scriptName"] == "hello"]
    if not hello:
        failures.append("the hello script is not preloaded")
        return report(failures, expect_failures, 0)

    def create(index):
        status, body = call(
            "POST", f"{base}/api/sessions", {"userId": f"pgb-{index}", "scriptId": hello[0]}
        )
        if check(f"create session {index}", status, body,
                 lambda b: b.get("executionStatus") == "waiting_input"):
            return body["sessionId"]
        return None

    def turn(session):
        status, body = call("POST", f"{base}/api/sessions/{session}/messages", {"content": "小明"})
        check(f"turn of {session}", status, body,
              lambda b: b.get("executionStatus") == "completed")

    def history(session):
        status, body = call("GET", f"{base}/api/sessions/{session}/messages")
        check(f"history of {session}", status, body,
              lambda b: [m["role"] for m in b["data"]].count("user") == 1
              and any(m["role"] == "user" and m["content"] == "小明" for m in b["data"]))

    with ThreadPoolExecutor(max_workers=sessions) as pool:
        created = [s for s in pool.map(create, range(sessions)) if s]
        list(pool.map(turn, created))
        list(pool.map(history, created))
    return report(failures, expect_failures, len(created))


def report(failures, expect_failures, created):
    print(f"sessions created: {created}, failed requests: {len(failures)}")
    for failure in failures[:5]:
        print(f"  {failure}")
    if expect_failures:
        return 0 if failures else 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
