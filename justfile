# HeartRule developer recipes. `just --list` shows them.
set dotenv-load := false

# Run the server (in-memory store and mock LLM unless configured otherwise).
run *ARGS:
    cargo run -p heartrule-server -- {{ARGS}}

# Start PostgreSQL and Redis if they are down.
services:
    bash scripts/services.sh start

# The full test suite (needs PostgreSQL and Redis: `just services`).
test *ARGS: services
    cargo test --workspace {{ARGS}}

# Tests of one crate, e.g. `just test-crate heartrule-script-engine`.
test-crate CRATE *ARGS:
    cargo test -p {{CRATE}} {{ARGS}}

lint:
    cargo clippy --workspace --all-targets -- -D warnings

fmt:
    cargo fmt --all

# Criterion benchmarks (script load, one turn, commit-turn).
bench:
    cargo bench --workspace

# What CI runs.
ci:
    bash .ci/run
