#!/bin/sh
# `make run`: starts qodd on its embedded defaults (127.0.0.1:8080, data in ./var, simulated network).
# On first start it registers a sandbox app and prints its credentials and a copy-paste example.
set -eu
build=${1:-build}
data=${QOD_DATA:-./var}
listen=${QOD_LISTEN:-127.0.0.1:8080}
creds="$data/sandbox-app.json"

"$build/qodd" --data "$data" --listen "$listen" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid; exit 0' INT TERM
# Wait for the admin socket (qodd creates it once it is ready), then register the app once.
i=0
while [ ! -S "$data/qodd.sock" ]; do
    kill -0 $pid 2>/dev/null || { wait $pid; exit 1; }
    i=$((i + 1)); [ $i -gt 500 ] && { echo "qodd did not start" >&2; kill $pid; exit 1; }
    sleep 0.02
done
if [ ! -f "$creds" ]; then
    (umask 077 && "$build/qodctl" --data "$data" app create --name sandbox --env sandbox --json > "$creds")
    id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["client_id"])' "$creds")
    secret=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["client_secret"])' "$creds")
    whsec=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["webhook_secret"])' "$creds")
    cat <<TXT

A sandbox app was created (saved in $creds):
  client_id      $id
  client_secret  $secret
  webhook_secret $whsec

Get a token, then create a session:
  TOKEN=\$(curl -s -u '$id:$secret' -d grant_type=client_credentials -d scope=qod \\
      http://$listen/oauth2/token | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -s -X POST http://$listen/camara/qod/v0/sessions -H "Authorization: Bearer \$TOKEN" \\
      -H 'Content-Type: application/json' \\
      -d '{"device":{"phoneNumber":"+99999991000"},"qosProfile":"QOS_L","duration":60,
           "webhook":{"notificationUrl":"http://127.0.0.1:9000/callbacks"}}'

Stop with Ctrl-C.
TXT
else
    echo "Sandbox app credentials: $creds"
fi
wait $pid
