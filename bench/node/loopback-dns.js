// Loaded with `node --require` into each Node peer of the bench. Both
// reverse-resolve every client (smtp-server's default). For 127.0.0.1 Node's
// resolver answers from /etc/hosts without a packet; where /etc/hosts lacks it,
// it would ask the machine's nameserver, off loopback. Pointed here at a
// loopback port where nothing answers, such a lookup fails at once instead (the
// client is then named [127.0.0.1]) and nothing leaves 127.0.0.0/8.
'use strict';
require('node:dns').setServers(['127.0.0.1:9']);
