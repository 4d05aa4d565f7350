#!/bin/sh
# Wait until fakemx is ready: its HTTP API answers GET /api/version with 200.
# The API starts after the SMTP listener, so then SMTP is ready too, whatever
# the profile does to connections. Any language can do the same: poll that URL
# (with `Authorization: Bearer TOKEN`) until it answers 200, with a deadline.
#
#   FAKEMX_URL           the API (default http://127.0.0.1:8025)
#   FAKEMX_API_TOKEN     its token, if it has one
#   FAKEMX_WAIT_SECONDS  give up after this long (default 60): exit 1, one line
set -u
url="${FAKEMX_URL:-http://127.0.0.1:8025}/api/version"
deadline=$(( $(date +%s) + ${FAKEMX_WAIT_SECONDS:-60} ))
until curl --silent --fail --output /dev/null --max-time 2 \
        --header "Authorization: Bearer ${FAKEMX_API_TOKEN:-}" "$url"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "wait-for-fakemx: no answer from $url after ${FAKEMX_WAIT_SECONDS:-60} s" \
             "(is the service up, and FAKEMX_URL and FAKEMX_API_TOKEN right?)" >&2
        exit 1
    fi
    sleep 0.5
done
echo "wait-for-fakemx: ready at $url"
