// A webhook receiver for benchmarks: answers every POST with 204 at once and, when
// stopped (SIGTERM or SIGINT), prints how many deliveries it took and over how long.
//   node loadtest/webhook-receiver.mjs [PORT]
import http from 'node:http';

const port = Number(process.argv[2] || 8090);
let count = 0;
let first = 0;
let last = 0;
http
  .createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const now = Date.now();
      if (count === 0) first = now;
      last = now;
      count += 1;
      res.writeHead(204).end();
    });
  })
  .listen(port, '127.0.0.1');
const report = () => {
  const seconds = Math.max((last - first) / 1000, 0.001);
  console.log(`deliveries=${count} over_s=${seconds.toFixed(1)} per_s=${(count / seconds).toFixed(0)}`);
  process.exit(0);
};
process.on('SIGTERM', report);
process.on('SIGINT', report);
