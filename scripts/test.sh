#!/usr/bin/env bash
# Installs everything the tests need (only what is missing) and runs the whole
# suite: go vet, then go test -race over every package, cluster tests included.
#
# Needs only the Go module proxy and Debian's apt packages. Go-built tools are
# cached in ${FLOTILLA_TOOLS:-$HOME/.cache/flotilla-tools}/bin and reused.
#
# Extra arguments go to `go test` (e.g. scripts/test.sh -run TestClients).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi

TOOLS_DIR="${FLOTILLA_TOOLS:-${HOME:-/root}/.cache/flotilla-tools}"
TOOLS_BIN="$TOOLS_DIR/bin"
mkdir -p "$TOOLS_BIN"

# name of the installed binary, then the go install argument
GO_TOOLS=(
	"minio github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"
	"conformance github.com/opencontainers/distribution-spec/conformance@v0.0.0-20260831232431-97274622c111"
	"crane github.com/google/go-containerregistry/cmd/crane@v0.22.1"
	"regctl github.com/regclient/regclient/cmd/regctl@v0.11.7"
	"oras oras.land/oras/cmd/oras@v1.3.6"
	"registry github.com/distribution/distribution/v3/cmd/registry@v3.1.2"
)

# A stamp beside each binary records the version it was built from, so a
# version bump here reinstalls it.
for entry in "${GO_TOOLS[@]}"; do
	name="${entry%% *}"
	pkg="${entry#* }"
	stamp="$TOOLS_BIN/.$name.version"
	if [ -x "$TOOLS_BIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pkg" ]; then
		continue
	fi
	[ "$name" = minio ] && echo "$pkg" >"$TOOLS_BIN/.minio.static"
	echo "==> installing $name ($pkg)"
	# Outside the repository, so that the module's own go.mod plays no part.
	# Static (CGO_ENABLED=0): the deployment test puts these binaries into
	# images FROM scratch.
	(cd "$TOOLS_DIR" && CGO_ENABLED=0 GOBIN="$TOOLS_BIN" GOFLAGS=-buildvcs=false go install -trimpath "$pkg")
	echo "$pkg" >"$stamp"
done

# The deployment test takes its static MinIO from static/ (one build serves both).
minio_pkg=$(printf '%s\n' "${GO_TOOLS[@]}" | sed -n 's/^minio //p')
if [ "$(cat "$TOOLS_DIR/static/.minio.version" 2>/dev/null)" != "$minio_pkg" ]; then
	mkdir -p "$TOOLS_DIR/static"
	if [ "$(cat "$TOOLS_BIN/.minio.static" 2>/dev/null)" != "$minio_pkg" ]; then
		echo "==> building a static minio for the deployment test"
		(cd "$TOOLS_DIR" && CGO_ENABLED=0 GOBIN="$TOOLS_DIR/static" GOFLAGS=-buildvcs=false go install -trimpath "$minio_pkg")
	else
		cp "$TOOLS_BIN/minio" "$TOOLS_DIR/static/minio"
	fi
	printf '%s' "$minio_pkg" >"$TOOLS_DIR/static/.minio.version"
fi

if ! command -v skopeo >/dev/null 2>&1; then
	echo "==> installing skopeo (apt)"
	SUDO=""
	if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
	$SUDO apt-get update
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y skopeo
fi

export PATH="$TOOLS_BIN:$PATH"
export FLOTILLA_REQUIRE_TOOLS=1
# cluster-tests build the flotilla binary with -race too: a data race in the
# server under real clients stops the node and fails the test.
export FLOTILLA_RACE_BINARY="${FLOTILLA_RACE_BINARY:-1}"

echo "==> tools"
for t in go minio conformance crane regctl oras registry skopeo; do
	printf '  %-12s %s\n' "$t" "$(command -v "$t")"
done

echo "==> go vet ./..."
go vet ./...

echo "==> go test -race -count=1 -p 1 -timeout 40m ./..."
# One package at a time: the process and fault tests measure timing-sensitive
# behaviour (elections, catch-up) and should not share 2 cores with the rest.
go test -race -count=1 -p 1 -timeout 40m "$@" ./...
