#!/usr/bin/env python3
"""Comparisons behind verify-restore.sh (Python 3 standard library only).

  restore_checks.py migrations --restored VERSIONS.json [--manifest M.json] [--migrations-dir DIR]
  restore_checks.py counts --manifest M.json --restored R.json
  restore_checks.py history --base-url URL --expect M.json
  restore_checks.py field FILE KEY...          print a (nested) value of a JSON file
  restore_checks.py dumpall-diff SOURCE.sql RESTORED.sql

Each command prints what it checked and exits 1 on a mismatch.
"""

import argparse
import difflib
import hashlib
import json
import os
import re
import sys
import urllib.error
import urllib.request


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def folder_versions(folder):
    # diesel stores a migration folder "2026-11-27-000001_create_scripts" as
    # version "20261127000001": the part before the first "_" without dashes.
    versions = []
    for name in sorted(os.listdir(folder)):
        if os.path.isfile(os.path.join(folder, name, "up.sql")):
            versions.append(name.split("_", 1)[0].replace("-", ""))
    return versions


def cmd_migrations(args):
    restored = load(args.restored)
    if not restored:
        fail("the restored database has no applied migrations")
    if args.manifest:
        expected = load(args.manifest)["migrations"]
        if restored != expected:
            fail(f"migrations differ from the backup's manifest: restored {restored}, manifest {expected}")
        print(f"ok: migrations match the manifest ({len(restored)}, latest {restored[-1]})")
    if args.migrations_dir:
        shipped = folder_versions(args.migrations_dir)
        if restored != shipped:
            missing = [v for v in shipped if v not in restored]
            unknown = [v for v in restored if v not in shipped]
            fail(
                f"restored schema is not at this release's version: pending {missing}, "
                f"unknown to this release {unknown} (migrations folder {args.migrations_dir})"
            )
        print(f"ok: migrations at this release's version {shipped[-1]} ({len(shipped)} applied)")


def cmd_counts(args):
    expected = load(args.manifest)["row_counts"]
    restored = load(args.restored)["row_counts"]
    problems = []
    for table in sorted(set(expected) | set(restored)):
        want, got = expected.get(table), restored.get(table)
        status = "ok" if want == got else "MISMATCH"
        print(f"  {table:<28} manifest {want!s:>10}  restored {got!s:>10}  {status}")
        if want != got:
            problems.append(table)
    if problems:
        fail(f"row counts differ from the manifest in {', '.join(problems)}")
    print(f"ok: row counts of {len(expected)} tables match the manifest")


def get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body or b"null")
        except ValueError:
            return e.code, body.decode("utf-8", "replace")


def cmd_history(args):
    expect = load(args.expect)
    known = expect.get("known_session")
    base = args.base_url.rstrip("/")
    if not known:
        # A database without conversations (a new install): the server must
        # still read it; the stored scripts are what there is to read.
        status, body = get_json(f"{base}/api/scripts")
        if status != 200:
            fail(f"GET /api/scripts answered {status}: {body}")
        got, want = len(body["scripts"]), expect["row_counts"].get("scripts")
        if got != want:
            fail(f"the server lists {got} scripts, the manifest counts {want}")
        print(f"ok: no session has messages; the server read the {got} stored scripts")
        return
    status, body = get_json(f"{base}/api/sessions/{known['id']}")
    if status != 200:
        fail(f"GET /api/sessions/{known['id']} answered {status}: {body}")
    messages, after = [], 0
    while True:
        status, body = get_json(f"{base}/api/sessions/{known['id']}/messages?afterSeq={after}")
        if status != 200:
            fail(f"GET /api/sessions/{known['id']}/messages answered {status}: {body}")
        page = body["data"]
        if not page:
            break
        messages.extend(page)
        after = page[-1]["seq"]
    # The API calls the assistant role "ai"; the table stores "assistant".
    lines = [
        f"{m['seq']}:{'assistant' if m['role'] == 'ai' else m['role']}:{m['content']}" for m in messages
    ]
    digest = hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
    got = {"messages": len(messages), "last_seq": messages[-1]["seq"] if messages else 0, "digest": digest}
    want = {k: known[k] for k in ("messages", "last_seq", "digest")}
    if got != want:
        fail(f"session {known['id']} read through the server differs: got {got}, expected {want}")
    print(f"ok: the server read session {known['id']}: {len(messages)} messages, digest {digest[:12]}…")


def cmd_field(args):
    value = load(args.file)
    for key in args.keys:
        value = value[key] if value is not None else None
    if value is None:
        fail(f"{args.file} has no {'.'.join(args.keys)}")
    print(value if isinstance(value, str) else json.dumps(value))


SETVAL = re.compile(r"^(SELECT pg_catalog\.setval\('[^']+', )(\d+)(, (?:true|false)\);)$")


def cmd_dumpall_diff(args):
    with open(args.source, encoding="utf-8") as f:
        source = f.read().splitlines()
    with open(args.restored, encoding="utf-8") as f:
        restored = f.read().splitlines()
    # PostgreSQL WAL-logs sequences 32 values ahead, so after any recovery
    # (crash or point-in-time) a sequence may resume past the last value the
    # source handed out. That is documented behaviour and harmless (ids stay
    # unique); anything else must be byte-identical.
    ahead = 0
    src_norm, rst_norm = [], []
    for a_line, b_line in zip(source, restored):
        a, b = SETVAL.match(a_line), SETVAL.match(b_line)
        if a and b and a.group(1) == b.group(1) and int(b.group(2)) >= int(a.group(2)):
            ahead += int(b.group(2)) != int(a.group(2))
            a_line = b_line = a.group(1) + "N" + a.group(3)
        src_norm.append(a_line)
        rst_norm.append(b_line)
    src_norm.extend(source[len(restored):])
    rst_norm.extend(restored[len(source):])
    diff = list(difflib.unified_diff(src_norm, rst_norm, "source", "restored", lineterm="", n=2))
    if diff:
        print("\n".join(diff[:80]), file=sys.stderr)
        fail(f"pg_dumpall of the restored cluster differs from the source's at the target ({len(diff)} diff lines)")
    print(f"ok: pg_dumpall identical ({len(source)} lines; {ahead} sequence(s) resumed ahead after recovery)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("migrations")
    p.add_argument("--restored", required=True)
    p.add_argument("--manifest")
    p.add_argument("--migrations-dir")
    p.set_defaults(run=cmd_migrations)
    p = sub.add_parser("counts")
    p.add_argument("--manifest", required=True)
    p.add_argument("--restored", required=True)
    p.set_defaults(run=cmd_counts)
    p = sub.add_parser("history")
    p.add_argument("--base-url", required=True)
    p.add_argument("--expect", required=True)
    p.set_defaults(run=cmd_history)
    p = sub.add_parser("field")
    p.add_argument("file")
    p.add_argument("keys", nargs="+")
    p.set_defaults(run=cmd_field)
    p = sub.add_parser("dumpall-diff")
    p.add_argument("source")
    p.add_argument("restored")
    p.set_defaults(run=cmd_dumpall_diff)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
