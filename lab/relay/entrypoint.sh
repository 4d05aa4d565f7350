#!/bin/sh
# Build the transport map fakemx lab wrote into the volume it shares with the
# relay (the map and the CA certificate only, never fakemx's state dir with the
# CA's key), then run Postfix in the foreground with its log on stdout too.
set -eu
until [ -s /fakemx/postfix-transport ] && [ -s /fakemx/ca.pem ]; do sleep 1; done
cp /fakemx/postfix-transport /etc/postfix/transport
# Postfix's daemons run as the postfix user; fakemx's state dir is owner-only.
cp /fakemx/ca.pem /etc/postfix/fakemx-ca.pem
postmap /etc/postfix/transport
touch /var/log/postfix.log
tail -F /var/log/postfix.log &
exec postfix start-fg
