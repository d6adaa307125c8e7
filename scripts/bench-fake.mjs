#!/usr/bin/env node
// A cheap fake APNs or FCM v1 for `make bench FAKE=node`: Node.js built-in modules only.
//
// The Python fakes (sylkpush/testing/fake_apns.py, fake_fcm.py) cost about as
// much CPU per request as the daemon itself, and share the bench machine's
// cores with it; this one costs a fraction of that, so the bench measures the
// daemon.  It checks less than they do (README, "make bench") and scripts no
// faults but delays, stop and start.
//
//   node scripts/bench-fake.mjs --service apns|fcm --dir DIR --control-port 0 [--max-streams N] [--quiet]
//
// DIR holds what bench_lib.write_node_fake_files made: ca.crt, server.crt,
// server.key, and client.crt/client.key (APNs: the client certificate it
// requires must be signed by ca.crt) or the service-account file (FCM: its
// key signs the OAuth assertions; its token_uri names the port of the token
// endpoint, an HTTPS (HTTP/1.1) server of its own, as Google's is).  Prints
// "<name> listening on HOST:PORT" then "control port N"; at SIGTERM, one
// "stats {...}" line.  The control port (127.0.0.1, HTTP):
//   GET /stats, GET /delivered (the call-id of each delivery, one a line),
//   POST /fault/slow?count=MS (answer every push after MS, by timer),
//   POST /fault/stop, POST /fault/start (stop listening and drop every connection; listen again).

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    service: { type: 'string' },
    dir: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    'control-port': { type: 'string', default: '0' },
    'max-streams': { type: 'string' },
    quiet: { type: 'boolean', default: false },  // it logs nothing but errors anyway
  },
});
if (!['apns', 'fcm'].includes(args.service) || !args.dir) {
  console.error('usage: bench-fake.mjs --service apns|fcm --dir DIR [--control-port N] [--max-streams N]');
  process.exit(2);
}
const read = (name) => fs.readFileSync(path.join(args.dir, name));
const APNS = args.service === 'apns';
// the Python fakes' limits: APNs as the bench asks, Google's front ends 100
const maxStreams = Number(args['max-streams'] ?? (APNS ? 1000 : 100));

let delayMs = 0;
const answers = {};   // status -> count
const delivered = []; // the call-id of each delivery
let requests = 0;
let connections = 0;

// -- what both services share -------------------------------------------------

const isObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);

/** The call-id a rendered sylk payload carries (as sylkpush.testing.control.call_id_of). */
function callIdOf(payload) {
  if (!isObject(payload)) return '';
  for (const candidate of [payload, payload.data, (payload.message || {}).data]) {
    if (isObject(candidate)) {
      const value = candidate['call-id'] || candidate.message_id || candidate['file-id'];
      if (value) return String(value);
    }
  }
  return '';
}

function parseJson(body) {
  try { return JSON.parse(body); } catch { return undefined; }
}

/** Answer ``stream`` after the current delay (by timer); a delivery counts once its answer is written. */
function answer(stream, status, headers, body, callId) {
  const send = () => {
    if (stream.closed || stream.destroyed) return;  // reset, or the connection went: not delivered
    stream.respond({ ':status': status, ...headers }, { endStream: body === undefined });
    if (body !== undefined) stream.end(body);
    answers[status] = (answers[status] || 0) + 1;
    if (callId !== undefined) delivered.push(callId);
  };
  if (delayMs > 0) setTimeout(send, delayMs); else send();
}

function answerJson(stream, status, document, callId) {
  answer(stream, status, { 'content-type': 'application/json; charset=UTF-8' }, JSON.stringify(document), callId);
}

// -- APNs ---------------------------------------------------------------------

const PUSH_TYPES = new Set(['alert', 'background', 'location', 'voip', 'complication', 'fileprovider',
  'mdm', 'liveactivity', 'pushtotalk', 'widgets', 'controls']);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Apple's checks, in Apple's order, for a client that showed its certificate: [status, reason, payload]. */
function checkApns(headers, rawHeaders, body) {
  if (headers[':method'] !== 'POST') return [405, 'MethodNotAllowed'];
  const devicePath = /^\/3\/device\/(.*)$/.exec(headers[':path'] || '');
  if (!devicePath) return [404, 'BadPath'];
  const token = devicePath[1];
  if (!token) return [400, 'MissingDeviceToken'];
  if (token.includes('/')) return [404, 'BadPath'];
  if (!/^[0-9a-fA-F]+$/.test(token)) return [400, 'BadDeviceToken'];
  const names = rawHeaders.filter((_, i) => i % 2 === 0);
  if (new Set(names).size !== names.length) return [400, 'DuplicateHeaders'];
  const apnsId = headers['apns-id'];
  if (apnsId !== undefined && !UUID.test(apnsId)) return [400, 'BadMessageId'];
  if (!headers['apns-topic']) return [400, 'MissingTopic'];
  const pushType = headers['apns-push-type'];
  if (pushType !== undefined && !PUSH_TYPES.has(pushType)) return [400, 'InvalidPushType'];
  if (!['5', '10'].includes(headers['apns-priority'] ?? '10')) return [400, 'BadPriority'];
  if (!/^\d+$/.test(headers['apns-expiration'] ?? '0')) return [400, 'BadExpirationDate'];
  if (Buffer.byteLength(headers['apns-collapse-id'] ?? '') > 64) return [400, 'BadCollapseId'];
  if (body.length === 0) return [400, 'PayloadEmpty'];
  if (body.length > (pushType === 'voip' ? 5120 : 4096)) return [413, 'PayloadTooLarge'];
  const payload = parseJson(body);
  if (!isObject(payload)) return [400, 'BadPayload'];
  return [200, '', payload];
}

function onApnsPush(stream, headers, rawHeaders, body) {
  const [status, reason, payload] = checkApns(headers, rawHeaders, body);
  const apnsId = headers['apns-id'] || crypto.randomUUID();
  if (status === 200) answer(stream, 200, { 'apns-id': apnsId }, undefined, callIdOf(payload));
  else answer(stream, status, { 'apns-id': apnsId, 'content-type': 'application/json' }, JSON.stringify({ reason }));
}

// -- FCM v1 -------------------------------------------------------------------

const FCM_SCOPE = 'https://www.googleapis.com/auth/firebase.messaging';
const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const TOKEN_LIFETIME = 3600;
const account = APNS ? null : JSON.parse(read('fake-fcm-service-account.json'));
const accountKey = APNS ? null : crypto.createPublicKey(account.private_key);
const accessTokens = new Map(); // access token -> expiry (ms)
let messageIds = Date.now() % 1e12;

const FCM_ERROR_TYPE = 'type.googleapis.com/google.firebase.fcm.v1.FcmError';
const BAD_REQUEST_TYPE = 'type.googleapis.com/google.rpc.BadRequest';

/** An FCM v1 error answer; ``violation``: [field, description] of an INVALID_ARGUMENT. */
function fcmError(stream, status, code, message, violation) {
  const error = { code: status, message, status: code };
  if (violation) {
    error.details = [{ '@type': FCM_ERROR_TYPE, errorCode: code },
      { '@type': BAD_REQUEST_TYPE, fieldViolations: [{ field: violation[0], description: violation[1] }] }];
  }
  answerJson(stream, status, { error });
}

/** The first reason FCM would refuse a send request, [field, description], as fake_fcm.validate_v1; or null. */
function invalidMessage(document) {
  if (!isObject(document)) return ['', 'Invalid JSON payload received. Root element must be a message.'];
  const unknown = Object.keys(document).find((key) => key !== 'message' && key !== 'validate_only');
  if (unknown !== undefined) {
    return [unknown, `Invalid JSON payload received. Unknown name "${unknown}": Cannot find field.`];
  }
  const message = document.message;
  if (!isObject(message)) return ['message', 'Request contains an invalid argument: message is missing.'];
  const targets = ['token', 'topic', 'condition'].filter((key) => key in message);
  if (targets.length !== 1) return ['message', 'Exactly one of token, topic or condition must be specified.'];
  const target = message[targets[0]];
  if (typeof target !== 'string') {
    return [`message.${targets[0]}`, `Invalid value at 'message.${targets[0]}' (TYPE_STRING)`];
  }
  if (targets[0] === 'token' && (!target.trim() || /\s/.test(target))) {
    return ['message.token', 'The registration token is not a valid FCM registration token'];
  }
  if (message.data !== undefined && message.data !== null) {
    if (!isObject(message.data)) return ['message.data', "Invalid value at 'message.data' (Map), must be an object"];
    const index = Object.values(message.data).findIndex((value) => typeof value !== 'string');
    if (index >= 0) {
      const field = `message.data[${index}].value`;
      return [field, `Invalid value at '${field}' (TYPE_STRING), ${JSON.stringify(Object.values(message.data)[index])}`];
    }
  }
  const android = message.android;
  if (android !== undefined && android !== null) {
    if (!isObject(android)) return ['message.android', "Invalid value at 'message.android', must be an object"];
    const { ttl, priority } = android;
    if (ttl !== undefined && ttl !== null && (typeof ttl !== 'string' || !/^\d+(\.\d{1,9})?s$/.test(ttl))) {
      return ['message.android.ttl', 'Invalid value at \'message.android.ttl\' '
        + `(type.googleapis.com/google.protobuf.Duration), ${JSON.stringify(ttl)}`];
    }
    if (priority !== undefined && priority !== null
        && (typeof priority !== 'string' || !['normal', 'high'].includes(priority.toLowerCase()))) {
      return ['message.android.priority', 'Invalid value at \'message.android.priority\' '
        + `(type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), ${JSON.stringify(priority)}`];
    }
  }
  return null;
}

function onFcmPush(stream, headers, rawHeaders, body) {
  const send = /^\/v1\/projects\/([^/]+)\/messages:send$/.exec(headers[':path'] || '');
  if (headers[':method'] !== 'POST') return fcmError(stream, 405, 'METHOD_NOT_ALLOWED', 'Only POST is served.');
  if (!send) return fcmError(stream, 404, 'NOT_FOUND', `${headers[':path']} was not found on this server.`);
  const [scheme, accessToken] = (headers.authorization || '').split(' ');
  if (scheme?.toLowerCase() !== 'bearer' || !(accessTokens.get(accessToken) > Date.now())) {
    return fcmError(stream, 401, 'UNAUTHENTICATED', 'Request had invalid authentication credentials. '
      + 'Expected OAuth 2 access token, login cookie or other valid authentication credential.');
  }
  if (send[1] !== account.project_id) {
    return fcmError(stream, 403, 'PERMISSION_DENIED', `Permission 'cloudmessaging.messages.create' denied on `
      + `resource '//cloudresourcemanager.googleapis.com/projects/${send[1]}'`);
  }
  const document = parseJson(body);
  if (document === undefined) return fcmError(stream, 400, 'INVALID_ARGUMENT', 'Invalid JSON payload received.');
  const problem = invalidMessage(document);
  if (problem) return fcmError(stream, 400, 'INVALID_ARGUMENT', problem[1], problem);
  answerJson(stream, 200, { name: `projects/${account.project_id}/messages/${messageIds++}` },
    callIdOf(document.message));
}

/** The OAuth problem with a JWT-bearer assertion, worded as Google's token endpoint does, or null. */
function badAssertion(assertion) {
  const [head, claimsPart, signature] = assertion.split('.');
  const decode = (part) => parseJson(Buffer.from(part || '', 'base64url').toString());
  const header = decode(head);
  const claims = decode(claimsPart);
  if (!header || !claims || signature === undefined
      || !crypto.verify('RSA-SHA256', Buffer.from(`${head}.${claimsPart}`), accountKey,
        Buffer.from(signature, 'base64url'))) {
    return ['invalid_grant', 'Invalid JWT Signature.'];
  }
  if (header.alg !== 'RS256') return ['invalid_grant', 'Invalid JWT: the algorithm must be RS256.'];
  if (claims.iss !== account.client_email) return ['invalid_grant', 'Invalid grant: account not found'];
  if (claims.aud !== account.token_uri) return ['invalid_grant', 'Invalid JWT: Failed audience check.'];
  if (!String(claims.scope ?? '').split(/\s+/).includes(FCM_SCOPE)) {
    return ['invalid_scope', 'Invalid OAuth scope or ID token audience provided.'];
  }
  const now = Date.now() / 1000;
  const { iat, exp } = claims;
  if (typeof iat !== 'number' || typeof exp !== 'number' || iat > now + 60 || exp <= now || exp - iat > 3600) {
    return ['invalid_grant', 'Invalid JWT: Token must be a short-lived token (60 minutes) and in a '
      + 'reasonable timeframe. Check your iat and exp values in the JWT claim.'];
  }
  return null;
}

function onTokenRequest(request, response) {
  const chunks = [];
  request.on('data', (chunk) => chunks.push(chunk));
  request.on('end', () => {
    const reply = (status, document) => {
      response.writeHead(status, { 'content-type': 'application/json; charset=UTF-8' });
      response.end(JSON.stringify(document));
    };
    const form = new URLSearchParams(Buffer.concat(chunks).toString());
    if (request.method !== 'POST' || request.url !== '/token') {
      return reply(404, { error: 'not_found', error_description: `${request.url} was not found on this server.` });
    }
    if (form.get('grant_type') !== JWT_BEARER_GRANT) {
      return reply(400, { error: 'unsupported_grant_type', error_description: `Invalid grant_type: ${form.get('grant_type')}` });
    }
    const problem = badAssertion(form.get('assertion') || '');
    if (problem) return reply(400, { error: problem[0], error_description: problem[1] });
    const accessToken = `ya29.fake-${crypto.randomBytes(24).toString('base64url')}`;
    accessTokens.set(accessToken, Date.now() + TOKEN_LIFETIME * 1000);
    reply(200, { access_token: accessToken, expires_in: TOKEN_LIFETIME, token_type: 'Bearer' });
  });
}

// -- the servers --------------------------------------------------------------

const tls = { key: read('server.key'), cert: read('server.crt'), minVersion: 'TLSv1.2' };
const server = http2.createSecureServer({
  ...tls,
  // APNs: only clients with a certificate signed by the bench's CA (and ALPN h2: createSecureServer's default)
  ...(APNS ? { ca: read('ca.crt'), requestCert: true, rejectUnauthorized: true } : {}),
  settings: { maxConcurrentStreams: maxStreams, initialWindowSize: 16 * 1024 * 1024 },
});
const sessions = new Set();
server.on('session', (session) => {
  connections += 1;
  sessions.add(session);
  session.on('close', () => sessions.delete(session));
  session.setLocalWindowSize(16 * 1024 * 1024); // bursts are not throttled by flow control
});
server.on('stream', (stream, headers, flags, rawHeaders) => {
  const chunks = [];
  stream.on('data', (chunk) => chunks.push(chunk));
  stream.on('error', () => {}); // a reset stream: nothing to answer
  stream.on('end', () => {
    requests += 1;
    (APNS ? onApnsPush : onFcmPush)(stream, headers, rawHeaders, Buffer.concat(chunks));
  });
});
server.on('sessionError', () => {});
server.on('tlsClientError', () => {}); // e.g. an APNs client without a certificate: refused

const listen = (target, port, host = args.host) => new Promise((resolve) => target.listen(port, host, resolve));
let port = Number(args.port);

function stats() {
  const calls = new Map();
  for (const callId of delivered) calls.set(callId, (calls.get(callId) || 0) + 1);
  let duplicated = 0;
  for (const count of calls.values()) duplicated += Math.max(0, count - 1);
  return { requests, delivered: delivered.length, distinct: calls.size, duplicated, answers, connections };
}

const FAULTS = {
  slow: (count) => { delayMs = count; },
  stop: () => { server.close(); for (const session of sessions) session.destroy(); },
  start: () => (server.listening ? undefined : listen(server, port)),
};

const control = http.createServer((request, response) => {
  const url = new URL(request.url, 'http://127.0.0.1');
  const [, kind, name] = url.pathname.split('/');
  if (request.method === 'GET' && kind === 'delivered') {
    response.writeHead(200, { 'content-type': 'text/plain' });
    return response.end(delivered.map((callId) => `${callId}\n`).join(''));
  }
  if (request.method === 'GET') {
    response.writeHead(200, { 'content-type': 'application/json' });
    return response.end(JSON.stringify(stats()));
  }
  if (request.method === 'POST' && kind === 'fault' && FAULTS[name]) {
    FAULTS[name](Number(url.searchParams.get('count') ?? 1));
    response.writeHead(200, { 'content-type': 'application/json' });
    return response.end('{"ok": true}');
  }
  response.writeHead(404, { 'content-type': 'application/json' });
  return response.end('{"error": "unknown fault"}');
});

await listen(server, port);
port = server.address().port;
if (!APNS) await listen(https.createServer(tls, onTokenRequest), Number(new URL(account.token_uri).port));
await listen(control, Number(args['control-port']), '127.0.0.1'); // loopback only: a test tool
const host = args.host.includes(':') ? `[${args.host}]` : args.host;
console.log(`${APNS ? 'fake APNs' : 'fake FCM'} listening on ${host}:${port}`);
console.log(`control port ${control.address().port}`);
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    console.log(`stats ${JSON.stringify(stats())}`);
    process.exit(0);
  });
}
