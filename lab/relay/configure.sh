#!/bin/sh
# The students' relay, configured from Debian's own Postfix defaults: run once
# by the image build (Dockerfile), and by tests/test_lab_relay.py on a copy of
# /etc/postfix, so the relay CI proves is the relay the class gets.
#
# Debian's defaults are kept on purpose, the chroot included (master.cf.dist
# runs smtp chrooted in /var/spool/postfix): a student's relay is a stock one.
set -eu
cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf
cp /usr/share/postfix/master.cf.dist /etc/postfix/master.cf
postconf -e \
  myhostname=relay.lab.fakemx.test \
  mydestination= \
  relayhost= \
  inet_interfaces=loopback-only \
  inet_protocols=ipv4 \
  transport_maps=hash:/etc/postfix/transport \
  smtp_tls_security_level=may \
  smtp_tls_CAfile=/etc/postfix/fakemx-ca.pem \
  smtp_tls_loglevel=1 \
  maillog_file=/var/log/postfix.log \
  queue_run_delay=30s \
  minimal_backoff_time=30s \
  maximal_backoff_time=120s \
  maximal_queue_lifetime=1h \
  bounce_queue_lifetime=1h
# The lab runs fakemx at --time-scale 0.1 (a 600 s stall lasts 60 s), and the
# relay's timeouts are Postfix's defaults times 0.1 to match: "slower than the
# relay waits" keeps its meaning and no exercise keeps a class waiting minutes.
postconf -e \
  smtp_connect_timeout=3s \
  smtp_helo_timeout=30s \
  smtp_mail_timeout=30s \
  smtp_rcpt_timeout=30s \
  smtp_data_init_timeout=12s \
  smtp_data_xfer_timeout=18s \
  smtp_data_done_timeout=60s \
  smtp_starttls_timeout=30s \
  smtp_quit_timeout=30s
# The transport map (written by `fakemx lab`) sends each exercise through the
# client its scenario is about: the default smtp (opportunistic TLS), or one of
# these (TLS verified, TLS required, SMTPS, a bad EHLO name). Chrooted as smtp is.
postconf -M \
  tlsverify/unix="tlsverify unix - - y - - smtp -o smtp_tls_security_level=verify -o smtp_tls_verify_cert_match=hostname,mx.fakemx.test" \
  tlsencrypt/unix="tlsencrypt unix - - y - - smtp -o smtp_tls_security_level=encrypt" \
  tlswrapped/unix="tlswrapped unix - - y - - smtp -o smtp_tls_wrappermode=yes -o smtp_tls_security_level=verify -o smtp_tls_verify_cert_match=hostname,mx.fakemx.test" \
  badhelo/unix="badhelo unix - - y - - smtp -o smtp_helo_name=localhost.localdomain"
