#!/usr/bin/env bash
# Manifest PUT/s and tag GET/s on the leader and on a follower of a 3-node
# flotilla cluster (blobs in one MinIO), with 1 and 64 clients, beside
# CNCF Distribution v3.1.2 on the same MinIO. All on loopback.
#
# Needs minio + registry from scripts/test.sh's tool cache. Knobs:
#   DURATION=8s  CLIENTS="1 64"  OUT=dir
# Usage: cmd/flotilla-bench/run-cluster-bench.sh   (~3 minutes)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi
DURATION=${DURATION:-8s}
CLIENTS=${CLIENTS:-"1 64"}
TOOLS_BIN="${FLOTILLA_TOOLS:-$HOME/.cache/flotilla-tools}/bin"
OUT=${OUT:-$(mktemp -d -t flotilla-cluster-bench.XXXXXX)}
WORK=$(mktemp -d -t flotilla-cluster-bench-work.XXXXXX)
mkdir -p "$OUT"
PIDS=()
cleanup() {
	set +e
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() {
	for _ in $(seq 1 200); do
		if [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" = "200" ]; then return 0; fi
		sleep 0.1
	done
	echo "not ready: $1" >&2
	return 1
}

go build -o "$WORK/flotilla" ./cmd/flotilla
go build -o "$WORK/flotilla-bench" ./cmd/flotilla-bench
BENCH="$WORK/flotilla-bench"

MINIO_PORT=$(port)
MINIO_ROOT_USER=bench MINIO_ROOT_PASSWORD=bench-secret MINIO_BROWSER=off \
	"$TOOLS_BIN/minio" server --quiet --address "127.0.0.1:$MINIO_PORT" "$WORK/minio" >"$OUT/minio.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MINIO_PORT/minio/health/live"

S3=(--blob-store s3 --s3-endpoint "127.0.0.1:$MINIO_PORT" --s3-insecure --s3-bucket flotilla
	--s3-access-key bench --s3-secret-key bench-secret)
declare -A HTTP GRPC
JOIN=""
for i in 1 2 3; do
	HTTP[$i]=$(port)
	GRPC[$i]=$(port)
	args=(serve --node-id "n$i" --data-dir "$WORK/n$i" --http-addr "127.0.0.1:${HTTP[$i]}"
		--raft-addr "127.0.0.1:$(port)" --grpc-addr "127.0.0.1:${GRPC[$i]}" "${S3[@]}")
	if [ -n "$JOIN" ]; then args+=(--join "$JOIN"); fi
	"$WORK/flotilla" "${args[@]}" >"$OUT/n$i.log" 2>&1 &
	PIDS+=($!)
	wait_http "http://127.0.0.1:${HTTP[$i]}/readyz"
	JOIN="127.0.0.1:${GRPC[1]}"
done

REG_PORT=$(port)
cat >"$WORK/registry.yml" <<YML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  s3: {accesskey: bench, secretkey: bench-secret, region: us-east-1, regionendpoint: "http://127.0.0.1:$MINIO_PORT", bucket: distribution, secure: false, forcepathstyle: true}
  redirect: {disable: true}
  delete: {enabled: true}
http: {addr: "127.0.0.1:$REG_PORT", secret: bench}
YML
curl -s -X PUT "http://127.0.0.1:$MINIO_PORT/distribution" -o /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" --user bench:bench-secret
OTEL_TRACES_EXPORTER=none "$TOOLS_BIN/registry" serve "$WORK/registry.yml" >"$OUT/registry.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$REG_PORT/v2/"

leader=$(curl -s "http://127.0.0.1:${HTTP[1]}/cluster/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader_id"])')
follower=n2
[ "$leader" = n2 ] && follower=n3
echo "leader $leader, follower $follower" >&2
addr() { echo "127.0.0.1:${HTTP[${1#n}]}"; }

echo "| target | clients | manifest PUT/s | PUT p99 ms | tag GET/s | GET p50 ms | GET p99 ms |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for c in $CLIENTS; do
	for target in "distribution:127.0.0.1:$REG_PORT" "leader:$(addr "$leader")" "follower:$(addr "$follower")"; do
		name=${target%%:*}
		reg=${target#*:}
		"$BENCH" manifests --registry "$reg" --concurrency "$c" --duration "$DURATION" --label "$name" --json \
			>"$OUT/$name-$c.json" 2>"$OUT/$name-$c.err"
		python3 - "$OUT/$name-$c.json" "$name" "$c" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ops = {p["op"]: p for p in r.get("phases", r.get("results", []))} if isinstance(r, dict) else {}
def f(op, k):
    p = ops.get(op, {})
    v = p.get(k)
    return "-" if v is None else (f"{v:,.0f}" if k == "ops_per_sec" else f"{v:.2f}")
print(f"| {sys.argv[2]} | {sys.argv[3]} | {f('manifest put','ops_per_sec')} | {f('manifest put','p99_ms')} | {f('tag get','ops_per_sec')} | {f('tag get','p50_ms')} | {f('tag get','p99_ms')} |")
PY
	done
done
echo "reports: $OUT" >&2
