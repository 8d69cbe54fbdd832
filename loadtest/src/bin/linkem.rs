//! `linkem`: emulates a weak link between two network namespaces.
//!
//! Creates a TUN device in each namespace, gives them point-to-point
//! addresses and relays IP packets between them through a link model per
//! direction. Prints `linkem ready` on stdout once packets flow (the rate
//! schedule's t=0) and a summary on stderr at exit.

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tongbu_loadtest::linkem::profile::NAMES;
use tongbu_loadtest::linkem::relay::{Relay, RelayConfig};
use tongbu_loadtest::linkem::{parse_spec, profile, Direction, LinkStats};
use tongbu_loadtest::netns::Netns;

#[derive(Parser, Debug)]
#[command(
    name = "linkem",
    about = "Userspace weak-link emulator between two network namespaces",
    after_help = "LINK SPEC: comma-separated; a bare word is a profile, then keys override it:\n  \
rate=1M, at=20s:300k (rate from t on, repeatable), delay=30ms, jitter=10ms, loss=1%,\n  \
ge=p_gb/p_bg/loss_bad/loss_good, queue=100ms|30000B, reorder, seed=N.\n\
Example: linkem --ns-a srv --ns-b village --create --profile collapse --up loss=1%"
)]
struct Args {
    /// Central-side namespace (downlink goes A -> B).
    #[arg(long, required_unless_present = "list_profiles")]
    ns_a: Option<String>,
    /// Village-side namespace.
    #[arg(long, required_unless_present = "list_profiles")]
    ns_b: Option<String>,
    /// Create the namespaces (and delete them at exit).
    #[arg(long)]
    create: bool,
    /// Named profile for both directions (its downlink and its uplink side).
    #[arg(long)]
    profile: Option<String>,
    /// Downlink (A -> B) spec, applied after --profile.
    #[arg(long, default_value = "")]
    down: String,
    /// Uplink (B -> A) spec, applied after --profile.
    #[arg(long, default_value = "")]
    up: String,
    #[arg(long, default_value = "10.77.0.1")]
    addr_a: Ipv4Addr,
    #[arg(long, default_value = "10.77.0.2")]
    addr_b: Ipv4Addr,
    /// TUN device name used in both namespaces.
    #[arg(long, default_value = "linkem0")]
    dev: String,
    #[arg(long, default_value_t = 1500)]
    mtu: u32,
    /// Keep IPv6 on the TUN devices.
    #[arg(long)]
    ipv6: bool,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Stop when the parent process exits (for test harnesses).
    #[arg(long)]
    exit_with_parent: bool,
    /// SCHED_FIFO priority for steadier timing on a loaded host.
    #[arg(long)]
    realtime: bool,
    /// No human-readable summary on stderr at exit (stats still go to stdout).
    #[arg(long)]
    quiet: bool,
    /// Print each packet lost at random on stderr (wall-clock ms, direction, size, RTP header);
    /// also on when the environment has LINKEM_LOG_LOST (for runs started by a harness).
    #[arg(long)]
    log_lost: bool,
    /// Print each RTP packet delivered on the downlink on stderr (wall-clock ms with µs, RTP
    /// header with timestamp); also on when the environment has LINKEM_LOG_DELIVERED.
    #[arg(long)]
    log_delivered: bool,
    /// Print the profiles and exit.
    #[arg(long)]
    list_profiles: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn join_spec(profile: Option<&str>, spec: &str) -> String {
    match profile {
        Some(p) if !spec.is_empty() => format!("{p},{spec}"),
        Some(p) => p.to_string(),
        None => spec.to_string(),
    }
}

fn summary(dir: &str, s: &LinkStats) -> String {
    format!(
        "linkem {dir}: in {} pkts / {} B, queue drops {}, lost {}, delivered {} pkts / {} B, max queue {} B",
        s.packets_in, s.bytes_in, s.queue_drops, s.lost, s.delivered, s.bytes_delivered, s.max_queue_bytes
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.list_profiles {
        for name in NAMES {
            let p = profile(name)?;
            println!("{name}\n  down: {}\n  up:   {}", p.down, p.up);
        }
        return Ok(());
    }
    let (Some(ns_a), Some(ns_b)) = (args.ns_a.as_deref(), args.ns_b.as_deref()) else {
        anyhow::bail!("--ns-a and --ns-b are required");
    };
    let down = parse_spec(
        &join_spec(args.profile.as_deref(), &args.down),
        Direction::Down,
    )
    .context("downlink spec")?;
    let up = parse_spec(&join_spec(args.profile.as_deref(), &args.up), Direction::Up)
        .context("uplink spec")?;

    install_signal_handlers();
    // Wake-ups as close to the release time as the kernel allows (default slack is 50 us).
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    if args.realtime {
        let param = libc::sched_param { sched_priority: 10 };
        // SAFETY: valid sched_param for the calling process.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
            eprintln!(
                "linkem: realtime priority unavailable: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    // Held until exit so namespaces we created are deleted after the relay stops.
    let _owned: Vec<Netns> = if args.create {
        vec![Netns::create(ns_a)?, Netns::create(ns_b)?]
    } else {
        Vec::new()
    };

    let mut cfg = RelayConfig::new(ns_a, ns_b, down, up);
    cfg.dev = args.dev.clone();
    cfg.addr_a = args.addr_a;
    cfg.addr_b = args.addr_b;
    cfg.mtu = args.mtu;
    cfg.ipv6 = args.ipv6;
    cfg.log_lost = args.log_lost || std::env::var_os("LINKEM_LOG_LOST").is_some();
    cfg.log_delivered = args.log_delivered || std::env::var_os("LINKEM_LOG_DELIVERED").is_some();
    let mut relay = Relay::setup(&cfg).context("setting up TUN devices")?;

    // A closed stdout must not stop the relay, hence no println!.
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "linkem ready {ns_a}/{} <-> {ns_b}/{}\n  down: {}\n  up:   {}",
        cfg.addr_a, cfg.addr_b, cfg.down, cfg.up
    );
    let _ = out.flush();

    let started = Instant::now();
    let deadline = args
        .duration
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .map(|d| started + d);
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let keep_going = || {
        let parent_alive = !args.exit_with_parent || unsafe { libc::getppid() } == parent;
        parent_alive && deadline.is_none_or(|d| Instant::now() < d)
    };
    let result = relay.run(&STOP, keep_going);

    let s = relay.stats();
    // Machine-readable for LinkPair::stop, human-readable for people.
    let _ = writeln!(out, "{}", s.to_lines());
    let _ = out.flush();
    let mut err = std::io::stderr();
    if !args.quiet {
        let _ = writeln!(err, "{}", summary("down", &s.down));
        let _ = writeln!(err, "{}", summary("up", &s.up));
    }
    if s.write_errors > 0 {
        let _ = writeln!(
            err,
            "linkem: {} packets could not be written",
            s.write_errors
        );
    }
    result.context("relay")?;
    Ok(())
}
