// tongbu — shared client code for the teacher and classroom pages: signaling over the WebSocket
// at /ws, the single RTCPeerConnection to the server, local camera/microphone, and helpers to
// show remote tracks. No framework, no build step. Exposes window.tongbu for tests.
(function () {
  'use strict';

  var PROTOCOL_VERSION = 1;
  var PING_EVERY_MS = 15000;
  var DEAD_AFTER_MS = 40000;       // no message at all for this long: the socket is dead
  var BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
  var GATHER_TIMEOUT_MS = 3000;

  /** Simulcast and capture settings per role (see the protocol notes in src/signal/message.rs). */
  var MEDIA = {
    teacher: {
      video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30, max: 30 } },
      // Capped so every layer fits a village link: the top layer at 1.2 Mbit/s still leaves
      // room for audio and courseware on a 2 Mbit/s line (uncapped, Chromium sends ~2.5 Mbit/s).
      encodings: [
        { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 },
        { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 },
        { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1200000 }
      ]
    },
    classroom: {
      video: { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 25, max: 30 } },
      // Village uplinks are the weakest links of all: thumbnails for the teacher, more on stage.
      encodings: [
        { rid: 'q', scaleResolutionDownBy: 2, maxBitrate: 150000 },
        { rid: 'h', scaleResolutionDownBy: 1, maxBitrate: 600000 }
      ]
    }
  };

  /** Errors after which the client reconnects (the server closes, but a new join will work). */
  var RETRYABLE = { media_lost: true, idle_timeout: true, internal: true, rate_limited: false };
  function isRetryable(err) { return !!(err && RETRYABLE[err.code]); }

  function log() {
    var args = Array.prototype.slice.call(arguments);
    args.unshift('[tongbu]');
    console.log.apply(console, args);
  }

  function wsUrl() {
    return (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + '/ws';
  }

  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  /** Resolve when ICE gathering completes (host candidates only: fast) or after a timeout. */
  function gatheringDone(pc) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise(function (resolve) {
      var done = false;
      function finish() {
        if (done) return;
        done = true;
        pc.removeEventListener('icegatheringstatechange', check);
        resolve();
      }
      function check() { if (pc.iceGatheringState === 'complete') finish(); }
      pc.addEventListener('icegatheringstatechange', check);
      setTimeout(finish, GATHER_TIMEOUT_MS);
    });
  }

  /**
   * One client session manager. opts:
   *   role: 'teacher' | 'classroom'
   *   joinParams(): {token} or {code} for the next join (called on every (re)connect)
   *   onMessage(msg): every server message, after the client handled the media part
   *   onStatus(status): 'connecting' | 'joined' | 'reconnecting' | 'closed'
   *   onTracks(): the set of received tracks changed
   *   onMediaState(state): RTCPeerConnection connectionState changes
   *   shouldReconnect(): whether to reconnect after the socket closes
   */
  function Client(opts) {
    this.opts = opts;
    this.role = opts.role;
    this.ws = null;
    this.pc = null;
    this.localStream = null;
    this.localStreamPromise = null;
    this.mediaError = null;
    this.micMuted = false;
    this.state = {
      status: 'idle',
      role: null,
      classroom_id: null,
      classroom_name: null,
      lesson: null,
      invites: [],
      invitable: [],
      rejoin_token: null,
      tracks: [],          // TrackInfo list from the last server offer
      ended: null,         // EndReason once the lesson ended
      replaced: false,
      lastError: null,
      media: 'new',
      maxLayer: 'auto',
      quality: null,       // last `quality` message: what this client receives
      links: {}            // teacher: classroom_id -> last `link_quality` entry
    };
    this._queue = Promise.resolve();
    this._attempt = 0;
    this._reconnectTimer = null;
    this._pingTimer = null;
    this._lastRx = 0;
    this._stopped = false;
    this._gen = 0;            // bumps on every new socket; stale async work checks it
    this._mediaStarted = false;
    this._ownOfferInFlight = false;
  }

  /** (Re)start after stop(): used by the code-entry form for a new attempt. */
  Client.prototype.start = function () {
    this._stopped = false;
    this._attempt = 0;
    this.state.replaced = false;
    this.state.lastError = null;
    this.state.ended = null;
    this.connect();
  };

  Client.prototype.connect = function () {
    var self = this;
    if (this._stopped) return;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    var gen = ++this._gen;
    this._setStatus(this._attempt === 0 ? 'connecting' : 'reconnecting');
    var ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (e) {
      log('websocket failed', e);
      this._scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = function () {
      if (gen !== self._gen) return;
      self._lastRx = Date.now();
      var join = self.opts.joinParams();
      self.send(Object.assign({ type: 'join' }, join));
      clearInterval(self._pingTimer);
      self._pingTimer = setInterval(function () {
        if (gen !== self._gen) return;
        if (Date.now() - self._lastRx > DEAD_AFTER_MS) {
          log('no message for', DEAD_AFTER_MS, 'ms: closing the socket');
          try { ws.close(); } catch (e) { /* ignore */ }
          self._onClose(gen);
          return;
        }
        self.send({ type: 'ping' });
      }, PING_EVERY_MS);
    };
    ws.onmessage = function (ev) {
      if (gen !== self._gen) return;
      self._lastRx = Date.now();
      var msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        log('bad JSON from server', e);
        return;
      }
      self._queue = self._queue.then(function () {
        if (gen !== self._gen) return;
        return self._handle(msg, gen);
      }).catch(function (e) { log('handling', msg && msg.type, 'failed:', e); });
    };
    ws.onclose = function (ev) {
      log('websocket closed', ev.code, ev.reason);
      // After the messages already received (e.g. lesson_ended right before the close).
      self._queue = self._queue.then(function () { self._onClose(gen); });
    };
    ws.onerror = function () { /* onclose follows */ };
  };

  Client.prototype._onClose = function (gen) {
    if (gen !== this._gen) return;
    this._gen++;  // everything belonging to that socket is now stale
    clearInterval(this._pingTimer);
    this._closePc();
    this.state.tracks = [];
    this._notifyTracks();
    var again = !this._stopped && !this.state.replaced &&
      (this.opts.shouldReconnect ? this.opts.shouldReconnect() : true);
    if (again) {
      this._scheduleReconnect();
    } else {
      this._setStatus('closed');
    }
  };

  Client.prototype._scheduleReconnect = function () {
    var self = this;
    var delay = BACKOFF_MS[Math.min(this._attempt, BACKOFF_MS.length - 1)];
    delay = Math.round(delay * (0.8 + Math.random() * 0.4));
    this._attempt++;
    this.state.reconnectAt = Date.now() + delay;
    this._setStatus('reconnecting');
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(function () { self.connect(); }, delay);
  };

  /** Stop for good (lesson ended, replaced, fatal error): no reconnect. */
  Client.prototype.stop = function (keepCamera) {
    this._stopped = true;
    this._gen++;
    clearTimeout(this._reconnectTimer);
    clearInterval(this._pingTimer);
    if (this.ws) { try { this.ws.close(); } catch (e) { /* ignore */ } }
    this._closePc();
    this.state.tracks = [];
    this._notifyTracks();
    if (!keepCamera) this.stopLocalMedia();
    this._setStatus('closed');
  };

  /** Close the socket now and reconnect right away (used when media fails while signaling lives). */
  Client.prototype.restart = function () {
    if (this.ws) { try { this.ws.close(); } catch (e) { /* ignore */ } }
    this._onClose(this._gen);
  };

  Client.prototype.send = function (msg) {
    var m = Object.assign({ v: PROTOCOL_VERSION }, msg);
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      log('not connected; dropped', m.type);
      return false;
    }
    this.ws.send(JSON.stringify(m));
    return true;
  };

  Client.prototype._setStatus = function (s) {
    this.state.status = s;
    if (this.opts.onStatus) this.opts.onStatus(s);
  };

  Client.prototype._notifyTracks = function () {
    if (this.opts.onTracks) this.opts.onTracks();
  };

  Client.prototype._handle = async function (msg, gen) {
    var st = this.state;
    switch (msg.type) {
      case 'welcome':
        this._attempt = 0;
        st.role = msg.role;
        st.classroom_id = msg.classroom_id;
        st.classroom_name = msg.classroom_name;
        st.lesson = msg.lesson || null;
        st.invitable = msg.invitable || [];
        st.invites = msg.invites || [];
        if (msg.rejoin_token) st.rejoin_token = msg.rejoin_token;
        st.ended = null;
        st.lastError = null;
        this._setStatus('joined');
        if (st.lesson) this._startMedia(gen);
        break;
      case 'lesson_started':
        st.lesson = msg.lesson;
        st.invites = msg.invites || [];
        st.ended = null;
        this._startMedia(gen);
        break;
      case 'lesson_state':
        st.lesson = msg.lesson;
        break;
      case 'offer':
        await this._onServerOffer(msg, gen);
        break;
      case 'answer':
        await this._onServerAnswer(msg, gen);
        break;
      case 'lesson_ended':
        st.ended = msg.reason || 'ended_by_teacher';
        st.lesson = null;
        st.invites = [];
        this._closePc();
        st.tracks = [];
        this._notifyTracks();
        break;
      case 'replaced':
        st.replaced = true;
        break;
      case 'error':
        st.lastError = msg;
        log('server error', msg.code, msg.message, msg.fatal ? '(fatal)' : '');
        break;
      case 'publish_layers':
        await this._applyPublishLayers(msg);
        break;
      case 'quality':
        st.quality = msg;
        break;
      case 'link_quality':
        st.links = {};
        (msg.classrooms || []).forEach(function (c) { st.links[c.classroom_id] = c; });
        break;
      case 'pong':
        break;
      default:
        log('unknown message', msg.type);
    }
    if (this.opts.onMessage) this.opts.onMessage(msg);
  };

  /** Open camera and microphone once; reused across reconnects. */
  Client.prototype.getLocalMedia = function () {
    var self = this;
    if (this.localStreamPromise) return this.localStreamPromise;
    var cfg = MEDIA[this.role];
    this.localStreamPromise = (async function () {
      var tries = [
        { audio: true, video: cfg.video },
        { audio: true, video: false },
        { audio: false, video: cfg.video }
      ];
      for (var i = 0; i < tries.length; i++) {
        try {
          var s = await navigator.mediaDevices.getUserMedia(tries[i]);
          if (i > 0) self.mediaError = 'partial';
          self.localStream = s;
          self._applyMute();
          return s;
        } catch (e) {
          log('getUserMedia failed', JSON.stringify(tries[i]), e && e.name);
          self.mediaError = (e && e.name) || 'error';
        }
      }
      self.localStream = new MediaStream();
      return self.localStream;
    })();
    return this.localStreamPromise;
  };

  Client.prototype.stopLocalMedia = function () {
    if (this.localStream) this.localStream.getTracks().forEach(function (t) { t.stop(); });
  };

  Client.prototype.setMicMuted = function (muted) {
    this.micMuted = !!muted;
    this._applyMute();
  };

  Client.prototype._applyMute = function () {
    var muted = this.micMuted;
    if (this.localStream) this.localStream.getAudioTracks().forEach(function (t) { t.enabled = !muted; });
  };

  Client.prototype._closePc = function () {
    if (this.pc) {
      try { this.pc.close(); } catch (e) { /* ignore */ }
    }
    this.pc = null;
    this._mediaStarted = false;
    this._ownOfferInFlight = false;
    this.state.media = 'closed';
  };

  /** Create the peer connection and send our offer (what we publish). */
  Client.prototype._startMedia = async function (gen) {
    var self = this;
    if (this._mediaStarted) return;
    this._mediaStarted = true;
    var stream = await this.getLocalMedia();
    if (gen !== this._gen || !this.state.lesson) { this._mediaStarted = false; return; }
    var pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    this.pc = pc;
    this.state.media = 'connecting';
    pc.ontrack = function () { if (self.pc === pc) self._notifyTracks(); };
    pc.onconnectionstatechange = function () {
      if (self.pc !== pc) return;
      self.state.media = pc.connectionState;
      if (self.opts.onMediaState) self.opts.onMediaState(pc.connectionState);
      if (pc.connectionState === 'failed') {
        log('peer connection failed; reconnecting');
        self.restart();
      }
    };
    var audio = stream.getAudioTracks()[0] || null;
    var video = stream.getVideoTracks()[0] || null;
    var cfg = MEDIA[this.role];
    var tA = pc.addTransceiver(audio || 'audio', { direction: 'sendonly', streams: [stream] });
    var tV = pc.addTransceiver(video || 'video', {
      direction: 'sendonly',
      streams: [stream],
      sendEncodings: cfg.encodings.map(function (e) { return Object.assign({}, e); })
    });
    if (video && 'contentHint' in video) video.contentHint = 'motion';
    this._ownOfferInFlight = true;
    var offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await gatheringDone(pc);
    if (gen !== this._gen || this.pc !== pc) return;
    this._published = [{ t: tA, source: 'microphone' }, { t: tV, source: 'camera' }];
    this.send({ type: 'offer', sdp: pc.localDescription.sdp, sources: this._sources() });
    if (this._screen) await this._addScreenTransceiver();
    if (this.state.maxLayer !== 'auto') this.send({ type: 'set_max_layer', layer: this.state.maxLayer });
  };

  /** Every sending m-line and what it carries, for the `sources` of our offers. */
  Client.prototype._sources = function () {
    return (this._published || [])
      .filter(function (p) { return p.t.mid !== null && !p.t.stopped && p.t.currentDirection !== 'stopped'; })
      .map(function (p) { return { mid: p.t.mid, source: p.source }; });
  };

  /** Offer again (after adding or stopping a track), once no negotiation is under way. */
  Client.prototype._renegotiate = async function () {
    var pc = this.pc, gen = this._gen;
    if (!pc) return;
    for (var i = 0; i < 50 && (pc.signalingState !== 'stable' || this._ownOfferInFlight); i++) await sleep(100);
    if (this.pc !== pc || gen !== this._gen) return;
    this._ownOfferInFlight = true;
    var offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    this.send({ type: 'offer', sdp: pc.localDescription.sdp, sources: this._sources() });
  };

  /**
   * Courseware: share a screen/window (or, for tests, any video stream) as a third track. Two
   * simulcast layers at a low frame rate keep text sharp; the server ranks it above the camera,
   * so on a collapsing link the camera pauses first and the courseware stays readable.
   */
  Client.prototype.shareScreen = async function (stream) {
    if (!stream) stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 5, max: 10 } }, audio: false });
    var track = stream.getVideoTracks()[0];
    if (!track) throw new Error('no video track to share');
    if ('contentHint' in track) track.contentHint = 'detail';
    var self = this;
    track.addEventListener('ended', function () { self.stopScreen(); });
    this._screen = { stream: stream, track: track, t: null };
    if (this.pc) await this._addScreenTransceiver();
  };

  Client.prototype._addScreenTransceiver = async function () {
    var sc = this._screen, pc = this.pc;
    if (!sc || !pc) return;
    sc.t = pc.addTransceiver(sc.track, {
      direction: 'sendonly',
      streams: [sc.stream],
      sendEncodings: [
        { rid: 'q', scaleResolutionDownBy: 2, maxBitrate: 250000, maxFramerate: 3 },
        { rid: 'h', scaleResolutionDownBy: 1, maxBitrate: 1200000, maxFramerate: 5 }
      ]
    });
    this._published.push({ t: sc.t, source: 'screen' });
    await this._renegotiate();
  };

  Client.prototype.stopScreen = async function () {
    var sc = this._screen;
    this._screen = null;
    if (!sc) return;
    sc.track.stop();
    if (sc.t && this.pc) {
      try { sc.t.stop(); } catch (e) { /* already stopped */ }
      this._published = this._published.filter(function (p) { return p.t !== sc.t; });
      await this._renegotiate();
    }
  };

  Client.prototype.isSharing = function () { return !!this._screen; };

  /** Layer shaping: a layer may take up to this many times its own maxBitrate when the server
   *  says every subscriber on it has room (publish_layers.max_kbps). */
  var SHAPE_CEILING = 3;

  /** Dynacast: encode only the simulcast layers someone receives (saves a weak uplink), each
   *  shaped layer at the bitrate the server asks, between its own maxBitrate and 3 times it. */
  Client.prototype._applyPublishLayers = async function (msg) {
    var pc = this.pc;
    if (!pc) return;
    var t = pc.getTransceivers().filter(function (x) { return x.mid === msg.mid; })[0];
    if (!t || !t.sender) return;
    // One change at a time: a getParameters() read while another setParameters() is under way
    // is void by the time it is set (two publish_layers messages in a row).
    var sender = t.sender;
    this._layersChain = (this._layersChain || Promise.resolve()).then(async function () {
      var params = sender.getParameters();
      if (!params.encodings || params.encodings.length < 2) return;
      var changed = false;
      // Each layer's own maxBitrate, read when the server first shapes it; a layer it stops
      // shaping goes back to it.
      var own = sender._ownMaxBitrate || (sender._ownMaxBitrate = {});
      var asked = msg.max_kbps || {};
      params.encodings.forEach(function (e) {
        var on = msg.active.indexOf(e.rid) >= 0;
        if (e.active !== on) { e.active = on; changed = true; }
        if (asked[e.rid] && !(e.rid in own)) own[e.rid] = e.maxBitrate;
        var base = own[e.rid];
        if (!base) return; // never shaped, or no maxBitrate of its own to start from
        var want = asked[e.rid] ? Math.max(base, Math.min(SHAPE_CEILING * base, asked[e.rid] * 1000)) : base;
        if (e.maxBitrate !== want) { e.maxBitrate = want; changed = true; }
      });
      if (changed) {
        try { await sender.setParameters(params); } catch (e) { log('setParameters failed:', e); }
      }
    });
    return this._layersChain;
  };

  /** Whether the server paused the video at `mid` for lack of bandwidth. */
  Client.prototype.isPaused = function (mid) {
    var q = this.state.quality;
    if (!q || !mid) return false;
    return q.tracks.some(function (t) { return t.mid === mid && t.paused; });
  };

  Client.prototype._onServerAnswer = async function (msg, gen) {
    var pc = this.pc;
    if (!pc || pc.signalingState !== 'have-local-offer') {
      log('answer ignored in state', pc && pc.signalingState);
      return;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
    this._ownOfferInFlight = false;
  };

  Client.prototype._onServerOffer = async function (msg, gen) {
    var pc = this.pc;
    if (!pc) { log('server offer before our peer connection; ignored'); return; }
    if (pc.signalingState === 'have-local-offer' || this._ownOfferInFlight) {
      // Glare: our offer wins; the server offers again after answering ours.
      log('server offer ignored: our offer is in flight');
      return;
    }
    var prev = this.state.tracks;
    this.state.tracks = msg.tracks || [];
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      var answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
    } catch (e) {
      this.state.tracks = prev;
      throw e;
    }
    if (gen !== this._gen || this.pc !== pc) return;
    this.send({ type: 'answer', sdp: pc.localDescription.sdp });
    this._notifyTracks();
  };

  /**
   * The received tracks right now: [{mid, kind, source, classroom_id, from_teacher, track}], only
   * those the last server offer lists and whose transceiver exists.
   */
  Client.prototype.receivedTracks = function () {
    var pc = this.pc;
    if (!pc) return [];
    var byMid = {};
    pc.getTransceivers().forEach(function (t) { if (t.mid !== null) byMid[t.mid] = t; });
    var out = [];
    this.state.tracks.forEach(function (info) {
      var tr = byMid[info.mid];
      if (!tr || !tr.receiver || !tr.receiver.track) return;
      out.push(Object.assign({}, info, { track: tr.receiver.track }));
    });
    return out;
  };

  Client.prototype.setMaxLayer = function (layer) {
    this.state.maxLayer = layer;
    return this.send({ type: 'set_max_layer', layer: layer });
  };

  // ---------------------------------------------------------------- display helpers

  /** Show `track` (or nothing) in a <video>; re-binds only when the track changes. */
  function bindVideo(el, track) {
    var cur = el._tongbuTrack || null;
    if (cur === (track || null)) return;
    el._tongbuTrack = track || null;
    el.muted = true;
    el.playsInline = true;
    el.autoplay = true;
    if (!track) {
      el.srcObject = null;
      return;
    }
    el.srcObject = new MediaStream([track]);
    var p = el.play();
    if (p && p.catch) p.catch(function () { /* muted video may still need a gesture; autoplay retries */ });
  }

  /**
   * Keeps one <audio> element per received audio track inside `container`. Calls
   * onBlocked(true) when the browser refused to play without a user gesture.
   */
  function AudioSink(container, onBlocked) {
    this.container = container;
    this.onBlocked = onBlocked || function () {};
    this.els = {};   // key -> element
    this.blocked = false;
  }

  AudioSink.prototype.update = function (tracks) {
    var self = this;
    var want = {};
    tracks.forEach(function (t) {
      if (t.kind !== 'audio') return;
      var key = t.mid + '|' + t.track.id;
      want[key] = true;
      if (self.els[key]) return;
      var a = document.createElement('audio');
      a.autoplay = true;
      a.dataset.mid = t.mid;
      a.dataset.classroomId = t.classroom_id;
      a.srcObject = new MediaStream([t.track]);
      self.container.appendChild(a);
      self.els[key] = a;
      self._play(a);
    });
    Object.keys(this.els).forEach(function (key) {
      if (want[key]) return;
      var a = self.els[key];
      a.srcObject = null;
      if (a.parentNode) a.parentNode.removeChild(a);
      delete self.els[key];
    });
  };

  AudioSink.prototype._play = function (a) {
    var self = this;
    var p = a.play();
    if (p && p.catch) {
      p.catch(function (e) {
        if (e && e.name === 'NotAllowedError') {
          self.blocked = true;
          self.onBlocked(true);
        }
      });
    }
  };

  /** Call from a click handler: retry every audio element. */
  AudioSink.prototype.unblock = function () {
    var self = this;
    var all = Object.keys(this.els).map(function (k) { return self.els[k].play(); });
    Promise.all(all).then(function () {
      self.blocked = false;
      self.onBlocked(false);
    }, function () { /* still blocked */ });
  };

  /**
   * Periodic inbound video stats per mid: {mid: {framesDecoded, fps, frameWidth, frameHeight,
   * packetsLost, bytesReceived}}; fps over the last interval.
   */
  function InboundMonitor(client, intervalMs, onSample) {
    this.client = client;
    this.prev = {};
    this.last = {};
    var self = this;
    this.timer = setInterval(function () { self._tick(intervalMs, onSample); }, intervalMs);
  }

  InboundMonitor.prototype._tick = async function (intervalMs, onSample) {
    var pc = this.client.pc;
    if (!pc) { this.last = {}; this.prev = {}; if (onSample) onSample(this.last); return; }
    var report;
    try { report = await pc.getStats(); } catch (e) { return; }
    var cur = {};
    report.forEach(function (s) {
      if (s.type !== 'inbound-rtp' || !s.mid) return;
      cur[s.mid] = {
        kind: s.kind,
        framesDecoded: s.framesDecoded || 0,
        frameWidth: s.frameWidth || 0,
        frameHeight: s.frameHeight || 0,
        packetsLost: s.packetsLost || 0,
        packetsReceived: s.packetsReceived || 0,
        bytesReceived: s.bytesReceived || 0
      };
    });
    var prev = this.prev;
    Object.keys(cur).forEach(function (mid) {
      var p = prev[mid];
      var c = cur[mid];
      c.fps = p ? (c.framesDecoded - p.framesDecoded) * 1000 / intervalMs : 0;
      c.bytesRate = p ? (c.bytesReceived - p.bytesReceived) * 1000 / intervalMs : 0;
    });
    this.prev = cur;
    this.last = cur;
    if (onSample) onSample(cur);
  };

  /** Small DOM helper: element with class and text (text via textContent only). */
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  /** Copy text to the clipboard; falls back to execCommand on insecure origins. */
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return new Promise(function (resolve, reject) {
      var ta = document.createElement('textarea');
      ta.value = text;
      ta.setAttribute('readonly', '');
      ta.style.position = 'fixed';
      ta.style.left = '-1000px';
      document.body.appendChild(ta);
      ta.select();
      var ok = false;
      try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
      document.body.removeChild(ta);
      if (ok) resolve(); else reject(new Error('copy failed'));
    });
  }

  /** Publishes `client` as window.tongbu (the test hook). */
  function expose(client, extra) {
    var api = {
      get pc() { return client.pc; },
      get ws() { return client.ws; },
      get state() { return client.state; },
      get localStream() { return client.localStream; },
      client: client,
      setMaxLayer: function (layer) { return client.setMaxLayer(layer); },
      shareScreen: function (stream) { return client.shareScreen(stream); },
      stopScreen: function () { return client.stopScreen(); },
      send: function (msg) { return client.send(msg); },
      receivedTracks: function () { return client.receivedTracks(); }
    };
    if (extra) Object.keys(extra).forEach(function (k) { api[k] = extra[k]; });
    window.tongbu = api;
    return api;
  }

  window.tongbuApp = {
    Client: Client,
    AudioSink: AudioSink,
    InboundMonitor: InboundMonitor,
    bindVideo: bindVideo,
    el: el,
    copyText: copyText,
    expose: expose,
    sleep: sleep,
    log: log,
    isRetryable: isRetryable
  };
})();
