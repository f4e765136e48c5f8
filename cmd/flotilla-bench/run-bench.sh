#!/usr/bin/env bash
# Reproduces the comparison in BENCHMARKS.md on this machine, all on loopback:
#
#   minio         MinIO, driven directly with minio-go (flotilla-bench s3)
#   distribution  CNCF Distribution v3.1.2 with its s3 driver on that MinIO
#   flotilla      one flotilla node with --blob-store s3 on that MinIO
#   flotilla-cache  a second node on that MinIO with a local blob cache
#                 (--blob-cache-size $BLOB_CACHE): its first pull of a blob
#                 fills the cache, later pulls are served from local disk
#
# Points: 32 MiB blobs with 4 streams (push, then pull), and manifest PUT and
# GET by tag with 1, 16 and 64 clients. Every point runs REPS times, the
# systems interleaved within each repetition; the table shows medians.
#
# Needs: go, curl, and minio + registry from scripts/test.sh's tool cache
# (${FLOTILLA_TOOLS:-~/.cache/flotilla-tools}/bin). Environment knobs:
#   REPS=3  COUNT=32 (blobs per push run)  PULL_ROUNDS=3 (each pulled 3 times)
#   SIZE=32MiB  STREAMS=4
#   MANIFEST_DURATION=10s  CLIENTS="1 16 64"
#   FLOTILLA_BLOB_STORE=s3|fs  (fs: flotilla keeps blobs on its local disk)
#   OUT=dir  (JSON reports and logs are kept there; default a new temp dir)
#   PERF=1   (record a `perf` CPU profile of the flotilla process; the report
#             is printed at the end and perf.data kept in OUT)
#   SYSTEMS="minio distribution flotilla flotilla-cache"
#   BLOB_CACHE=2GiB  (flotilla-cache's --blob-cache-size)
#   CHUNK=8MiB  (also push the blobs in PATCH chunks of that size)
#
# Usage: cmd/flotilla-bench/run-bench.sh    (from anywhere; takes ~15 minutes)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi

REPS=${REPS:-3}
COUNT=${COUNT:-32}
PULL_ROUNDS=${PULL_ROUNDS:-3}
SIZE=${SIZE:-32MiB}
STREAMS=${STREAMS:-4}
MANIFEST_DURATION=${MANIFEST_DURATION:-10s}
CLIENTS=${CLIENTS:-"1 16 64"}
FLOTILLA_BLOB_STORE=${FLOTILLA_BLOB_STORE:-s3}
SYSTEMS=${SYSTEMS:-"minio distribution flotilla flotilla-cache"}
BLOB_CACHE=${BLOB_CACHE:-2GiB}
TOOLS_BIN="${FLOTILLA_TOOLS:-$HOME/.cache/flotilla-tools}/bin"
MINIO_BIN=${MINIO_BIN:-$TOOLS_BIN/minio}
REGISTRY_BIN=${REGISTRY_BIN:-$TOOLS_BIN/registry}
OUT=${OUT:-$(mktemp -d -t flotilla-bench-out.XXXXXX)}
mkdir -p "$OUT"
WORK=$(mktemp -d -t flotilla-bench-work.XXXXXX)

for b in "$MINIO_BIN" "$REGISTRY_BIN"; do
	if [ ! -x "$b" ]; then
		echo "missing $b: run scripts/test.sh once (it installs minio and registry), or set MINIO_BIN / REGISTRY_BIN" >&2
		exit 1
	fi
done

PIDS=()
PERF_PID=""
cleanup() {
	set +e
	if [ -n "$PERF_PID" ]; then
		kill -INT "$PERF_PID" 2>/dev/null
		wait "$PERF_PID" 2>/dev/null
	fi
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

USED_PORTS=" "
freeport() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		case "$USED_PORTS" in *" $p "*) continue ;; esac
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			USED_PORTS="$USED_PORTS$p "
			echo "$p"
			return
		fi
	done
}

# wait_ready URL PID NAME: until URL answers 2xx, while PID lives (60 s).
wait_ready() {
	local i
	for i in $(seq 1 600); do
		if curl -sf -o /dev/null "$1"; then return 0; fi
		if ! kill -0 "$2" 2>/dev/null; then
			echo "$3 exited; log:" >&2
			tail -n 30 "$OUT/$3.log" >&2
			exit 1
		fi
		sleep 0.1
	done
	echo "$3 not ready at $1 after 60s" >&2
	exit 1
}

REV=$(git describe --always --dirty 2>/dev/null || echo unknown)
echo "==> building flotilla and flotilla-bench (tree $REV)"
go build -o "$WORK/flotilla" ./cmd/flotilla
go build -o "$WORK/flotilla-bench" ./cmd/flotilla-bench
BENCH="$WORK/flotilla-bench"

KEY=flotillabench
SECRET=flotillabench-secret
# name=pid of the server processes each system consists of: their CPU time
# per phase gives the "cores used" and "server CPU" columns.
MINIO_ADDR=127.0.0.1:$(freeport)
echo "==> minio on $MINIO_ADDR"
MINIO_ROOT_USER=$KEY MINIO_ROOT_PASSWORD=$SECRET MINIO_BROWSER=off \
	"$MINIO_BIN" server --quiet --address "$MINIO_ADDR" "$WORK/minio-data" >"$OUT/minio.log" 2>&1 &
PIDS+=($!)
wait_ready "http://$MINIO_ADDR/minio/health/live" "$!" minio
MINIO_PID=$!
"$BENCH" s3 --endpoint "$MINIO_ADDR" --access-key $KEY --secret-key $SECRET --bucket distribution --setup-only

DIST_ADDR=127.0.0.1:$(freeport)
echo "==> distribution on $DIST_ADDR (s3 driver on minio, redirect disabled)"
cat >"$WORK/distribution.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: $KEY
    secretkey: $SECRET
    region: us-east-1
    regionendpoint: http://$MINIO_ADDR
    forcepathstyle: true
    bucket: distribution
    secure: false
  redirect:
    disable: true
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $DIST_ADDR
  secret: flotilla-bench
EOF
OTEL_TRACES_EXPORTER=none "$REGISTRY_BIN" serve "$WORK/distribution.yml" >"$OUT/distribution.log" 2>&1 &
PIDS+=($!)
wait_ready "http://$DIST_ADDR/v2/" "$!" distribution
DIST_PID=$!

FL_ADDR=127.0.0.1:$(freeport)
FL_LABEL=flotilla
FL_ARGS=(serve --data-dir "$WORK/flotilla-data" --http-addr "$FL_ADDR" --raft-addr "127.0.0.1:$(freeport)" --grpc-addr "127.0.0.1:$(freeport)")
if [ "$FLOTILLA_BLOB_STORE" = s3 ]; then
	FL_ARGS+=(--blob-store s3 --s3-endpoint "$MINIO_ADDR" --s3-insecure --s3-access-key $KEY --s3-secret-key $SECRET --s3-bucket flotilla)
else
	FL_LABEL=flotilla-fs
fi
echo "==> $FL_LABEL on $FL_ADDR (${FL_ARGS[*]})"
"$WORK/flotilla" "${FL_ARGS[@]}" >"$OUT/flotilla.log" 2>&1 &
FL_PID=$!
PIDS+=($FL_PID)
wait_ready "http://$FL_ADDR/readyz" "$FL_PID" flotilla

FC_ADDR="" FC_PID=""
if [[ " $SYSTEMS " == *" flotilla-cache "* ]]; then
	FC_ADDR=127.0.0.1:$(freeport)
	FC_ARGS=(serve --data-dir "$WORK/flotilla-cache-data" --http-addr "$FC_ADDR" --raft-addr "127.0.0.1:$(freeport)" --grpc-addr "127.0.0.1:$(freeport)"
		--blob-store s3 --s3-endpoint "$MINIO_ADDR" --s3-insecure --s3-access-key $KEY --s3-secret-key $SECRET --s3-bucket flotilla-cache
		--blob-cache-size "$BLOB_CACHE")
	echo "==> flotilla-cache on $FC_ADDR (${FC_ARGS[*]})"
	"$WORK/flotilla" "${FC_ARGS[@]}" >"$OUT/flotilla-cache.log" 2>&1 &
	FC_PID=$!
	PIDS+=($FC_PID)
	wait_ready "http://$FC_ADDR/readyz" "$FC_PID" flotilla-cache
fi

if [ "${PERF:-0}" = 1 ]; then
	echo "==> perf record on flotilla (pid $FL_PID)"
	perf record -F 499 -g -p "$FL_PID" -o "$OUT/flotilla.perf.data" >"$OUT/perf.log" 2>&1 &
	PERF_PID=$!
fi

addr_of() {
	case "$1" in
	distribution) echo "$DIST_ADDR" ;;
	flotilla) echo "$FL_ADDR" ;;
	flotilla-cache) echo "$FC_ADDR" ;;
	esac
}
watch_of() {
	case "$1" in
	minio) echo "minio=$MINIO_PID" ;;
	distribution) echo "distribution=$DIST_PID,minio=$MINIO_PID" ;;
	flotilla) echo "flotilla=$FL_PID,minio=$MINIO_PID" ;;
	flotilla-cache) echo "flotilla=$FC_PID,minio=$MINIO_PID" ;;
	esac
}
label_of() {
	case "$1" in
	flotilla) echo "$FL_LABEL" ;;
	*) echo "$1" ;;
	esac
}

# run SYSTEM NAME ARGS...: one flotilla-bench run, its JSON kept; a failing
# run is reported and the comparison goes on.
run() {
	local watch name=$2
	watch=$(watch_of "$1")
	shift 2
	echo "    $name (load average $(cut -d' ' -f1-3 /proc/loadavg))"
	echo "$name $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/loadavg.txt"
	if ! "$BENCH" "$@" --json --watch-pid "$watch" >"$OUT/$name.json" 2>"$OUT/$name.err"; then
		echo "    !! $name failed or had errors: $(tail -n 3 "$OUT/$name.err" | tr '\n' ' ')" >&2
		jq -r '.results[]? | select(.errors > 0) | "    !! \(.op): \(.errors) errors, first: \(.first_error)"' "$OUT/$name.json" 2>/dev/null >&2 || true
	fi
}

for rep in $(seq 1 "$REPS"); do
	echo "==> repetition $rep/$REPS"
	for sys in $SYSTEMS; do
		if [ "$sys" = minio ]; then
			run minio "minio-s3-$rep" s3 --label minio --endpoint "$MINIO_ADDR" --access-key $KEY --secret-key $SECRET \
				--bucket direct --size "$SIZE" --concurrency "$STREAMS" --count "$COUNT" --get-rounds "$PULL_ROUNDS"
		else
			run "$sys" "$sys-blobs-$rep" blobs --label "$(label_of "$sys")" --registry "$(addr_of "$sys")" \
				--size "$SIZE" --concurrency "$STREAMS" --count "$COUNT" --pull-rounds "$PULL_ROUNDS"
		fi
	done
	if [ -n "${CHUNK:-}" ]; then
		for sys in $SYSTEMS; do
			[ "$sys" = minio ] || [ "$sys" = flotilla-cache ] && continue
			run "$sys" "$sys-blobs-chunked-$rep" blobs --label "$(label_of "$sys")" --registry "$(addr_of "$sys")" \
				--size "$SIZE" --concurrency "$STREAMS" --count "$COUNT" --chunk "$CHUNK" --pull-rounds "$PULL_ROUNDS"
		done
	fi
	for c in $CLIENTS; do
		for sys in $SYSTEMS; do
			[ "$sys" = minio ] || [ "$sys" = flotilla-cache ] && continue
			run "$sys" "$sys-manifests-c$c-$rep" manifests --label "$(label_of "$sys")" --registry "$(addr_of "$sys")" \
				--concurrency "$c" --duration "$MANIFEST_DURATION"
		done
	done
done

if [ -n "$PERF_PID" ]; then
	kill -INT "$PERF_PID" 2>/dev/null || true
	wait "$PERF_PID" 2>/dev/null || true
	PERF_PID=""
fi

echo
echo "## $(date -u +%Y-%m-%d) on $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM ($(uname -srm)); medians of $REPS runs"
echo
echo "flotilla tree $REV; load average over the runs: $(awk '{print $2}' "$OUT/loadavg.txt" | sort -n | awk '{a[NR]=$1} END {print "min " a[1] ", median " a[int((NR+1)/2)] ", max " a[NR]}')"
echo
"$BENCH" table --subject "$FL_LABEL" --baselines distribution,minio "$OUT"
if [ -n "$FC_ADDR" ]; then
	echo
	echo "With the blob cache (flotilla-cache: each blob's first pull fills the cache):"
	echo
	"$BENCH" table --subject flotilla-cache --baselines distribution,minio,"$FL_LABEL" "$OUT" | sed -n '/^| flotilla-cache vs/,$p'
	echo
	echo "flotilla-cache metrics: $(curl -s "http://$FC_ADDR/metrics" | grep '^flotilla_blob_cache' | tr '\n' ' ')"
fi
echo
echo "reports and logs: $OUT"
if [ -f "$OUT/flotilla.perf.data" ]; then
	echo
	echo "## flotilla CPU profile (perf, self time by symbol, top 40)"
	perf report -i "$OUT/flotilla.perf.data" --no-children --sort sym --stdio -g none 2>/dev/null |
		grep -v '^#' | grep -v '^$' | head -n 40
fi
