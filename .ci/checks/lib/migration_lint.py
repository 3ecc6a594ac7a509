#!/usr/bin/env python3
"""Expand/contract lint of the migrations (docs/operations/upgrades.md).

During a rolling update the previous version of the server runs against the
new schema, so a migration's up.sql must only expand it. Statements that can
break the previous version are refused unless the migration says why it is
safe, on a line of its up.sql:

    -- compat: reviewed: <why the previous version still works>
    -- compat: contract: <the release after which nothing uses what goes>

A contract migration is released only once no running version needs what it
removes (see the upgrades guide). Usage: migration_lint.py MIGRATIONS_DIR
"""
import pathlib
import re
import sys

# What the previous version can trip over, with the reason shown.
RISKY = [
    (r"\bDROP\s+TABLE\b", "drops a table"),
    (r"\bDROP\s+COLUMN\b", "drops a column"),
    (r"\bRENAME\b", "renames"),
    (r"\bALTER\s+COLUMN\s+\S+\s+(SET\s+DATA\s+)?TYPE\b", "changes a column type"),
    (r"\bSET\s+NOT\s+NULL\b", "makes a column NOT NULL"),
    (r"\bDROP\s+DEFAULT\b", "drops a default"),
    (r"\bDROP\s+CONSTRAINT\b", "drops a constraint"),
    (r"\bADD\s+CONSTRAINT\s+\S+\s+(CHECK|UNIQUE|FOREIGN\s+KEY|EXCLUDE)\b",
     "adds a constraint the previous version's writes may violate"),
    (r"\bCREATE\s+UNIQUE\s+INDEX\b", "adds a unique index"),
    (r"\bTRUNCATE\b", "truncates"),
]
ADD_COLUMN = re.compile(r"\bADD\s+COLUMN\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)([^,;]*)", re.I)
MARKER = re.compile(r"^\s*--\s*compat:\s*(reviewed|contract):\s*\S", re.I | re.M)


def statements(sql):
    """The SQL without comments, split into statements (no dollar quoting
    is used in our migrations)."""
    code = re.sub(r"--[^\n]*", "", sql)
    code = re.sub(r"/\*.*?\*/", "", code, flags=re.S)
    return [s.strip() for s in code.split(";") if s.strip()]


def findings(sql):
    found = []
    for statement in statements(sql):
        flat = " ".join(statement.split())
        for pattern, why in RISKY:
            if re.search(pattern, flat, re.I):
                found.append(f"{why}: {flat[:120]}")
        for match in ADD_COLUMN.finditer(flat):
            rest = match.group(3)
            if re.search(r"\bNOT\s+NULL\b", rest, re.I) and not re.search(r"\bDEFAULT\b", rest, re.I):
                found.append(f"adds NOT NULL column {match.group(2)} without a default: {flat[:120]}")
    return found


def main():
    root = pathlib.Path(sys.argv[1])
    migrations = sorted(p for p in root.iterdir() if p.is_dir())
    if not migrations:
        sys.exit(f"no migrations under {root}")
    failed = False
    for migration in migrations:
        up, down = migration / "up.sql", migration / "down.sql"
        if not up.is_file() or not down.is_file():
            print(f"{migration.name}: needs both up.sql and down.sql", file=sys.stderr)
            failed = True
            continue
        sql = up.read_text(encoding="utf-8")
        risky = findings(sql)
        if risky and not MARKER.search(sql):
            failed = True
            print(f"{migration.name}/up.sql is not additive and carries no "
                  f"'-- compat: reviewed|contract: <why>' line:", file=sys.stderr)
            for finding in risky:
                print(f"  {finding}", file=sys.stderr)
        else:
            state = "reviewed" if risky else "additive"
            print(f"{migration.name}: {state}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
