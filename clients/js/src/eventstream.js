// Reading `text/event-stream` from bytes (the SSE transport opens its stream
// with fetch, so that the connect params, token included, travel in a POST
// body and never in a URL; EventSource can only GET). The WHATWG rules that
// matter here: lines end in CRLF, LF or CR; `data:` lines of one event are
// joined with "\n"; `id:` sets the last event id; a blank line ends an event;
// `:` starts a comment; one space after the colon is dropped.

/**
 * An incremental event-stream parser. Feed it the body's chunks as they come
 * (`push(Uint8Array)`): a chunk may end anywhere, inside a line, between CR
 * and LF, or inside a UTF-8 sequence (TextDecoder in stream mode keeps the
 * partial bytes). Calls `onEvent({data, id})` for each complete event that
 * has data; `id` is the last event id in force at that event ('' when none).
 * Throws when a line or an event grows past `maxChars` characters (a stream
 * that never ends a line must not eat the page's memory).
 */
export class EventStreamParser {
  constructor(onEvent, maxChars = 16 << 20) {
    this.onEvent = onEvent;
    this.maxChars = maxChars;
    this.decoder = new TextDecoder('utf-8');
    this.parts = [];      // text after the last complete line, in the pieces it came in
    this.partsLength = 0;
    this.endsInCR = false;  // that text ends in a CR (maybe the first half of a CRLF)
    this.data = null;     // data lines of the event being read (null: none yet)
    this.dataSize = 0;
    this.lastId = '';
  }

  /** A chunk of the body (a Uint8Array). */
  push(chunk) { this._text(this.decoder.decode(chunk, {stream: true}), false); }

  /** The body ended: a last line without its end still counts, an event without its blank line does not. */
  end() { this._text(this.decoder.decode(), true); }

  _text(text, final) {
    if (!final && !this.endsInCR && !/[\r\n]/.test(text)) {
      // No line ends here: kept as a piece, not joined and rescanned, so that a long line
      // arriving in small chunks costs linear time.
      if (text) { this.parts.push(text); this.partsLength += text.length; }
      if (this.partsLength > this.maxChars) throw new Error('event-stream line longer than ' + this.maxChars + ' characters');
      return;
    }
    this.parts.push(text);
    const s = this.parts.join('');
    this.parts = [];
    let start = 0;
    for (;;) {
      let i = start;
      while (i < s.length && s.charCodeAt(i) !== 10 && s.charCodeAt(i) !== 13) i++;
      if (i === s.length) break;
      // A CR as the last character may be the first half of a CRLF split between chunks.
      if (s.charCodeAt(i) === 13 && i + 1 === s.length && !final) break;
      this._line(s.slice(start, i));
      start = i + (s.charCodeAt(i) === 13 && s.charCodeAt(i + 1) === 10 ? 2 : 1);
    }
    let rest = s.slice(start);
    if (final && rest) { this._line(rest); rest = ''; }
    this.endsInCR = rest.length > 0 && rest.charCodeAt(rest.length - 1) === 13;
    if (rest) this.parts.push(rest);
    this.partsLength = rest.length;
    if (this.partsLength > this.maxChars) throw new Error('event-stream line longer than ' + this.maxChars + ' characters');
  }

  _line(line) {
    if (line === '') {
      if (this.data !== null) {
        const data = this.data.join('\n');
        this.data = null;
        this.dataSize = 0;
        this.onEvent({data, id: this.lastId});
      }
      return;
    }
    if (line.charCodeAt(0) === 58) return;  // ':' a comment
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    if (field === 'data') {
      this.dataSize += value.length + 1;
      if (this.dataSize > this.maxChars) throw new Error('event-stream event larger than ' + this.maxChars + ' characters');
      (this.data || (this.data = [])).push(value);
    } else if (field === 'id') {
      if (!value.includes('\u0000')) this.lastId = value;
    }
    // `event`, `retry` and unknown fields: not used by Switchboard.
  }
}

/**
 * The positions in a Switchboard event id (base64url of JSON
 * `{channel: {offset?, epoch?}}`), or null when it is not one.
 */
export function resumeIdPositions(id) {
  if (typeof id !== 'string' || !id || id.length > (1 << 20)) return null;
  try {
    let b64 = id.replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) b64 += '=';
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const obj = JSON.parse(new TextDecoder('utf-8', {fatal: true}).decode(bytes));
    if (!obj || typeof obj !== 'object' || Array.isArray(obj)) return null;
    return obj;
  } catch (e) {
    return null;
  }
}
