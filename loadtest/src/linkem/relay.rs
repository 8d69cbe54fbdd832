//! Moves IP packets between TUN devices in two namespaces through a
//! [`LinkModel`] per direction. Single-threaded: one ppoll loop wakes for
//! arrivals and for the next release time.

use std::io::{self, ErrorKind};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::config::{ConfigError, LinkConfig};
use super::model::{LinkModel, LinkStats, Verdict};
use super::tun::{Tun, TunError};
use crate::netns::{ip, NetnsError};

/// Largest IP packet a TUN device hands over.
const MAX_PACKET: usize = 65_535;
/// Packets read from one device before serving the other, for fairness.
const READ_BATCH: usize = 64;
/// Longest sleep, so stop requests are seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(100);

/// Failure to set up or run the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tun(#[from] TunError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Topology and impairments of one relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Central-side namespace (sends the downlink).
    pub ns_a: String,
    /// Village-side namespace.
    pub ns_b: String,
    /// TUN device name in both namespaces.
    pub dev: String,
    pub addr_a: Ipv4Addr,
    pub addr_b: Ipv4Addr,
    pub mtu: u32,
    /// Keep IPv6 on the TUN devices (off: no link-local chatter on the link).
    pub ipv6: bool,
    /// A → B.
    pub down: LinkConfig,
    /// B → A.
    pub up: LinkConfig,
    /// Print each packet lost at random (not queue drops) on stderr, with its RTP header when
    /// it carries RTP: to match a receiver's freezes to the packets behind them.
    pub log_lost: bool,
    /// Print each RTP packet delivered on the downlink on stderr (wall-clock µs and header):
    /// to see how a receiver's arrivals track the sender's timestamps.
    pub log_delivered: bool,
}

impl RelayConfig {
    pub fn new(ns_a: &str, ns_b: &str, down: LinkConfig, up: LinkConfig) -> Self {
        Self {
            ns_a: ns_a.into(),
            ns_b: ns_b.into(),
            dev: "linkem0".into(),
            addr_a: Ipv4Addr::new(10, 77, 0, 1),
            addr_b: Ipv4Addr::new(10, 77, 0, 2),
            mtu: 1500,
            ipv6: false,
            down,
            up,
            log_lost: false,
            log_delivered: false,
        }
    }
}

/// Counters of both directions plus device write failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub down: LinkStats,
    pub up: LinkStats,
    pub write_errors: u64,
}

/// A configured relay, ready to [`run`](Relay::run).
pub struct Relay {
    a: Tun,
    b: Tun,
    down: LinkModel<Vec<u8>>,
    up: LinkModel<Vec<u8>>,
    write_errors: u64,
    log_lost: bool,
    log_delivered: bool,
}

impl Relay {
    /// Creates and addresses both TUN devices. Rate schedules count from the
    /// moment this returns.
    pub fn setup(cfg: &RelayConfig) -> Result<Relay, RelayError> {
        cfg.down.validate()?;
        cfg.up.validate()?;
        let a = Tun::create_in(&cfg.ns_a, &cfg.dev, !cfg.ipv6)?;
        let b = Tun::create_in(&cfg.ns_b, &cfg.dev, !cfg.ipv6)?;
        let mtu = cfg.mtu.to_string();
        for (ns, local, peer) in [
            (&cfg.ns_a, cfg.addr_a, cfg.addr_b),
            (&cfg.ns_b, cfg.addr_b, cfg.addr_a),
        ] {
            let (local, peer) = (local.to_string(), peer.to_string());
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            // Point-to-point: a /32 with a peer route, nothing else reachable.
            ip(&[
                "-n", ns, "addr", "add", &local, "peer", &peer, "dev", &cfg.dev,
            ])?;
            ip(&["-n", ns, "link", "set", "dev", &cfg.dev, "mtu", &mtu, "up"])?;
        }
        let start = Instant::now();
        Ok(Relay {
            a,
            b,
            down: LinkModel::new(cfg.down.clone(), start)?,
            up: LinkModel::new(cfg.up.clone(), start)?,
            write_errors: 0,
            log_lost: cfg.log_lost,
            log_delivered: cfg.log_delivered,
        })
    }

    pub fn stats(&self) -> RelayStats {
        RelayStats {
            down: self.down.stats(),
            up: self.up.stats(),
            write_errors: self.write_errors,
        }
    }

    /// Relays until `stop` is set or `keep_going` returns false (checked at
    /// least every 100 ms).
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        mut keep_going: impl FnMut() -> bool,
    ) -> Result<(), RelayError> {
        let mut buf = vec![0u8; MAX_PACKET];
        let mut last_check = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now - last_check >= MAX_WAIT {
                last_check = now;
                if !keep_going() {
                    break;
                }
            }
            let log_down = self.log_delivered.then_some("down");
            self.write_errors += release(&mut self.down, &self.b, now, log_down);
            self.write_errors += release(&mut self.up, &self.a, now, None);

            let next = [self.down.next_release(), self.up.next_release()]
                .into_iter()
                .flatten()
                .min();
            let wait = next.map_or(MAX_WAIT, |t| {
                t.saturating_duration_since(Instant::now()).min(MAX_WAIT)
            });
            let mut fds = [
                libc::pollfd {
                    fd: self.a.raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.b.raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let ts = libc::timespec {
                tv_sec: wait.as_secs() as libc::time_t,
                tv_nsec: wait.subsec_nanos() as libc::c_long,
            };
            // SAFETY: fds and ts are valid for the call; no signal mask change.
            let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null()) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(RelayError::Io {
                    what: "ppoll",
                    source: e,
                });
            }
            for (pfd, tun, model, dir) in [
                (fds[0], &self.a, &mut self.down, "down"),
                (fds[1], &self.b, &mut self.up, "up"),
            ] {
                if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                    return Err(RelayError::Io {
                        what: "TUN device closed",
                        source: io::Error::from(ErrorKind::BrokenPipe),
                    });
                }
                if pfd.revents & libc::POLLIN != 0 {
                    ingest(tun, model, &mut buf, self.log_lost.then_some(dir))?;
                }
            }
        }
        Ok(())
    }
}

/// Reads up to a batch of packets from `tun` into `model`; logs those lost at random when
/// `log_lost` names the direction.
fn ingest(
    tun: &Tun,
    model: &mut LinkModel<Vec<u8>>,
    buf: &mut [u8],
    log_lost: Option<&str>,
) -> Result<(), RelayError> {
    for _ in 0..READ_BATCH {
        match tun.recv(buf) {
            Ok(0) => break,
            Ok(n) => {
                let verdict = model.push(Instant::now(), n, buf[..n].to_vec());
                if let (Verdict::Lost, Some(dir)) = (verdict, log_lost) {
                    eprintln!("{}", lost_line(dir, SystemTime::now(), &buf[..n]));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(RelayError::Io {
                    what: "read TUN",
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Writes every packet due by `now` to `out`; returns the number of failed writes. Logs the RTP
/// packets written when `log_delivered` names the direction.
fn release(
    model: &mut LinkModel<Vec<u8>>,
    out: &Tun,
    now: Instant,
    log_delivered: Option<&str>,
) -> u64 {
    let mut errors = 0;
    while let Some(p) = model.pop_ready(now) {
        // A failed write (e.g. device going down) is a lost packet, as on a real link.
        if out.send(&p).is_err() {
            errors += 1;
        } else if let Some(dir) = log_delivered {
            if RtpHeader::parse(&p).is_some() {
                eprintln!("{}", packet_line("delivered", dir, SystemTime::now(), &p));
            }
        }
    }
    errors
}

/// The RTP header fields of an IPv4/UDP packet that carries RTP (not RTCP, STUN or DTLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub dst_port: u16,
    pub payload_type: u8,
    pub marker: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

impl RtpHeader {
    /// Reads `packet` (an IP packet as the TUN device hands it over); `None` if it is not
    /// IPv4/UDP carrying RTP version 2 outside RTCP's packet types (RFC 5761: 192–223).
    pub fn parse(packet: &[u8]) -> Option<RtpHeader> {
        let version_ihl = *packet.first()?;
        if version_ihl >> 4 != 4 || *packet.get(9)? != 17 {
            return None;
        }
        let udp = packet.get(usize::from(version_ihl & 0x0f) * 4..)?;
        let rtp = udp.get(8..20)?;
        if rtp[0] >> 6 != 2 || (192..=223).contains(&rtp[1]) {
            return None;
        }
        Some(RtpHeader {
            dst_port: u16::from_be_bytes([udp[2], udp[3]]),
            payload_type: rtp[1] & 0x7f,
            marker: rtp[1] & 0x80 != 0,
            seq: u16::from_be_bytes([rtp[2], rtp[3]]),
            timestamp: u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]),
            ssrc: u32::from_be_bytes([rtp[8], rtp[9], rtp[10], rtp[11]]),
        })
    }
}

/// One `--log-lost` line: wall-clock milliseconds (to match browser samples), direction, size
/// and the RTP header if any. SRTP leaves the header in the clear.
pub fn lost_line(dir: &str, at: SystemTime, packet: &[u8]) -> String {
    packet_line("lost", dir, at, packet)
}

/// One packet log line: what happened to it, wall-clock milliseconds with microseconds,
/// direction, size and the RTP header if any.
pub fn packet_line(what: &str, dir: &str, at: SystemTime, packet: &[u8]) -> String {
    let us = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
    let head = format!(
        "linkem {what} t={}.{:03} dir={dir} len={}",
        us / 1000,
        us % 1000,
        packet.len()
    );
    match RtpHeader::parse(packet) {
        Some(h) => format!(
            "{head} dport={} pt={} m={} seq={} ts={} ssrc={}",
            h.dst_port,
            h.payload_type,
            u8::from(h.marker),
            h.seq,
            h.timestamp,
            h.ssrc
        ),
        None => head,
    }
}

/// Prefix of the machine-readable statistics lines the binary prints at exit.
pub const STATS_PREFIX: &str = "linkem stats";

impl RelayStats {
    /// One `linkem stats <dir> key=value ...` line per direction.
    pub fn to_lines(&self) -> String {
        let line = |dir: &str, s: &LinkStats| {
            format!(
                "{STATS_PREFIX} {dir} packets_in={} bytes_in={} queue_drops={} lost={} delivered={} bytes_delivered={} max_queue_bytes={} write_errors={}",
                s.packets_in, s.bytes_in, s.queue_drops, s.lost, s.delivered, s.bytes_delivered,
                s.max_queue_bytes, self.write_errors
            )
        };
        format!("{}\n{}", line("down", &self.down), line("up", &self.up))
    }

    /// Reads back [`to_lines`](Self::to_lines) output; `None` unless both directions parse.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<RelayStats> {
        let mut out = RelayStats::default();
        let (mut down, mut up) = (false, false);
        for line in lines {
            let Some(rest) = line.strip_prefix(STATS_PREFIX) else {
                continue;
            };
            let mut words = rest.split_whitespace();
            let (dir, seen) = match words.next()? {
                "down" => (&mut out.down, &mut down),
                "up" => (&mut out.up, &mut up),
                _ => return None,
            };
            for kv in words {
                let (k, v) = kv.split_once('=')?;
                let v: u64 = v.parse().ok()?;
                match k {
                    "packets_in" => dir.packets_in = v,
                    "bytes_in" => dir.bytes_in = v,
                    "queue_drops" => dir.queue_drops = v,
                    "lost" => dir.lost = v,
                    "delivered" => dir.delivered = v,
                    "bytes_delivered" => dir.bytes_delivered = v,
                    "max_queue_bytes" => dir.max_queue_bytes = usize::try_from(v).ok()?,
                    "write_errors" => out.write_errors = v,
                    _ => {}
                }
            }
            *seen = true;
        }
        (down && up).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4/UDP packet to port 5000 whose payload starts with `rtp`.
    fn udp_packet(rtp: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 77, 0, 1, 10, 77, 0, 2,
        ];
        p.extend_from_slice(&[0x9c, 0x40, 0x13, 0x88, 0, 0, 0, 0]);
        p.extend_from_slice(rtp);
        p
    }

    #[test]
    fn lost_rtp_packets_are_described_and_others_are_not() {
        let rtp = [
            0x80,
            0x80 | 96,
            0x12,
            0x34,
            0,
            0,
            0,
            1,
            0xde,
            0xad,
            0xbe,
            0xef,
            0xaa,
        ];
        let packet = udp_packet(&rtp);
        assert_eq!(
            RtpHeader::parse(&packet),
            Some(RtpHeader {
                dst_port: 5000,
                payload_type: 96,
                marker: true,
                seq: 0x1234,
                timestamp: 1,
                ssrc: 0xdead_beef
            })
        );
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let later = at + Duration::from_micros(4_567);
        assert_eq!(
            lost_line("down", at, &packet),
            "linkem lost t=1700000000123.000 dir=down len=41 dport=5000 pt=96 m=1 seq=4660 ts=1 ssrc=3735928559"
        );
        // RTCP (a receiver report), STUN, a cut header, IPv6, TCP: no RTP fields, no panic.
        let rtcp = udp_packet(&[0x81, 201, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(RtpHeader::parse(&rtcp), None);
        let stun = udp_packet(&[0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0]);
        assert_eq!(RtpHeader::parse(&stun), None);
        assert_eq!(RtpHeader::parse(&packet[..30]), None);
        assert_eq!(RtpHeader::parse(&[0x60; 60]), None);
        let mut tcp = packet.clone();
        tcp[9] = 6;
        assert_eq!(RtpHeader::parse(&tcp), None);
        assert_eq!(RtpHeader::parse(&[]), None);
        assert_eq!(
            lost_line("up", at, &stun),
            "linkem lost t=1700000000123.000 dir=up len=40"
        );
        assert_eq!(
            packet_line("delivered", "down", later, &packet),
            "linkem delivered t=1700000000127.567 dir=down len=41 dport=5000 pt=96 m=1 seq=4660 ts=1 ssrc=3735928559"
        );
    }

    #[test]
    fn stats_lines_round_trip() {
        let s = RelayStats {
            down: LinkStats {
                packets_in: 10,
                bytes_in: 1000,
                queue_drops: 1,
                lost: 2,
                delivered: 7,
                bytes_delivered: 700,
                max_queue_bytes: 300,
            },
            up: LinkStats {
                packets_in: 3,
                ..Default::default()
            },
            write_errors: 4,
        };
        let text = format!("linkem ready x\n{}\n", s.to_lines());
        assert_eq!(RelayStats::parse(text.lines()), Some(s));
        assert_eq!(RelayStats::parse(["linkem stats down lost=1"]), None);
        assert_eq!(RelayStats::parse(["linkem stats sideways lost=1"]), None);
    }
}
