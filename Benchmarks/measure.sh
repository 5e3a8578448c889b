#!/usr/bin/env bash
# Runs every troupe-bench measurement of docs/PERFORMANCE.md in one session, against two mock
# servers it starts on 127.0.0.1 (ports 8089 and 8090) and stops at the end. Run from anywhere;
# it builds what it needs (release). Prints one JSON line per measurement.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
(cd "$root" && swift build -c release --scratch-path .build-release --product troupe >&2) || exit 1
(cd "$here" && swift build -c release --product troupe-bench >&2) || exit 1
troupe="$root/.build-release/release/troupe"
troupe_bench="$here/.build/release/troupe-bench"
# A measurement that fails is reported as such and the others go on.
bench() { "$troupe_bench" "$@" || echo "{\"failed\": \"$*\"}"; }
work="$(mktemp -d)"
"$troupe" mock-server --port 8089 --steps 5 >"$work/mock-fast.log" 2>&1 &
fast=$!
"$troupe" mock-server --port 8090 --steps 2 --latency-ms 2000 >"$work/mock-slow.log" 2>&1 &
slow=$!
trap 'kill $fast $slow 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 1
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fast_url=http://127.0.0.1:8089/v1
slow_url=http://127.0.0.1:8090/v1
echo "# $(date -u +%FT%TZ), $(nproc) cores" >&2
for round in 1 2 3; do
    bench baseline --base-url $fast_url --runs 300 --concurrency 50
    bench overhead --base-url $fast_url --runs 300 --concurrency 50 --store memory
    bench overhead --base-url $fast_url --runs 300 --concurrency 50 --store "sqlite:$work/nonstream-$round.db"
done
for round in 1 2; do
    bench baseline --base-url $fast_url --runs 300 --concurrency 50 --stream
    bench overhead --base-url $fast_url --runs 300 --concurrency 50 --stream --store memory
    bench overhead --base-url $fast_url --runs 300 --concurrency 50 --stream --store "sqlite:$work/stream-$round.db"
done
bench baseline --base-url $slow_url --steps 2 --runs 1000 --concurrency 1000 --warmup 0
bench overhead --base-url $slow_url --steps 2 --runs 1000 --concurrency 1000 --warmup 0 --store "sqlite:$work/c1000.db"
bench overhead --base-url $slow_url --steps 2 --runs 1000 --concurrency 1000 --warmup 0 --store memory
bench baseline --steps 2 --runs 1000 --concurrency 1000 --latency-ms 2000 --warmup 0
bench overhead --steps 2 --runs 1000 --concurrency 1000 --latency-ms 2000 --warmup 0 --store "sqlite:$work/c1000-in.db"
bench baseline --base-url $slow_url --steps 2 --runs 10000 --concurrency 10000 --connections 10000 --warmup 0
bench overhead --base-url $slow_url --steps 2 --runs 10000 --concurrency 10000 --connections 10000 --warmup 0 \
    --store "sqlite:$work/c10000.db"
bench journal --events 1000
bench journal --events 1000
