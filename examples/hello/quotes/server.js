// The "quotes" service: a random quote as JSON. Plain Node.js, no packages. flotilla passes PORT
// (and FLOTILLA_INSTANCE, which it reports so you can watch load balancing).
'use strict';
const http = require('http');

const quotes = [
  'Make it work, make it right, make it fast.',
  'Simplicity is prerequisite for reliability.',
  'The network is reliable. (It is not.)',
  'Premature optimization is the root of all evil.',
  'Deploy on Friday with zero failed requests.',
];
const instance = process.env.FLOTILLA_INSTANCE || 'quotes';
let served = 0;

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    return res.end('ok\n');
  }
  if (req.url === '/' || req.url.startsWith('/random')) {
    served++;
    const body = JSON.stringify({ quote: quotes[Math.floor(Math.random() * quotes.length)], instance, served });
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(body + '\n');
  }
  res.writeHead(404, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ error: 'no such path', path: req.url }) + '\n');
});
server.keepAliveTimeout = 65000;  // longer than the gateway's upstream idle timeout
server.listen(Number(process.env.PORT), '127.0.0.1', () => {
  console.log(`${instance} listening on 127.0.0.1:${process.env.PORT}`);
});
// Exits at once on SIGTERM: flotilla drains the instance before it sends the signal.
process.on('SIGTERM', () => process.exit(0));
