#!/bin/bash
# AB_SETUP for a gift storm with webhooks: registers a platform endpoint for
# `gift.sent` on the benchmark server (127.0.0.1:8080) pointing at
# loadtest/webhook-receiver.mjs on 127.0.0.1:8090. Needs loadtest/webhooks.toml as
# AB_EXTRA (it allows loopback deliveries).
set -eu
token=$(curl -sf -X POST http://127.0.0.1:8080/api/dev/token -H 'content-type: application/json' \
  -d '{"user":"bench-admin","name":"Bench","role":"admin"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
curl -sf -X POST http://127.0.0.1:8080/api/admin/webhooks -H "authorization: Bearer $token" \
  -H 'content-type: application/json' \
  -d '{"url":"http://127.0.0.1:8090/hook","events":["gift.sent"]}' > /dev/null
