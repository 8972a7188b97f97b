#!/usr/bin/env bash
# Memory bombs against the serving image under a hard 1 GB limit with two workers, as the compose
# service runs it: every request (large photos, the issue's bombs: eight black 2000×2000 PNGs in
# 32 KB, large grids as streams and JSON) is answered 200 or 4xx, the kernel records no OOM kill,
# and the service is ready afterwards. Then issue 27's two cases (bench/pressure.py): a dozen
# sockets that declare 8 MiB and send one byte while small requests are served (200) and are
# answered 408 at the body deadline, and eight concurrent /decode of one 2000×2000 entropy stream:
# 200 or 429 with Retry-After, never 5xx. Needs Docker, the image built by smoke-compose.sh (or
# builds it), ../shared/data and the project's .venv (bash scripts/test.sh makes it).
#   bash scripts/smoke-memory.sh
#   VQVAE_IMAGE=vqvae-codec:mine bash scripts/smoke-memory.sh   # another tag
set -euo pipefail
cd "$(dirname "$0")/.."
name="vqvae-memory-$$"
port=${VQVAE_MEMORY_PORT:-18081}
python=${PYTHON:-.venv/bin/python}
image=${VQVAE_IMAGE:-vqvae-codec:latest}
cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

docker image inspect "$image" >/dev/null 2>&1 || docker build -q -t "$image" .
echo "memory: start $image with --memory 1g, two workers"
docker run --detach --name "$name" --memory 1g --memory-swap 1g --read-only --tmpfs /tmp:size=64m,mode=1777 \
  --cap-drop ALL --security-opt no-new-privileges:true \
  -e VQVAE_WORKERS=2 -e VQVAE_PROVIDERS=cpu -p "127.0.0.1:${port}:8000" "$image" >/dev/null

status=0
"$python" -m bench.memory --url "http://127.0.0.1:${port}" --check || status=1
"$python" -m bench.pressure --url "http://127.0.0.1:${port}" --decodes 8 --sockets 12 || status=1

oom_killed=$(docker inspect --format '{{.State.OOMKilled}}' "$name")
# cgroup v2: memory.events; v1: memory.oom_control. Either has an "oom_kill N" line (kernel >= 4.13).
oom_kills=$(docker exec "$name" sh -c 'cat /sys/fs/cgroup/memory.events 2>/dev/null || cat /sys/fs/cgroup/memory/memory.oom_control' \
  | awk '$1 == "oom_kill" {print $2}')
peak=$(docker exec "$name" sh -c 'cat /sys/fs/cgroup/memory.peak 2>/dev/null || cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes')
echo "memory: OOMKilled=${oom_killed}, oom_kill count=${oom_kills:-unknown}, container peak $((peak / 1048576)) MiB of 1024"
[ "$oom_killed" = false ] || status=1
[ "${oom_kills:-0}" = 0 ] || status=1
docker logs "$name" 2>&1 | grep -E "memory budget|Traceback|ERROR" | head -5 || true
[ "$status" = 0 ] && echo "memory: ok" || echo "memory: FAILED" >&2
exit "$status"
