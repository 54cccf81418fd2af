// Constants and helpers shared by the modules: framing (JSON lines), sizes,
// channel names, endpoint URLs, random ids.

/** Version string sent in `connect`. */
export const VERSION = 'switchboard.js/1.1';

export const ALL_TRANSPORTS = ['websocket', 'sse', 'longpoll'];
export const CONNECT_ID = 1;            // the connect command's id on every transport (SSE implies it)
export const CHANNEL_MAX_BYTES = 255;
export const STABLE_MS = 5000;          // a connection that lived this long resets the reconnect backoff
export const MAX_HELD = 5000;           // pushes held before a subscribe reply; beyond that the connection is remade

export function randomId(bytes = 8) {
  const a = new Uint8Array(bytes);
  if (globalThis.crypto && crypto.getRandomValues) crypto.getRandomValues(a);
  else for (let i = 0; i < bytes; i++) a[i] = Math.floor(Math.random() * 256);
  return Array.from(a, b => b.toString(16).padStart(2, '0')).join('');
}

const encoder = new TextEncoder();

/** UTF-8 length of a string. */
export function byteLength(s) { return encoder.encode(s).length; }

/** JSON objects of a frame / SSE event / body: one per line, non-objects skipped. */
export function parseLines(text, out = []) {
  for (const part of String(text).split('\n')) {
    const p = part.trim();
    if (!p) continue;
    let obj;
    try { obj = JSON.parse(p); } catch (e) { out.bad = (out.bad || 0) + 1; continue; }
    if (obj && typeof obj === 'object' && !Array.isArray(obj)) out.push(obj);
  }
  return out;
}

export function validChannel(ch) {
  if (typeof ch !== 'string' || ch.length === 0) return false;
  if (byteLength(ch) > CHANNEL_MAX_BYTES) return false;
  return !/[\u0000-\u001f\u007f]/.test(ch);
}

/** Derive the endpoint URLs from a base (http(s)://host[:port][/prefix], or ws(s)://.../ws). */
export function endpoints(url) {
  const here = typeof location !== 'undefined' ? location : null;
  const u = new URL(url || (here ? here.origin : 'http://127.0.0.1:8000'), here ? here.href : undefined);
  if (u.protocol === 'ws:') u.protocol = 'http:';
  else if (u.protocol === 'wss:') u.protocol = 'https:';
  const path = u.pathname.replace(/\/(ws|sse|poll|rpc)\/?$/, '').replace(/\/+$/, '');
  const base = u.origin + path;
  return {
    base,
    ws: base.replace(/^http/, 'ws') + '/ws',
    sse: base + '/sse',
    poll: base + '/poll',
    rpc: base + '/rpc',
  };
}

/** JSON.parse, or null when the text is not JSON. */
export function jsonOrNull(text) { try { return JSON.parse(text); } catch (e) { return null; } }
