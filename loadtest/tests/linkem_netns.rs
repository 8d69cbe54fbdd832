//! The emulator measured with real UDP traffic between two namespaces.
//!
//! Needs root (namespaces, TUN) and `ip` from iproute2. Set LINKEM_SKIP_NETNS=1
//! to skip explicitly on machines without them; otherwise a missing
//! privilege fails the tests rather than passing them silently.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use std::thread::JoinHandle;

use tongbu_loadtest::netns::{spawn_in, LinkPair, NetnsError};

const PORT: u16 = 47_000;

fn setup(down: &str, up: &str) -> Option<LinkPair> {
    if std::env::var_os("LINKEM_SKIP_NETNS").is_some() {
        eprintln!("LINKEM_SKIP_NETNS set: skipping");
        return None;
    }
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "needs root (or set LINKEM_SKIP_NETNS=1)"
    );
    let pair = LinkPair::builder()
        .relay_bin(env!("CARGO_BIN_EXE_linkem"))
        .down(down)
        .up(up)
        .start()
        .expect("start link pair");
    Some(pair)
}

fn within(measured: f64, setting: f64, rel: f64) -> bool {
    (measured - setting).abs() <= rel * setting
}

/// A descheduled receiver on a loaded 2-core host must not lose packets in
/// its socket buffer: that would be counted as link loss.
fn big_receive_buffer(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 8 << 20;
    // SAFETY: valid socket fd and a c_int option value of the right length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

/// (sequence number, arrival time, IP packet size) of one received datagram.
type Arrival = (u64, Instant, usize);

/// Receives datagrams in namespace B until `stop`, recording (seq, arrival, IP size).
fn receiver(
    pair: &LinkPair,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<()>,
) -> JoinHandle<Result<Vec<Arrival>, NetnsError>> {
    let bind = SocketAddr::from((pair.addr_b(), PORT));
    spawn_in(pair.b().name(), move || {
        let sock = UdpSocket::bind(bind).expect("bind receiver");
        big_receive_buffer(&sock);
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let _ = ready.send(());
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = sock.recv(&mut buf) {
                let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
                // IP + UDP headers: the relay's rate counts whole IP packets.
                got.push((seq, Instant::now(), n + 28));
            }
        }
        got
    })
}

/// Sends `count` datagrams of `size` bytes from namespace A at `rate_bps`
/// (UDP payload bits), paced in 5 ms slices; returns how many were sent.
fn send_paced(pair: &LinkPair, count: u64, size: usize, rate_bps: f64) -> u64 {
    let dst = SocketAddr::from((pair.addr_b(), PORT));
    let src = SocketAddr::from((pair.addr_a(), 0));
    spawn_in(pair.a().name(), move || {
        let sock = UdpSocket::bind(src).expect("bind sender");
        let start = Instant::now();
        let mut buf = vec![0u8; size];
        let mut sent = 0;
        for seq in 0..count {
            let due = start + Duration::from_secs_f64(seq as f64 * size as f64 * 8.0 / rate_bps);
            let now = Instant::now();
            if due > now + Duration::from_millis(5) {
                std::thread::sleep(due - now);
            }
            buf[..8].copy_from_slice(&seq.to_be_bytes());
            if sock.send_to(&buf, dst).is_ok() {
                sent += 1;
            }
        }
        sent
    })
    .join()
    .expect("sender thread")
    .expect("enter namespace A")
}

/// Runs a receiver in B while `send` runs, then collects what arrived.
fn transfer(pair: &LinkPair, send: impl FnOnce() -> u64) -> (u64, Vec<Arrival>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let rcv = receiver(pair, stop.clone(), tx);
    rx.recv_timeout(Duration::from_secs(5))
        .expect("receiver ready");
    let sent = send();
    // Let queued and delayed packets drain.
    std::thread::sleep(Duration::from_millis(600));
    stop.store(true, Ordering::Relaxed);
    let got = rcv
        .join()
        .expect("receiver thread")
        .expect("enter namespace B");
    (sent, got)
}

/// Probes every 10 ms from A to an echo in B; returns (seq, RTT) in arrival order.
fn rtt_probes(pair: &LinkPair, count: u64) -> Vec<(u64, Duration)> {
    let stop = Arc::new(AtomicBool::new(false));
    let echo_addr = SocketAddr::from((pair.addr_b(), PORT));
    let (tx, rx) = mpsc::channel();
    let stop_echo = stop.clone();
    let echo = spawn_in(pair.b().name(), move || {
        let sock = UdpSocket::bind(echo_addr).expect("bind echo");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let _ = tx.send(());
        let mut buf = [0u8; 64];
        while !stop_echo.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("echo ready");
    let src = SocketAddr::from((pair.addr_a(), 0));
    let rtts = spawn_in(pair.a().name(), move || {
        let sock = UdpSocket::bind(src).expect("bind prober");
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        let mut next_send = 0u64;
        let deadline = t0 + Duration::from_millis(10 * count + 2000);
        while Instant::now() < deadline && (out.len() as u64) < count {
            if next_send < count && t0.elapsed() >= Duration::from_millis(10 * next_send) {
                let mut p = [0u8; 16];
                p[..8].copy_from_slice(&next_send.to_be_bytes());
                let sent_ns = t0.elapsed().as_nanos() as u64;
                p[8..].copy_from_slice(&sent_ns.to_be_bytes());
                sock.send_to(&p, echo_addr).expect("send probe");
                next_send += 1;
            }
            if let Ok(16) = sock.recv(&mut buf) {
                let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
                let sent = Duration::from_nanos(u64::from_be_bytes(buf[8..16].try_into().unwrap()));
                out.push((seq, t0.elapsed() - sent));
            }
        }
        out
    })
    .join()
    .expect("prober thread")
    .expect("enter namespace A");
    stop.store(true, Ordering::Relaxed);
    echo.join()
        .expect("echo thread")
        .expect("enter namespace B");
    rtts
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[test]
fn rtt_is_twice_the_one_way_delay() {
    let Some(pair) = setup("delay=50ms", "delay=50ms") else {
        return;
    };
    let rtts = rtt_probes(&pair, 200);
    assert_eq!(
        rtts.len(),
        200,
        "no loss configured, every probe must return"
    );
    let mut v: Vec<f64> = rtts.iter().map(|r| ms(r.1)).collect();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    v.sort_by(f64::total_cmp);
    let (min, median) = (v[0], v[v.len() / 2]);
    eprintln!("RTT with 2 x 50 ms: mean {mean:.2} ms, median {median:.2} ms, min {min:.2} ms");
    assert!(min >= 100.0, "RTT below the configured delay: {min} ms");
    // The median, not the mean: a scheduling stall of a test thread on a busy host adds tens of
    // milliseconds to a few probes, which says nothing about the emulator.
    assert!(
        within(median, 100.0, 0.10),
        "median RTT {median} ms vs 100 ms"
    );
}

#[test]
fn jitter_varies_delay_without_reordering() {
    let Some(pair) = setup("delay=30ms,jitter=10ms", "delay=30ms,jitter=10ms") else {
        return;
    };
    let rtts = rtt_probes(&pair, 300);
    assert_eq!(rtts.len(), 300);
    let mut v: Vec<f64> = rtts.iter().map(|r| ms(r.1)).collect();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    v.sort_by(f64::total_cmp);
    // Percentiles, not extremes: one scheduling stall of a test thread on a
    // busy host must not fail the test, while the emulator's bounds still show.
    let (min, p5, median, p95) = (
        v[0],
        v[v.len() * 5 / 100],
        v[v.len() / 2],
        v[v.len() * 95 / 100],
    );
    eprintln!(
        "RTT with 2 x (30 +- 10) ms: mean {mean:.2}, median {median:.2}, min {min:.2}, p5 {p5:.2}, p95 {p95:.2} ms"
    );
    assert!(
        within(median, 60.0, 0.10),
        "median RTT {median} ms vs 60 ms"
    );
    assert!(min >= 40.0, "RTT below 2 x (30 - 10) ms: {min}");
    assert!(p95 <= 82.0, "RTT p95 above 2 x (30 + 10) ms + 2 ms: {p95}");
    assert!(p95 - p5 >= 10.0, "no visible jitter: p5 {p5}, p95 {p95}");
    assert!(rtts.windows(2).all(|w| w[0].0 < w[1].0), "probes reordered");
}

#[test]
fn random_loss_matches_setting() {
    let Some(pair) = setup("loss=10%", "") else {
        return;
    };
    let count = 10_000;
    let (sent, got) = transfer(&pair, || send_paced(&pair, count, 100, 2_000_000.0));
    assert_eq!(sent, count);
    let unique: HashSet<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(unique.len(), got.len(), "duplicates");
    let loss = 1.0 - unique.len() as f64 / sent as f64;
    eprintln!(
        "loss: {} of {sent} lost = {:.2} % (setting 10 %)",
        sent as usize - unique.len(),
        loss * 100.0
    );
    let stats = pair.stop().expect("relay statistics");
    // Attribute any discrepancy: host drops before or after the emulator
    // would make this a measurement of the host, not of the link.
    assert_eq!(stats.down.packets_in, sent, "packets lost before the relay");
    assert_eq!(
        stats.down.delivered,
        got.len() as u64,
        "packets lost after the relay"
    );
    assert!(within(loss, 0.10, 0.10), "loss {loss} vs 0.10");
}

#[test]
fn rate_cap_limits_throughput() {
    let Some(pair) = setup("rate=500k", "") else {
        return;
    };
    // Offer twice the cap: 1200-byte payloads at 1 Mbit/s for 4 s.
    let size = 1200;
    let (sent, got) = transfer(&pair, || send_paced(&pair, 417, size, 1_000_000.0));
    assert!(got.len() > 100, "too few packets arrived: {}", got.len());
    // Measure after the queue has filled (skip the first 0.5 s of arrivals).
    let first = got[0].1 + Duration::from_millis(500);
    let window: Vec<_> = got.iter().filter(|g| g.1 >= first).collect();
    let span = (window.last().unwrap().1 - window[0].1).as_secs_f64();
    let bits = window.iter().skip(1).map(|g| g.2 as f64 * 8.0).sum::<f64>();
    let rate = bits / span;
    eprintln!(
        "rate: {:.1} kbit/s IP level (cap 500), {} of {sent} packets delivered",
        rate / 1e3,
        got.len()
    );
    assert!(within(rate, 500_000.0, 0.10), "rate {rate} vs 500 kbit/s");
    assert!(
        (got.len() as u64) < sent * 3 / 4,
        "cap did not drop the excess"
    );
}

#[test]
fn rate_schedule_counts_from_relay_start() {
    let Some(pair) = setup("rate=1M,at=2s:250k", "") else {
        return;
    };
    let t_ready = Instant::now();
    let size = 1000;
    // 2 Mbit/s offered for 4 s.
    let (_, got) = transfer(&pair, || send_paced(&pair, 1000, size, 2_000_000.0));
    let rate_in = |from: f64, to: f64| {
        let n = got
            .iter()
            .filter(|g| (from..to).contains(&(g.1 - t_ready).as_secs_f64()))
            .count();
        n as f64 * (size + 28) as f64 * 8.0 / (to - from)
    };
    let (before, after) = (rate_in(0.4, 1.9), rate_in(2.4, 3.9));
    eprintln!(
        "schedule: {:.0} kbit/s before t=2 s (1000), {:.0} after (250)",
        before / 1e3,
        after / 1e3
    );
    assert!(within(before, 1_000_000.0, 0.10), "before {before}");
    assert!(within(after, 250_000.0, 0.10), "after {after}");
}

#[test]
fn teardown_removes_namespaces_and_relay_even_on_panic() {
    if std::env::var_os("LINKEM_SKIP_NETNS").is_some() {
        return;
    }
    let names = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let pair = setup("delay=1ms", "").unwrap();
        names.lock().unwrap().push(pair.a().name().to_string());
        names.lock().unwrap().push(pair.b().name().to_string());
        assert!(Path::new("/run/netns").join(pair.a().name()).exists());
        panic!("simulated test failure");
    });
    assert!(result.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 2);
    for n in names {
        assert!(
            !Path::new("/run/netns").join(&n).exists(),
            "{n} left behind"
        );
    }
}
