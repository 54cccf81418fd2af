/// The demo page served at `/`: a small chat that shows messages moving through the node.
enum DemoPage {
    static let html: String = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Switchboard demo</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}
header{background:#1f2937;color:#fff;padding:10px 16px;display:flex;gap:16px;align-items:center;flex-wrap:wrap}
header h1{font-size:16px;margin:0}
#state{padding:2px 10px;border-radius:10px;background:#6b7280;cursor:default}
#state.on{background:#059669}
#state.wait{background:#d97706}
#state.off{background:#dc2626;cursor:pointer}
main{max-width:860px;margin:0 auto;padding:12px 16px}
form{display:flex;gap:8px;margin:8px 0}
input{padding:6px 8px;border:1px solid #ccc;border-radius:4px;font:inherit}
.grow{flex:1}
button{padding:6px 14px;border:0;border-radius:4px;background:#2563eb;color:#fff;font:inherit;cursor:pointer}
#log{background:#fff;border:1px solid #ddd;border-radius:4px;height:60vh;overflow-y:auto;padding:8px;font:13px/1.4 ui-monospace,Menlo,monospace}
#log div{padding:1px 0;white-space:pre-wrap;word-break:break-word}
.sys{color:#6b7280}
.jl{color:#7c3aed}
.err{color:#dc2626}
.ofs{display:inline-block;min-width:4em;color:#9ca3af}
</style>
</head>
<body>
<header>
<h1>Switchboard demo</h1>
<span id="state" class="wait">starting</span>
<span id="node"></span>
<span>presence: <b id="presence">-</b></span>
</header>
<main>
<form id="subForm"><input id="channel" class="grow" value="chat:lobby" aria-label="channel"><button>Subscribe</button></form>
<div id="log"></div>
<form id="pubForm"><input id="name" size="12" placeholder="name" aria-label="name"><input id="text" class="grow" placeholder="message" autocomplete="off" aria-label="message"><button>Send</button></form>
</main>
<script>
(function () {
  'use strict';
  function $(id) { return document.getElementById(id); }
  var ws = null, ready = false, nextId = 1, pending = {};
  var channel = $('channel').value.trim();  // the channel we want to be in
  var positions = {};                       // channel -> {offset, epoch} of the last publication seen
  var attempt = 0, retryTimer = null, pingSec = 0, lastFrame = 0;
  $('name').value = 'guest' + Math.floor(Math.random() * 1000);

  function line(text, cls, offset) {
    var log = $('log'), div = document.createElement('div');
    if (cls) div.className = cls;
    var tag = document.createElement('span');
    tag.className = 'ofs';
    tag.textContent = offset === undefined ? '' : String(offset);
    div.appendChild(tag);
    div.appendChild(document.createTextNode(text));
    var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(div);
    while (log.childNodes.length > 500) log.removeChild(log.firstChild);
    if (atBottom) log.scrollTop = log.scrollHeight;
  }
  function setState(text, cls) { var s = $('state'); s.textContent = text; s.className = cls; }
  function send(obj) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(obj)); }
  function call(method, params, cb) {
    var id = nextId++, msg = { id: id };
    msg[method] = params;
    pending[id] = cb;
    send(msg);
  }
  function who(x) { return (x.user || 'anonymous') + ' (' + x.client + ')'; }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    setState('connecting', 'wait');
    var sock = new WebSocket(url);
    ws = sock; ready = false; nextId = 1; pending = {};
    sock.onopen = function () {
      lastFrame = Date.now();
      call('connect', {}, function (err, res) {
        if (err) { line('connect failed: ' + err.code + ' ' + err.message, 'err'); return; }
        ready = true; attempt = 0; pingSec = res.ping || 0;
        setState('connected', 'on');
        $('node').textContent = 'client ' + res.client + ' on node ' + res.node;
        if (channel) subscribe(channel);
        refreshPresence();
      });
    };
    sock.onmessage = function (e) { if (sock === ws) onFrame(e.data); };
    sock.onclose = function (e) { if (sock === ws) closed(e.code, e.reason); };
  }

  function closed(code, reason) {
    ws = null; ready = false; pending = {};
    $('presence').textContent = '-';
    $('node').textContent = '';
    if ((code >= 3500 && code <= 3999) || code === 1009) {
      setState('closed ' + code + ' (click to retry)', 'off');
      line('closed by server: ' + code + (reason ? ' ' + reason : '') + ', not reconnecting', 'err');
      return;
    }
    var cap = Math.min(20000, 500 * Math.pow(2, attempt));
    var delay = cap / 2 + Math.random() * cap / 2;  // capped exponential backoff with jitter
    attempt++;
    setState('reconnecting in ' + (delay / 1000).toFixed(1) + ' s', 'wait');
    line('connection closed (' + code + (reason ? ' ' + reason : '') + '), reconnecting in ' + (delay / 1000).toFixed(1) + ' s', 'sys');
    retryTimer = setTimeout(connect, delay);
  }

  function onFrame(data) {
    lastFrame = Date.now();
    if (typeof data !== 'string') return;
    var parts = data.split('\n');  // a frame may carry several JSON objects
    for (var i = 0; i < parts.length; i++) {
      var p = parts[i].trim();
      if (!p) continue;
      var msg;
      try { msg = JSON.parse(p); } catch (x) { line('unparsable message from server', 'err'); continue; }
      handle(msg);
    }
  }

  function handle(m) {
    if (m.id) {
      var cb = pending[m.id];
      delete pending[m.id];
      if (cb) cb(m.error || null, m.result || {});
      return;
    }
    if (Object.keys(m).length === 0) { send({}); return; }  // server ping: answer with a pong
    if (m.disconnect) {
      line('server says disconnect: ' + m.disconnect.code + ' ' + (m.disconnect.reason || ''), 'sys');
      return;
    }
    var ch = m.channel;
    if (m.pub) showPub(ch, m.pub);
    else if (m.join) line(who(m.join) + ' joined ' + ch, 'jl');
    else if (m.leave) line(who(m.leave) + ' left ' + ch, 'jl');
    else if (m.unsubscribe) {
      line('server unsubscribed us from ' + ch + ': ' + m.unsubscribe.code + ' ' + (m.unsubscribe.reason || ''), 'sys');
      if (m.unsubscribe.code === 2500 && ch === channel) subscribe(ch);  // insufficient state: recover
      else if (ch === channel) channel = null;
    }
  }

  function showPub(ch, pub) {
    var pos = positions[ch];
    if (pub.offset !== undefined && pos) {
      if (pub.offset !== pos.offset + 1) line('unexpected offset: wanted ' + (pos.offset + 1) + ', got ' + pub.offset, 'err');
      pos.offset = pub.offset;
    }
    var d = pub.data, text;
    if (d && typeof d === 'object' && 'text' in d) {
      text = (d.name || (pub.info && pub.info.user) || 'anonymous') + ': ' + d.text;
    } else {
      text = JSON.stringify(d);
    }
    line(text, '', pub.offset);
  }

  function subscribe(ch) {
    var pos = positions[ch], params = { channel: ch };
    if (pos) params.since = { offset: pos.offset, epoch: pos.epoch };
    call('subscribe', params, function (err, res) {
      if (err) { line('subscribe ' + ch + ' failed: ' + err.code + ' ' + err.message, 'err'); return; }
      if (pos && res.recovered) {
        var pubs = res.publications || [];
        line('recovered ' + ch + ': ' + pubs.length + ' missed publication(s)', 'sys');
        for (var i = 0; i < pubs.length; i++) showPub(ch, pubs[i]);
      } else if (pos) {
        line('could not recover ' + ch + ' (recovered:false): missed messages are gone, reload state', 'err');
      } else {
        line('subscribed to ' + ch + (res.offset !== undefined ? ' at offset ' + res.offset : ''), 'sys');
      }
      if (res.offset !== undefined && res.epoch !== undefined && res.recoverable !== false) {
        positions[ch] = { offset: res.offset, epoch: res.epoch };
      } else {
        delete positions[ch];
      }
    });
  }

  function refreshPresence() {
    if (!ready || !channel) return;
    var ch = channel;
    call('presenceStats', { channel: ch }, function (err, res) {
      if (ch !== channel) return;
      $('presence').textContent = err ? (err.code === 108 ? 'off' : 'error ' + err.code)
        : res.clients + ' clients, ' + res.users + ' users';
    });
  }

  $('subForm').onsubmit = function (e) {
    e.preventDefault();
    var ch = $('channel').value.trim();
    if (!ch || ch === channel) return;
    if (ready && channel) {
      call('unsubscribe', { channel: channel }, function () {});
      line('left ' + channel, 'sys');
    }
    channel = ch;
    $('presence').textContent = '-';
    if (ready) { subscribe(ch); refreshPresence(); }
  };

  $('pubForm').onsubmit = function (e) {
    e.preventDefault();
    var text = $('text').value;
    if (!text) return;
    if (!ready || !channel) { line('not connected or not subscribed', 'err'); return; }
    var data = { text: text, name: $('name').value || 'anonymous' };
    call('publish', { channel: channel, data: data }, function (err) {
      if (err) line('publish failed: ' + err.code + ' ' + err.message, 'err');
    });
    $('text').value = '';
  };

  $('state').onclick = function () { if (!ws && !retryTimer) { attempt = 0; connect(); } };

  setInterval(refreshPresence, 3000);
  setInterval(function () {  // no frame at all for ping + 5 s: the connection is dead
    if (ws && ready && pingSec > 0 && Date.now() - lastFrame > (pingSec + 5) * 1000) {
      var s = ws;
      s.onclose = s.onmessage = null;
      try { s.close(); } catch (x) {}
      closed(0, 'no frames from server');
    }
  }, 1000);

  connect();
})();
</script>
</body>
</html>
"""#
}
