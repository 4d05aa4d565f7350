#!/bin/sh
# Start the students' relay: the transport map and CA certificate fakemx lab
# wrote into the volume it shares with the relay (never fakemx's state dir with
# the CA's key), a local resolver for the DNS exercises, then Postfix.
set -eu
share=${FAKEMX_SHARE:-/fakemx}  # tests/test_lab_relay.py mounts its own
until [ -s "$share/postfix-transport" ] && [ -s "$share/ca.pem" ]; do sleep 1; done
cp "$share/postfix-transport" /etc/postfix/transport
# Postfix's daemons run as the postfix user; fakemx's state dir is owner-only.
cp "$share/ca.pem" /etc/postfix/fakemx-ca.pem
postmap /etc/postfix/transport

# DNS exercises: the relay looks up <case>.lab.fakemx.test like any domain, and
# a local dnsmasq sends those queries to the fakemx DNS server of that case
# (published ports, listed in dns-zones); every other name, `fakemx` included,
# goes to the resolver the container was given (compose's, or /etc/hosts).
# No cache: every attempt reaches fakemx's DNS, as a student expects to see.
fakemx_ip=$(getent ahostsv4 fakemx | awk 'NR == 1 { print $1 }')
if ! grep -q '^nameserver 127\.0\.0\.1$' /etc/resolv.conf; then
  cp /etc/resolv.conf /etc/resolv.conf.upstream
fi
: > /etc/dnsmasq-lab.conf
if [ -s "$share/dns-zones" ]; then
  grep -v '^#' "$share/dns-zones" | while read -r domain port service smarthost; do
    echo "server=/$domain/$fakemx_ip#$port"
    # The case's smart host is this service's relayhost: Postfix then defers, as
    # for any smart host that does not resolve, instead of bouncing (see
    # fakemx/classroom.py, transport_line).
    postconf -M "$service/unix=$service unix - - y - - smtp -o relayhost=$smarthost" >&2
  done > /etc/dnsmasq-lab.conf
fi
dnsmasq --conf-file=/etc/dnsmasq-lab.conf --resolv-file=/etc/resolv.conf.upstream \
  --listen-address=127.0.0.1 --bind-interfaces --cache-size=0 --pid-file=/run/dnsmasq-lab.pid
printf 'nameserver 127.0.0.1\noptions timeout:2 attempts:1\n' > /etc/resolv.conf

# Debian's init script copies resolv.conf, hosts, nsswitch.conf and the NSS
# libraries into the chroot (/var/spool/postfix) before `postfix start`;
# `postfix start-fg` skips that script. Without it the chrooted smtp has no
# resolv.conf and glibc asks 127.0.0.1: compose's resolver (127.0.0.11) was
# never asked and `fakemx` did not resolve (every message deferred); with the
# dnsmasq above it would work only by that accident. So run it here.
/usr/lib/postfix/configure-instance.sh -
touch /var/log/postfix.log
tail -F /var/log/postfix.log &
exec postfix start-fg
