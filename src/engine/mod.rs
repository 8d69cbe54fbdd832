//! The engine: one tokio task that owns the UDP socket, every peer's str0m `Rtc`, and the
//! lessons. Signaling sessions talk to it through [`Command`]s and get [`Outbound`] messages
//! back; nothing is shared, so nothing is locked.
//!
//! Loop (str0m's single-mutation rule): take one input (datagram, timeout or command), then
//! drain every touched `Rtc` until it returns a timeout, handling the events it produced, which
//! may touch other peers (forwarded media), which are drained in turn.

mod adapt;
mod commands;
mod media;
mod routes;
mod samples;
mod tcp;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, Input, Output};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::auth::TokenKey;
use crate::bwe::{KeyframeThrottle, Tuning};
use crate::directory::Directory;
use crate::lesson::Registry;
use crate::media::peer::Peer;
use crate::metrics::Metrics;
use crate::signal::message::{ClientMessage, Invite, Role, ServerMessage};
use crate::signal::ConnId;
use crate::usage::event::UsageEvent;

/// Outbound messages queued per connection before the engine gives up on a slow reader.
pub const OUTBOX_CAPACITY: usize = 256;
/// Usage samples and quality reports run this often.
const TICK: Duration = Duration::from_secs(1);
/// Layer selectors' holds and keyframe waits are checked, and dynacast decided, this often.
const ADAPT_TICK: Duration = Duration::from_millis(200);
/// Early readings of each subscriber's newest feedback, for a collapsing link, run this often:
/// a collapse is bounded soon after its feedback arrives, not at the next adaptation tick.
const EARLY_TICK: Duration = Duration::from_millis(50);
/// How long a peer may stay ICE-disconnected before its media is given up; its client then
/// reconnects with a fresh peer connection.
const ICE_GRACE: Duration = Duration::from_secs(15);
/// Largest UDP datagram read.
const RECV_BUF: usize = 2048;

/// What the engine sends to a signaling session.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Nearly every item is a message; boxing would only add work.
pub enum Outbound {
    Message(ServerMessage),
    /// Close the connection after the messages before it.
    Close,
}

#[derive(Debug)]
pub enum Command {
    /// A signaling connection opened.
    Open {
        conn: ConnId,
        addr: IpAddr,
        outbox: mpsc::Sender<Outbound>,
    },
    Message {
        conn: ConnId,
        msg: ClientMessage,
    },
    /// The signaling connection closed.
    Close {
        conn: ConnId,
    },
    /// Start a lesson without a teacher connection (the demo lesson at startup).
    StartLesson {
        host: String,
        title: String,
        invited: Vec<String>,
        reply: oneshot::Sender<Result<StartedLesson, String>>,
    },
    Snapshot {
        reply: oneshot::Sender<EngineSnapshot>,
    },
}

#[derive(Debug, Clone)]
pub struct StartedLesson {
    pub lesson_id: String,
    pub invites: Vec<Invite>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EngineSnapshot {
    pub lessons: usize,
    pub connections: usize,
    pub peers: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot bind UDP {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("no address to advertise: bind a specific IP or set a public IP")]
    NoAdvertisedAddress,
}

pub struct EngineConfig {
    pub udp_bind: SocketAddr,
    /// ICE-TCP fallback listener (e.g. port 443 for firewalls that block UDP); `None`: UDP only.
    pub tcp_bind: Option<SocketAddr>,
    /// Addresses put in ICE candidates; defaults to the bound address.
    pub public_ips: Vec<IpAddr>,
    pub key: TokenKey,
    pub directory: Arc<Directory>,
    pub usage: mpsc::UnboundedSender<UsageEvent>,
    pub metrics: Arc<Metrics>,
    pub tuning: Tuning,
    /// `false`: the comparison baseline — no estimate, always the top layer.
    pub adaptation: bool,
    /// Where each new peer's estimate starts, bits per second.
    pub initial_estimate_bps: u64,
}

/// Cloneable handle for the HTTP side.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    next_conn: Arc<AtomicU64>,
    pub udp_addr: SocketAddr,
    pub tcp_addr: Option<SocketAddr>,
}

impl EngineHandle {
    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    pub async fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).await.is_ok()
    }

    pub async fn start_lesson(
        &self,
        host: &str,
        title: &str,
        invited: Vec<String>,
    ) -> Result<StartedLesson, String> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::StartLesson {
            host: host.into(),
            title: title.into(),
            invited,
            reply,
        };
        if !self.send(cmd).await {
            return Err("engine stopped".into());
        }
        rx.await.map_err(|_| "engine stopped".to_string())?
    }

    pub async fn snapshot(&self) -> Option<EngineSnapshot> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Snapshot { reply }).await.then_some(())?;
        rx.await.ok()
    }
}

/// Who a connection is, once it has joined.
#[derive(Debug, Clone)]
pub(crate) struct Joined {
    pub role: Role,
    pub classroom_id: String,
    pub lesson_id: Option<String>,
}

pub(crate) struct Conn {
    pub addr: IpAddr,
    pub outbox: mpsc::Sender<Outbound>,
    pub joined: Option<Joined>,
    pub peer: Option<Peer>,
    /// Usage counters at the last sample.
    pub sampled: PeerTotals,
    pub latest: PeerTotals,
    /// Queued in `Engine::dirty` for draining.
    pub dirty: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PeerTotals {
    /// Keyframe requests from this client's decoders: each one is a picture it lost (a freeze).
    pub keyframe_requests: u32,
    pub bytes_rx: u64,
    pub bytes_tx: u64,
}

pub(crate) struct Engine {
    socket: UdpSocket,
    local_addr: SocketAddr,
    candidates: Vec<SocketAddr>,
    tcp_candidates: Vec<SocketAddr>,
    /// Open ICE-TCP links by remote address.
    tcp_links: HashMap<SocketAddr, mpsc::Sender<bytes::Bytes>>,
    key: TokenKey,
    dir: Arc<Directory>,
    usage: mpsc::UnboundedSender<UsageEvent>,
    metrics: Arc<Metrics>,
    conns: HashMap<ConnId, Conn>,
    registry: Registry,
    /// Remote address → connection, learnt from accepted datagrams.
    by_remote: HashMap<SocketAddr, ConnId>,
    keyframes: KeyframeThrottle,
    /// Connections whose `Rtc` has new input and must be drained.
    dirty: Vec<ConnId>,
    /// Events drained from `Rtc`s, handled after the drain so no two peers are borrowed at once.
    events: VecDeque<(ConnId, Event)>,
    /// Lessons whose routes changed.
    reroute: Vec<String>,
    /// Connections whose `Rtc` panicked: their peer is already gone (see [`contained`]); the
    /// next reap tells their client and closes them.
    crashed: Vec<ConnId>,
    tuning: Tuning,
    adaptation: bool,
    initial_estimate_bps: u64,
    next_track_id: u64,
}

/// Binds the UDP port and spawns the engine task.
pub async fn spawn(cfg: EngineConfig) -> Result<EngineHandle, EngineError> {
    let socket = UdpSocket::bind(cfg.udp_bind)
        .await
        .map_err(|e| EngineError::Bind(cfg.udp_bind, e))?;
    let local_addr = socket
        .local_addr()
        .map_err(|e| EngineError::Bind(cfg.udp_bind, e))?;
    let candidates: Vec<SocketAddr> = if cfg.public_ips.is_empty() {
        if local_addr.ip().is_unspecified() {
            return Err(EngineError::NoAdvertisedAddress);
        }
        vec![local_addr]
    } else {
        cfg.public_ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, local_addr.port()))
            .collect()
    };
    let (tcp_tx, tcp_rx) = mpsc::channel(4096);
    let mut tcp_candidates = Vec::new();
    let mut tcp_addr = None;
    if let Some(bind) = cfg.tcp_bind {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| EngineError::Bind(bind, e))?;
        let local = listener
            .local_addr()
            .map_err(|e| EngineError::Bind(bind, e))?;
        tcp_candidates = candidates
            .iter()
            .map(|c| SocketAddr::new(c.ip(), local.port()))
            .collect();
        tcp_addr = Some(local);
        tokio::spawn(tcp::accept_loop(listener, tcp_tx));
    }
    let (tx, rx) = mpsc::channel(1024);
    let engine = Engine {
        socket,
        local_addr,
        candidates,
        tcp_candidates,
        tcp_links: HashMap::new(),
        key: cfg.key,
        dir: cfg.directory,
        usage: cfg.usage,
        metrics: cfg.metrics,
        conns: HashMap::new(),
        registry: Registry::default(),
        by_remote: HashMap::new(),
        keyframes: KeyframeThrottle::new(&cfg.tuning),
        dirty: Vec::new(),
        events: VecDeque::new(),
        reroute: Vec::new(),
        crashed: Vec::new(),
        tuning: cfg.tuning,
        adaptation: cfg.adaptation,
        initial_estimate_bps: cfg.initial_estimate_bps,
        next_track_id: 0,
    };
    tokio::spawn(engine.run(rx, tcp_rx));
    Ok(EngineHandle {
        tx,
        next_conn: Arc::new(AtomicU64::new(1)),
        udp_addr: local_addr,
        tcp_addr,
    })
}

impl Engine {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut tcp: mpsc::Receiver<tcp::TcpEvent>,
    ) {
        let mut buf = vec![0u8; RECV_BUF];
        let mut next_tick = Instant::now() + TICK;
        let mut next_adapt = Instant::now() + ADAPT_TICK;
        let mut next_early = Instant::now() + EARLY_TICK;
        loop {
            let deadline = self
                .next_deadline()
                .min(next_tick)
                .min(next_adapt)
                .min(next_early);
            tokio::select! {
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.handle_command(cmd, Instant::now());
                }
                Some(event) = tcp.recv() => self.handle_tcp(event, Instant::now()),
                res = self.socket.recv_from(&mut buf) => {
                    match res {
                        Ok((n, source)) => self.handle_packet(Protocol::Udp, &buf[..n], source, Instant::now()),
                        // ICMP port unreachable from a vanished peer shows up here; not fatal.
                        Err(e) => tracing::debug!("UDP receive error: {e}"),
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    self.handle_timeouts(now);
                    if now >= next_adapt {
                        self.adapt_tick(now);
                        next_adapt = now + ADAPT_TICK;
                        next_early = now + EARLY_TICK;
                    } else if now >= next_early {
                        self.early_overflow_tick(now);
                        next_early = now + EARLY_TICK;
                    }
                    if now >= next_tick {
                        self.expire_lost_peers(now);
                        self.sample_usage();
                        self.report_tick();
                        next_tick = now + TICK;
                    }
                }
            }
            self.settle(Instant::now());
        }
        tracing::info!("engine stopped");
    }

    fn next_deadline(&self) -> Instant {
        self.conns
            .values()
            .filter_map(|c| c.peer.as_ref().map(|p| p.next_timeout))
            .min()
            .unwrap_or_else(|| Instant::now() + TICK)
    }

    /// One received packet, from the UDP socket or a TCP link, to the peer it belongs to.
    fn handle_packet(&mut self, proto: Protocol, data: &[u8], source: SocketAddr, now: Instant) {
        let Ok(contents) = data.try_into() else {
            // Not STUN, DTLS, RTP or RTCP: nothing of ours.
            return;
        };
        let destination = self.destination_for(proto, source);
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );
        let owner = self
            .by_remote
            .get(&source)
            .copied()
            .filter(|id| self.peer_accepts(*id, &input))
            .or_else(|| {
                self.conns
                    .iter()
                    .find(|(_, c)| c.peer.as_ref().is_some_and(|p| p.rtc.accepts(&input)))
                    .map(|(id, _)| *id)
            });
        let Some(id) = owner else {
            return;
        };
        self.by_remote.insert(source, id);
        if let Some(peer) = self.conns.get_mut(&id).and_then(|c| c.peer.as_mut()) {
            match contained(id, || peer.rtc.handle_input(input)) {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::warn!(%id, "peer input error, disconnecting: {e}");
                    peer.rtc.disconnect();
                }
                None => return self.crash(id),
            }
            self.mark_dirty(id);
        }
    }

    /// Takes a peer whose `Rtc` panicked out at once: nothing may touch its state again.
    pub(crate) fn crash(&mut self, id: ConnId) {
        crash_in(&mut self.conns, &mut self.crashed, id);
    }

    fn peer_accepts(&self, id: ConnId, input: &Input) -> bool {
        self.conns
            .get(&id)
            .and_then(|c| c.peer.as_ref())
            .is_some_and(|p| p.rtc.accepts(input))
    }

    /// The local address a packet from `source` was sent to, as str0m knows it (the advertised
    /// candidate of that protocol and address family).
    fn destination_for(&self, proto: Protocol, source: SocketAddr) -> SocketAddr {
        let (candidates, fallback) = match proto {
            Protocol::Udp => (&self.candidates, self.local_addr),
            _ => (&self.tcp_candidates, self.local_addr),
        };
        candidates
            .iter()
            .find(|c| c.is_ipv4() == source.is_ipv4())
            .copied()
            .unwrap_or(fallback)
    }

    fn handle_tcp(&mut self, event: tcp::TcpEvent, now: Instant) {
        match event {
            tcp::TcpEvent::Opened { remote, writer } => {
                self.tcp_links.insert(remote, writer);
            }
            tcp::TcpEvent::Packet { remote, data } => {
                self.handle_packet(Protocol::Tcp, &data, remote, now)
            }
            tcp::TcpEvent::Closed { remote } => {
                self.tcp_links.remove(&remote);
            }
        }
    }

    fn handle_timeouts(&mut self, now: Instant) {
        let due: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer.as_ref().is_some_and(|p| p.next_timeout <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(peer) = self.conns.get_mut(&id).and_then(|c| c.peer.as_mut()) {
                match contained(id, || peer.rtc.handle_input(Input::Timeout(now))) {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        tracing::warn!(%id, "peer timeout error, disconnecting: {e}");
                        peer.rtc.disconnect();
                    }
                    None => {
                        self.crash(id);
                        continue;
                    }
                }
            }
            self.mark_dirty(id);
        }
    }

    pub(crate) fn mark_dirty(&mut self, id: ConnId) {
        mark_dirty_in(&mut self.conns, &mut self.dirty, id);
    }

    /// Drains dirty peers and handles their events until nothing is left to do.
    fn settle(&mut self, now: Instant) {
        loop {
            while let Some(id) = self.dirty.pop() {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.dirty = false;
                }
                self.drain(id, now);
            }
            if let Some((id, event)) = self.events.pop_front() {
                self.handle_event(id, event, now);
                continue;
            }
            if let Some(lesson_id) = self.reroute.pop() {
                self.apply_routes(&lesson_id, now);
                continue;
            }
            break;
        }
        self.reap_dead_peers();
    }

    /// Polls one peer's `Rtc` until it returns a timeout, sending its datagrams and queueing its
    /// events.
    fn drain(&mut self, id: ConnId, now: Instant) {
        let Some(peer) = self.conns.get_mut(&id).and_then(|c| c.peer.as_mut()) else {
            return;
        };
        loop {
            if !peer.rtc.is_alive() {
                peer.next_timeout = now;
                return;
            }
            let Some(output) = contained(id, || peer.rtc.poll_output()) else {
                return self.crash(id);
            };
            match output {
                Ok(Output::Timeout(t)) => {
                    peer.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) if t.proto == Protocol::Udp => {
                    // A full socket buffer drops the datagram, as the network would.
                    if let Err(e) = self.socket.try_send_to(&t.contents, t.destination) {
                        if e.kind() != std::io::ErrorKind::WouldBlock {
                            tracing::debug!(%id, "UDP send error: {e}");
                        }
                    }
                }
                Ok(Output::Transmit(t)) => {
                    // A TCP link that cannot keep up drops the packet; RTP repairs or skips it.
                    if let (Some(link), Some(frame)) =
                        (self.tcp_links.get(&t.destination), tcp::frame(&t.contents))
                    {
                        let _ = link.try_send(frame);
                    }
                }
                Ok(Output::Event(event)) => self.events.push_back((id, event)),
                Err(e) => {
                    tracing::warn!(%id, "peer failed, disconnecting: {e}");
                    peer.rtc.disconnect();
                }
            }
        }
    }

    fn expire_lost_peers(&mut self, now: Instant) {
        for (id, conn) in self.conns.iter_mut() {
            let Some(peer) = conn.peer.as_mut() else {
                continue;
            };
            if peer
                .ice_lost_since
                .is_some_and(|t| now.saturating_duration_since(t) >= ICE_GRACE)
            {
                tracing::info!(%id, "no ICE traffic for {ICE_GRACE:?}, dropping media");
                peer.rtc.disconnect();
            }
        }
    }

    /// Removes peers whose `Rtc` died (ICE timeout, DTLS failure) and tells their client.
    fn reap_dead_peers(&mut self) {
        let mut dead: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer.as_ref().is_some_and(|p| !p.rtc.is_alive()))
            .map(|(id, _)| *id)
            .collect();
        dead.append(&mut self.crashed);
        for id in dead {
            tracing::info!(%id, "media connection lost");
            self.send(
                id,
                ServerMessage::fatal(
                    crate::signal::message::ErrorCode::MediaLost,
                    "媒体连接中断，正在重新连接 / media connection lost, reconnecting",
                ),
            );
            self.close_conn(id);
        }
    }

    /// Queues a message for a connection; a connection that cannot keep up is closed.
    pub(crate) fn send(&mut self, id: ConnId, msg: ServerMessage) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        if conn.outbox.try_send(Outbound::Message(msg)).is_err() {
            tracing::warn!(%id, "signaling outbox full, closing");
            let _ = conn.outbox.try_send(Outbound::Close);
        }
    }

    pub(crate) fn usage(&self, event: UsageEvent) {
        // The usage service outlives the engine; if it is gone the server is shutting down.
        let _ = self.usage.send(event);
    }

    pub(crate) fn handle_event(&mut self, id: ConnId, event: Event, now: Instant) {
        match event {
            Event::MediaAdded(added) => self.on_media_added(id, added),
            Event::MediaChanged(changed) => self.on_media_changed(id, changed),
            Event::RtpPacket(packet) => self.forward_rtp(id, packet, now),
            Event::KeyframeRequest(req) => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.latest.keyframe_requests += 1;
                }
                self.metrics.subscriber_keyframe_requests.inc();
                self.relay_keyframe_request(id, req, now)
            }
            Event::EgressBitrateEstimate(kind) => {
                let estimate = match kind {
                    str0m::bwe::BweKind::Twcc { estimate, .. } => estimate,
                    str0m::bwe::BweKind::Remb { estimate, .. } => estimate,
                    _ => return,
                };
                self.on_estimate(id, estimate, now);
            }
            Event::PeerStats(stats) => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    if let Some(peer) = conn.peer.as_mut() {
                        peer.loss = stats.egress_loss_fraction;
                        // Loss while the link overflows is congestion, which the overflow bound
                        // answers. Taken as the link's own, it kept repair costs (RED depth, FEC,
                        // resends) up for seconds after a collapse, and video at a quarter of
                        // its frame rate or paused on the collapsed link.
                        let link_loss = stats
                            .egress_loss_fraction
                            .filter(|_| peer.overflow.cap_bps().is_none());
                        peer.fec_link
                            .on_report(link_loss, stats.rtt.map(|d| d.as_millis() as u32));
                        peer.rtt = stats.rtt;
                        tracing::trace!(%id, loss = ?stats.egress_loss_fraction, rtt = ?stats.rtt, "peer stats");
                    }
                    conn.latest = PeerTotals {
                        bytes_rx: stats.peer_bytes_rx,
                        bytes_tx: stats.peer_bytes_tx,
                        ..conn.latest
                    };
                }
            }
            Event::MediaEgressStats(stats) => {
                // Cumulative per outgoing stream: count what is new since the last report.
                if let Some(peer) = self.conns.get_mut(&id).and_then(|c| c.peer.as_mut()) {
                    let key = (stats.mid, stats.rid);
                    let last = peer.egress_nacks.insert(key, stats.nacks).unwrap_or(0);
                    self.metrics.nacks.inc_by(stats.nacks.saturating_sub(last));
                }
            }
            Event::Connected => {
                tracing::debug!(%id, "connected");
                if let Some(peer) = self.conns.get_mut(&id).and_then(|c| c.peer.as_mut()) {
                    peer.connected = true;
                }
            }
            Event::IceConnectionStateChange(state) => {
                tracing::debug!(%id, ?state, "ICE state");
                if let Some(peer) = self.conns.get_mut(&id).and_then(|c| c.peer.as_mut()) {
                    // A village link may go quiet for seconds and come back: wait before giving up.
                    peer.ice_lost_since = match state {
                        str0m::IceConnectionState::Disconnected => Some(now),
                        _ => None,
                    };
                }
            }
            _ => {}
        }
    }
}

/// Queues a connection's `Rtc` for draining once, however often it is touched (a flag, not a
/// search: the forwarding path marks every subscriber of every frame).
pub(crate) fn mark_dirty_in(
    conns: &mut HashMap<ConnId, Conn>,
    dirty: &mut Vec<ConnId>,
    id: ConnId,
) {
    if let Some(c) = conns.get_mut(&id) {
        if !c.dirty {
            c.dirty = true;
            dirty.push(id);
        }
    }
}

/// The host candidates for a new peer.
pub(crate) fn host_candidates(udp: &[SocketAddr], tcp: &[SocketAddr]) -> Vec<Candidate> {
    let udp = udp.iter().filter_map(|a| Candidate::host(*a, "udp").ok());
    let tcp = tcp.iter().filter_map(|a| {
        Candidate::builder()
            .tcp()
            .host(*a)
            .tcptype(TcpType::Passive)
            .build()
            .ok()
    });
    udp.chain(tcp).collect()
}

/// [`Engine::crash`] for callers holding the engine's fields apart.
pub(crate) fn crash_in(conns: &mut HashMap<ConnId, Conn>, crashed: &mut Vec<ConnId>, id: ConnId) {
    if let Some(conn) = conns.get_mut(&id) {
        conn.peer = None;
    }
    crashed.push(id);
}

/// Runs a call into one peer's `Rtc`, containing a panic inside str0m to that peer (`None`):
/// one event loop serves every lesson on the node, and a panic there took them all down (a
/// TWCC bookkeeping bug in str0m, since fixed). The caller drops the peer; its client reconnects.
pub(crate) fn contained<T>(id: ConnId, call: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(value) => Some(value),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(%id, "media engine panicked on this peer, dropping it: {what}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_one_peer_is_contained_and_reported_as_none() {
        let id = ConnId(1);
        assert_eq!(contained(id, || 7), Some(7));
        let crashed: Option<()> = contained(id, || panic!("TWCC records out of step"));
        assert_eq!(crashed, None);
        let crashed: Option<u8> = contained(id, || panic!("{} bytes", 5000));
        assert_eq!(crashed, None, "a formatted message too");
    }
}
