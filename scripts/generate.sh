#!/usr/bin/env bash
# Regenerates everything derived from proto/: third_party/protovalidate (the
# buf/validate/validate.proto our API imports) and the Go code in gen/.
# Needs the network only the first time (npm ci, Go modules); never the Buf
# Schema Registry.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"

# buf, pinned by package-lock.json.
if [[ ! -x node_modules/.bin/buf ]]; then
  # --ignore-scripts: the package's bin shim runs the platform binary without
  # its optional postinstall step.
  npm ci --ignore-scripts --no-audit --no-fund
fi

# Plugins, pinned by the tool directives in go.mod. buf runs local plugins
# from PATH.
go build -o bin/ \
  google.golang.org/protobuf/cmd/protoc-gen-go \
  connectrpc.com/connect/cmd/protoc-gen-connect-go
export PATH="$root/bin:$root/node_modules/.bin:$PATH"

# The Buf Schema Registry is out of reach, so print validate.proto from the
# descriptor in protovalidate's Go module (see tools/protovalidate-source).
validate_proto=third_party/protovalidate/buf/validate/validate.proto
mkdir -p "$(dirname "$validate_proto")"
go run ./tools/protovalidate-source >"$validate_proto.tmp"
mv "$validate_proto.tmp" "$validate_proto"

buf lint
# Start from an empty gen/ so files of deleted protos disappear.
rm -rf gen
buf generate

echo "buf $(buf --version): generated gen/ and $validate_proto"
