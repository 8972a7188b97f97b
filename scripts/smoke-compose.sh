#!/usr/bin/env bash
# Container smoke test, for any machine with Docker and Compose v2:
#   build and start the service with compose, wait until healthy, real /encode and /decode calls
#   with a real PNG checked for a sensible result, gRPC readiness and metadata, then `docker compose down`.
#   bash scripts/smoke-compose.sh
set -euo pipefail
cd "$(dirname "$0")/.."
project="vqvae-smoke-$$"
export VQVAE_PUBLISH_PORT=${VQVAE_PUBLISH_PORT:-18080}
compose() { docker compose -p "$project" "$@"; }
cleanup() { compose down --volumes --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "smoke: validating compose files (default and gpu profile)"
docker compose config --quiet
docker compose --profile gpu config --quiet

echo "smoke: build and start"
compose up --detach --build --wait --wait-timeout 180 codec
docker image inspect vqvae-codec:latest --format 'smoke: image vqvae-codec:latest is {{.Size}} bytes'
user=$(compose exec -T codec id -u)
[ "$user" != 0 ] || { echo "smoke: the container runs as root" >&2; exit 1; }

if command -v python3 >/dev/null; then
  python3 scripts/smoke_check.py "http://127.0.0.1:${VQVAE_PUBLISH_PORT}"
else  # no python on the host: run the same check inside the container, against itself
  compose exec -T codec python - http://127.0.0.1:8000 <scripts/smoke_check.py
fi
# gRPC from inside the container: the image has grpcio, and both workers listen on 8001 (SO_REUSEPORT).
compose exec -T codec python - 127.0.0.1:8001 <scripts/smoke_grpc.py

echo "smoke: stop (SIGTERM, graceful)"
compose stop --timeout 30 codec
compose down --volumes --remove-orphans
echo "smoke: ok"
