// nodemailer's smtp-server with a handler that discards every message: the
// library's own cost, the Node peer of bench/sink_throughput.py's bare aiosmtpd.
// Its options are the library's defaults but AUTH, which it would otherwise
// require before MAIL (so it reverse-resolves each client, as shipped:
// bench/node/loopback-dns.js keeps those lookups on loopback).
//
//     node bench/node/smtp-server-sink.js PORT    # listens on 127.0.0.1:PORT
'use strict';
const { SMTPServer } = require('smtp-server');

const server = new SMTPServer({
    disabledCommands: ['AUTH'],
    logger: false,
    onData(stream, session, callback) {
        stream.on('end', () => callback());
        stream.resume(); // read and drop
    },
});
server.on('error', (error) => console.error(`smtp-server: ${error.message}`));
server.listen(Number(process.argv[2]), '127.0.0.1', () => console.log('ready'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
