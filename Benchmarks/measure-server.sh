#!/usr/bin/env bash
# The scale-out measurements of docs/PERFORMANCE.md ("Workers and the API"): a throwaway
# PostgreSQL cluster with its durable defaults (fsync on), a mock model server, then
#   - runs/s of 1, 2 and 4 `troupe worker` processes over PostgreSQL (and 1 over SQLite),
#   - the in-process CPU per model call with a PostgreSQL journal next to SQLite,
#   - the API's cost: create + follow through `troupe serve`, on SQLite and on PostgreSQL.
# Prints one JSON line per measurement. Run from anywhere; builds what it needs (release), or
# uses the `troupe` executable that $TROUPE names.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
if [ -z "${TROUPE:-}" ]; then
    (cd "$root" && swift build -c release --scratch-path .build-release --product troupe >&2) || exit 1
fi
(cd "$here" && swift build -c release --product troupe-bench >&2) || exit 1
troupe="${TROUPE:-$root/.build-release/release/troupe}"
B="$here/.build/release/troupe-bench"
work="$(mktemp -d)"
chmod 755 "$work"
url="$(TROUPE_PG_DURABLE=1 "$root/scripts/test-postgres" start "$work/pg")" || exit 1
"$troupe" mock-server --port 8089 --steps 5 >"$work/mock.log" 2>&1 &
mock=$!
trap 'kill $mock 2>/dev/null; "$root/scripts/test-postgres" stop "$work/pg"; rm -rf "$work"' EXIT
sleep 1
mock_url=http://127.0.0.1:8089/v1
bench() { "$B" "$@" || echo "{\"failed\": \"$*\"}"; }
echo "# $(date -u +%FT%TZ), $(nproc) cores, PostgreSQL $(psql --version 2>/dev/null | awk '{print $3}') fsync on" >&2
for round in 1 2; do
    for workers in 1 2 4; do
        bench fleet --troupe "$troupe" --store "$url" --base-url $mock_url --workers $workers --runs 2000
    done
    bench fleet --troupe "$troupe" --store "sqlite:$work/fleet-$round.db" --base-url $mock_url --workers 1 --runs 2000
    bench overhead --base-url $mock_url --runs 1000 --concurrency 50 --store "$url"
    bench overhead --base-url $mock_url --runs 1000 --concurrency 50 --store "sqlite:$work/overhead-$round.db"
    bench api --troupe "$troupe" --store "sqlite:$work/api-$round.db" --base-url $mock_url --runs 1000
    bench api --troupe "$troupe" --store "$url" --base-url $mock_url --runs 1000
done
# Last: the runs it creates stay pending (no worker), and their workspaces are gone afterwards.
bench api --troupe "$troupe" --store "$url" --base-url $mock_url --runs 2000 --workers 0 --create-only
