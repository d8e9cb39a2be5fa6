// The county clerk's reference page (clerk.html) and the supervisor's live view (viewer.html), on
// Janus's own janus.js (VideoRoom, multistream API of Janus 1.x).
//
// Query parameters: server (Janus URL, http(s)://…/janus or ws(s)://…), room (1234), pin, display
// (clerk-1 / viewer-1), source = camera (getUserMedia: Chromium's fake device) | canvas (a canvas with
// the frame timecode and a moving pattern, plus a WebAudio tone), timecode=1 (read the timecode of
// received video frames and record latency = Date.now() - code), feeds = comma-separated display
// prefixes to subscribe to (clerk: "kiosk"; viewer: "kiosk,clerk"), w/h (canvas size, 320x240).
//
// Every 500 ms it POSTs its state to /stats (see postStats for the shape). The page subscribes to
// every matching publisher with one subscriber handle per feed (all its streams) and drops the
// handle when the feed unpublishes or leaves, so a kiosk that reconnects (new feed id) is subscribed
// again.
"use strict";

// janus.js reads only adapter.browserDetails (browser name and version). Chromium needs none of
// webrtc-adapter's shims, so a minimal stand-in replaces the package (Debian: libjs-webrtc-adapter).
if (!window.adapter) {
  const m = navigator.userAgent.match(/Chrom(?:e|ium)\/(\d+)/);
  window.adapter = { browserDetails: { browser: "chrome", version: m ? parseInt(m[1], 10) : 0 } };
}

// --- timecode (the twin of drivers/camera/timecode.py; keep the two identical) ---------------------
const TC_CELLS = 48;
const TC_BITS = TC_CELLS - 2;

function tcStripHeight(h) {
  return Math.min(h, Math.max(8, Math.floor(h / 8)));
}

function tcEdges(w) {
  const e = [];
  for (let i = 0; i <= TC_CELLS; i++) e.push(Math.floor((i * w) / TC_CELLS));
  return e;
}

// RGB 255/0 become luma 235/16 in the encoder's limited-range YUV: the spec's white and black.
function drawTimecode(ctx, w, h, ms) {
  const rows = tcStripHeight(h);
  const edges = tcEdges(w);
  for (let i = 0; i < TC_CELLS; i++) {
    let bit = 1;
    if (i > 0 && i < TC_CELLS - 1) {
      // 46-bit values exceed 32-bit bitwise operators: divide instead of shifting.
      bit = Math.floor(ms / Math.pow(2, TC_BITS - i)) % 2;
    }
    ctx.fillStyle = bit ? "#ffffff" : "#000000";
    ctx.fillRect(edges[i], 0, edges[i + 1] - edges[i], rows);
  }
}

// Mean luma (0..255, BT.601 weights on RGB) of the central half of each cell; same decision as
// read_timecode(): None/null unless the sync cells are bright and the strip is bimodal.
function readTimecode(imageData, w, h) {
  const rows = tcStripHeight(h);
  const r0 = Math.floor(rows / 4);
  const r1 = Math.max(r0 + 1, rows - Math.floor(rows / 4));
  const edges = tcEdges(w);
  const d = imageData.data;
  const means = [];
  for (let i = 0; i < TC_CELLS; i++) {
    const x0 = edges[i];
    const x1 = edges[i + 1];
    const q = Math.floor((x1 - x0) / 4);
    const c0 = x0 + q;
    const c1 = Math.max(c0 + 1, x1 - q);
    let sum = 0;
    let n = 0;
    for (let y = r0; y < r1; y++) {
      for (let x = c0; x < c1; x++) {
        const k = (y * w + x) * 4;
        sum += 0.299 * d[k] + 0.587 * d[k + 1] + 0.114 * d[k + 2];
        n++;
      }
    }
    means.push(sum / n);
  }
  const sync = (means[0] + means[TC_CELLS - 1]) / 2;
  const black = Math.min(...means);
  if (Math.min(means[0], means[TC_CELLS - 1]) < 128 || sync - black < 64) return null;
  const threshold = (sync + black) / 2;
  const margin = (sync - black) / 6;
  let value = 0;
  for (let i = 1; i < TC_CELLS - 1; i++) {
    if (Math.abs(means[i] - threshold) < margin) return null;
    value = value * 2 + (means[i] > threshold ? 1 : 0);
  }
  return value;
}

// --- page state ---------------------------------------------------------------------------------
const q = new URLSearchParams(location.search);
const role = document.body.dataset.role || "clerk";
const server = q.get("server");
const roomId = parseInt(q.get("room") || "1234", 10);
const pin = q.get("pin");
const display = q.get("display") || (role === "viewer" ? "viewer-1" : "clerk-1");
const source = q.get("source") || "camera";
const wantTimecode = q.get("timecode") === "1";
const feedPrefixes = (q.get("feeds") || (role === "viewer" ? "kiosk,clerk" : "kiosk")).split(",");
const canvasW = parseInt(q.get("w") || "320", 10);
const canvasH = parseInt(q.get("h") || "240", 10);

const state = {
  role: role,
  display: display,
  joined: false,
  published: false,
  publisherId: null,
  privateId: null,
  errors: [],
  latency: [], // recent samples, all received timecoded videos
  latencyCount: 0,
  subscribedFeeds: 0, // subscriptions made over the page's life (re-subscriptions count again)
};
const feeds = new Map(); // feed id -> {id, display, handle, mids: Map(mid -> {kind, el})}
let janus = null;
let publisher = null;

function fail(what, err) {
  const text = what + ": " + (err && err.message ? err.message : JSON.stringify(err));
  console.error(text);
  state.errors.push(text);
  if (state.errors.length > 20) state.errors.shift();
}

function wanted(displayName) {
  return feedPrefixes.some((p) => p && (displayName || "").startsWith(p));
}

// --- local media -----------------------------------------------------------------------------------
async function localTracks() {
  if (source === "canvas") {
    const canvas = document.getElementById("local-canvas");
    canvas.width = canvasW;
    canvas.height = canvasH;
    const ctx = canvas.getContext("2d");
    let n = 0;
    // A timer, not requestAnimationFrame: headless Chromium throttles rAF for pages not visible.
    setInterval(() => {
      n++;
      ctx.fillStyle = "#405060";
      ctx.fillRect(0, 0, canvasW, canvasH);
      ctx.fillStyle = "#e0a020";
      const x = (n * 4) % canvasW;
      ctx.fillRect(x, canvasH / 3, canvasW / 8, canvasH / 3);
      ctx.fillStyle = "#ffffff";
      ctx.font = "16px sans-serif";
      ctx.fillText(display + " " + n, 8, canvasH - 12);
      drawTimecode(ctx, canvasW, canvasH, Date.now());
    }, 1000 / 30);
    const video = canvas.captureStream(30).getVideoTracks()[0];
    const ac = new AudioContext();
    const osc = ac.createOscillator();
    osc.frequency.value = 440;
    const gain = ac.createGain();
    gain.gain.value = 0;
    // Tone bursts (250 ms on, 250 ms off) so a listener can tell sound from silence.
    setInterval(() => {
      gain.gain.setValueAtTime(gain.gain.value > 0 ? 0 : 0.3, ac.currentTime);
    }, 250);
    const dest = ac.createMediaStreamDestination();
    osc.connect(gain).connect(dest);
    osc.start();
    if (ac.state !== "running") await ac.resume();
    return { audio: dest.stream.getAudioTracks()[0], video: video };
  }
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: true,
    video: { width: canvasW, height: canvasH },
  });
  return { audio: stream.getAudioTracks()[0], video: stream.getVideoTracks()[0] };
}

// --- Janus ---------------------------------------------------------------------------------------
function start() {
  Janus.init({
    debug: ["warn", "error"],
    callback: () => {
      janus = new Janus({
        server: server,
        iceServers: [], // no STUN: the lab has no internet, and host candidates are all it needs
        success: attachPublisher,
        error: (e) => fail("janus session", e),
        destroyed: () => fail("janus session", "destroyed"),
      });
    },
  });
}

function attachPublisher() {
  janus.attach({
    plugin: "janus.plugin.videoroom",
    success: (handle) => {
      publisher = handle;
      const join = { request: "join", room: roomId, ptype: "publisher", display: display };
      if (pin) join.pin = pin;
      // The viewer joins as a participant that never publishes: VideoRoom tells only participants
      // about publishers coming and going.
      handle.send({ message: join, error: (e) => fail("join", e) });
    },
    error: (e) => fail("attach publisher", e),
    onmessage: (msg, jsep) => onPublisherMessage(msg, jsep),
    onlocaltrack: (track, on) => {
      if (track.kind === "video" && on) {
        const el = document.getElementById("local-video");
        el.srcObject = new MediaStream([track]);
      }
    },
    webrtcState: (on) => {
      if (role === "clerk") state.published = !!on;
    },
    oncleanup: () => {
      state.published = false;
    },
  });
}

function onPublisherMessage(msg, jsep) {
  const ev = msg.videoroom;
  if (msg.error) fail("videoroom", msg.error_code + " " + msg.error);
  if (ev === "joined") {
    state.joined = true;
    state.publisherId = msg.id;
    state.privateId = msg.private_id;
    if (role === "clerk") publishOwn();
  }
  if (msg.publishers) msg.publishers.forEach((p) => subscribeFeed(p));
  const gone = msg.unpublished || msg.leaving || msg.kicked;
  if (gone && gone !== "ok") dropFeed(gone);
  if (jsep) publisher.handleRemoteJsep({ jsep: jsep, error: (e) => fail("publisher jsep", e) });
}

async function publishOwn() {
  let tracks;
  try {
    tracks = await localTracks();
  } catch (e) {
    fail("local media", e);
    return;
  }
  publisher.createOffer({
    tracks: [
      { type: "audio", capture: tracks.audio, recv: false },
      { type: "video", capture: tracks.video, recv: false },
    ],
    success: (offer) => {
      publisher.send({ message: { request: "publish", display: display }, jsep: offer });
    },
    error: (e) => fail("createOffer", e),
  });
}

function subscribeFeed(p) {
  if (p.dummy || feeds.has(p.id) || p.id === state.publisherId || !wanted(p.display)) return;
  const feed = { id: p.id, display: p.display, handle: null, mids: new Map() };
  feeds.set(p.id, feed);
  janus.attach({
    plugin: "janus.plugin.videoroom",
    success: (handle) => {
      feed.handle = handle;
      const join = { request: "join", room: roomId, ptype: "subscriber", streams: [{ feed: p.id }] };
      if (pin) join.pin = pin;
      if (state.privateId) join.private_id = state.privateId;
      handle.send({ message: join, error: (e) => fail("subscribe", e) });
      state.subscribedFeeds++;
    },
    error: (e) => fail("attach subscriber", e),
    onmessage: (msg, jsep) => {
      if (msg.error) fail("subscriber", msg.error_code + " " + msg.error);
      if (jsep && feed.handle && showing(feed)) answerFeed(feed, jsep);
    },
    onremotetrack: (track, mid, on) => onRemoteTrack(feed, track, mid, on),
    oncleanup: () => {
      feed.mids.forEach((m) => m.el && m.el.remove());
      feed.mids.clear();
    },
  });
}

function showing(feed) {
  return feeds.get(feed.id) === feed;
}

// Answer Janus's offer on the feed's handle: the first one ("attached") and every renegotiation
// ("updated": the publisher's streams changed or went). When a publisher leaves, Janus sends its
// subscribers an "updated" offer with the streams inactive just before "unpublished"/"leaving": the
// feed is dropped (its handle detached) while that answer is being made, and an answer sent then is
// refused with 469 "Unexpected ANSWER". So nothing is answered for a feed no longer shown, and a
// refused answer of a feed still shown is an error of the page.
function answerFeed(feed, jsep) {
  const handle = feed.handle;
  handle.createAnswer({
    jsep: jsep,
    tracks: [{ type: "data" }], // receive-only: audio/video are accepted as recvonly
    success: (answer) => {
      if (!showing(feed)) return;
      handle.send({
        message: { request: "start", room: roomId },
        jsep: answer,
        error: (e) => showing(feed) && fail("start " + feed.display + " " + feed.id, e),
      });
    },
    error: (e) => showing(feed) && fail("createAnswer", e),
  });
}

function dropFeed(id) {
  const feed = feeds.get(id);
  if (!feed) return;
  feeds.delete(id);
  if (feed.handle) feed.handle.detach();
  feed.mids.forEach((m) => m.el && m.el.remove());
}

function onRemoteTrack(feed, track, mid, on) {
  const old = feed.mids.get(mid);
  if (!on) {
    // Muted or removed: keep the element (a mute comes back as unmute on the same mid).
    return;
  }
  if (old && old.track === track) return;
  if (old && old.el) old.el.remove();
  const el = document.createElement(track.kind === "video" ? "video" : "audio");
  el.autoplay = true;
  el.playsInline = true;
  el.dataset.feed = feed.display;
  el.dataset.mid = mid;
  el.srcObject = new MediaStream([track]);
  document.getElementById("remote").appendChild(el);
  const entry = { kind: track.kind, el: el, track: track };
  feed.mids.set(mid, entry);
  el.play().catch((e) => fail("play", e));
  if (track.kind === "video" && wantTimecode) watchTimecode(el, entry);
}

function watchTimecode(el, entry) {
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const onFrame = () => {
    if (!el.isConnected) return;
    const w = el.videoWidth;
    const h = el.videoHeight;
    if (w >= TC_CELLS && h >= 8) {
      const rows = tcStripHeight(h);
      if (canvas.width !== w || canvas.height !== rows) {
        canvas.width = w;
        canvas.height = rows;
      }
      ctx.drawImage(el, 0, 0, w, rows, 0, 0, w, rows);
      const code = readTimecode(ctx.getImageData(0, 0, w, rows), w, h);
      if (code !== null) {
        const lat = Date.now() - code;
        // A decodable strip from far away (another clock, a stale code) is not a latency.
        if (lat > -1000 && lat < 60000) {
          state.latency.push(lat);
          state.latencyCount++;
          if (state.latency.length > 200) state.latency.shift();
        }
      }
    }
    el.requestVideoFrameCallback(onFrame);
  };
  el.requestVideoFrameCallback(onFrame);
}

// --- stats ---------------------------------------------------------------------------------------
const INBOUND_KEYS = [
  "framesDecoded", "frameWidth", "frameHeight", "framesPerSecond", "freezeCount", "totalFreezesDuration",
  "packetsLost", "packetsReceived", "jitter", "bytesReceived", "totalSamplesReceived", "audioLevel",
  "concealedSamples", "jitterBufferDelay", "jitterBufferEmittedCount", "framesDropped", "nackCount",
];
const OUTBOUND_KEYS = ["bytesSent", "packetsSent", "framesEncoded", "frameWidth", "frameHeight", "framesPerSecond"];

function pick(report, keys) {
  const out = {};
  keys.forEach((k) => {
    if (report[k] !== undefined) out[k] = report[k];
  });
  return out;
}

async function feedStats(feed) {
  const pc = feed.handle && feed.handle.webrtcStuff ? feed.handle.webrtcStuff.pc : null;
  const mids = [];
  if (pc) {
    const byTrack = new Map();
    pc.getTransceivers().forEach((t) => t.receiver.track && byTrack.set(t.receiver.track.id, t.mid));
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type !== "inbound-rtp") return;
      const mid = r.mid !== undefined ? r.mid : byTrack.get(r.trackIdentifier);
      mids.push(Object.assign({ mid: mid, kind: r.kind }, pick(r, INBOUND_KEYS)));
    });
  }
  return { id: feed.id, display: feed.display, mids: mids };
}

async function outboundStats() {
  const pc = publisher && publisher.webrtcStuff ? publisher.webrtcStuff.pc : null;
  const out = { bytesSent: 0, packetsSent: 0, framesEncoded: 0, streams: [] };
  if (!pc) return out;
  const stats = await pc.getStats();
  stats.forEach((r) => {
    if (r.type !== "outbound-rtp") return;
    out.bytesSent += r.bytesSent || 0;
    out.packetsSent += r.packetsSent || 0;
    out.framesEncoded += r.framesEncoded || 0;
    out.streams.push(Object.assign({ mid: r.mid, kind: r.kind }, pick(r, OUTBOUND_KEYS)));
  });
  return out;
}

async function postStats() {
  try {
    const feedList = await Promise.all([...feeds.values()].map(feedStats));
    const body = {
      role: state.role,
      display: state.display,
      ts: Date.now(),
      joined: state.joined,
      published: state.published,
      subscribed_feeds: state.subscribedFeeds,
      feeds: feedList,
      outbound: await outboundStats(),
      latency_ms: state.latency.slice(-50),
      latency_count: state.latencyCount,
      errors: state.errors.slice(),
    };
    await fetch("/stats", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  } catch (e) {
    console.error("stats: " + e);
  }
}

window.addEventListener("error", (e) => fail("page", e.message));
setInterval(postStats, 500);
if (!server) fail("page", "no ?server= given");
else start();
