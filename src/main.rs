use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use tongbu::auth::Claims;
use tongbu::directory::Directory;
use tongbu::server::{self, ServerConfig};

/// tongbu: WebRTC SFU for synchronized interactive classrooms.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (defaults: loopback only, a demo lesson, data in ./tongbu-data).
    Serve(ServeArgs),
    /// Print the signaling protocol's JSON schema (the content of proto/schema.json).
    Schema,
    /// Usage statistics from the database.
    Usage {
        #[command(subcommand)]
        command: UsageCmd,
    },
    /// Mint an administrator token (city, county or school scope).
    AdminToken(tongbu::usage::cli::AdminTokenArgs),
    /// Manage the school directory stored in the database.
    Directory {
        #[command(subcommand)]
        command: DirectoryCmd,
    },
    /// Mint a teacher token for a host classroom.
    Token {
        /// Host classroom id from the directory.
        #[arg(long)]
        classroom: String,
        #[arg(long, default_value_t = 30)]
        days: i64,
        #[arg(long, default_value = "tongbu-data")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum UsageCmd {
    /// Write usage per classroom, school, county or city over a period as CSV to stdout.
    Export(tongbu::usage::cli::UsageExportArgs),
}

#[derive(Subcommand)]
enum DirectoryCmd {
    /// Replace the stored directory with a TOML or CSV file (a running server sees it after restart).
    Import(tongbu::usage::cli::DirectoryImportArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// HTTP + WebSocket address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// The one UDP address every peer's media uses.
    #[arg(long, default_value = "127.0.0.1:10000")]
    udp: SocketAddr,
    /// ICE-TCP fallback for classrooms whose firewall blocks UDP (443 in production); "off" disables it.
    #[arg(long, default_value = "127.0.0.1:10000")]
    tcp: String,
    /// Address to advertise in ICE candidates (repeat for IPv4 and IPv6); default: the UDP bind address.
    #[arg(long = "public-ip")]
    public_ips: Vec<IpAddr>,
    /// Where the token secret and usage database live.
    #[arg(long, default_value = "tongbu-data")]
    data_dir: PathBuf,
    /// Directory TOML to seed a new database with (counties, schools, classrooms); default: the
    /// embedded demo directory. An existing database keeps its own; see `tongbu directory import`.
    #[arg(long)]
    directory: Option<PathBuf>,
    /// Do not start the demo lesson.
    #[arg(long)]
    no_demo: bool,
    /// Comparison baseline only: no bandwidth estimate, every subscriber gets the top layer.
    #[arg(long)]
    no_adaptation: bool,
    /// Where a new peer's bandwidth estimate starts, kbit/s.
    #[arg(long, default_value_t = server::DEFAULT_INITIAL_ESTIMATE_BPS / 1000)]
    initial_estimate_kbps: u64,
    /// Seconds a higher allocation must hold before a subscriber steps up a layer.
    #[arg(long, default_value_t = 3.0)]
    up_hold_secs: f64,
    /// Cap on the up-hold after repeated down-steps (it doubles per recent down-step), seconds;
    /// default: the bwe::Tuning default.
    #[arg(long)]
    up_hold_max_secs: Option<f64>,
    /// How long a down-step counts as recent for that back-off, seconds; default: bwe::Tuning's.
    #[arg(long)]
    down_memory_secs: Option<f64>,
    /// Fraction of the estimate handed out (the rest absorbs retransmissions and keyframes).
    #[arg(long, default_value_t = 0.95)]
    headroom: f64,
    /// Oldest queued video (ms) before a subscriber gets temporal layer 0 only; 0: never.
    #[arg(long, default_value_t = 250)]
    backlog_brake_ms: u64,
    /// Share of a video stream that may be retransmissions before queued resends are dropped.
    #[arg(long, default_value_t = 0.35)]
    retransmit_share_cap: f32,
    /// Never send ULPFEC on video (repair by NACK only); for comparison runs.
    #[arg(long)]
    no_video_fec: bool,
    /// Let loss cut the estimate even at a steady round trip (radio loss); for comparison runs.
    #[arg(long)]
    no_loss_tolerance: bool,
    /// Probe toward the next layer of a subscriber short of it while its link is calm
    /// (`bwe::climb`); off by default, for comparison runs.
    #[arg(long)]
    climb_probes: bool,
    /// A camera layer running at under this share of its lowest layer's frame rate is not
    /// offered (its encoder starves it); 0: always offered.
    #[arg(long, default_value_t = 0.6)]
    choppy_ratio: f64,
}

fn load_directory(path: Option<&PathBuf>) -> anyhow::Result<Directory> {
    match path {
        None => Ok(Directory::demo()),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Directory::from_toml(&text).with_context(|| format!("loading {}", p.display()))
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "tongbu=info,str0m=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Cmd::Schema => print!("{}", tongbu::signal::message::schema_json()),
        Cmd::Usage {
            command: UsageCmd::Export(args),
        } => args.run(&mut std::io::stdout().lock())?,
        Cmd::AdminToken(args) => println!("{}", args.run(tongbu::auth::now_unix())?),
        Cmd::Directory {
            command: DirectoryCmd::Import(args),
        } => {
            let dir = args.run()?;
            println!(
                "imported {} counties, {} schools, {} classrooms",
                dir.counties.len(),
                dir.schools.len(),
                dir.classrooms.len()
            );
        }
        Cmd::Token {
            classroom,
            days,
            data_dir,
        } => {
            let secret = std::fs::read(data_dir.join("secret.key"))
                .context("no token secret yet: run `tongbu serve` once with this --data-dir")?;
            let key = tongbu::auth::TokenKey::new(secret);
            println!(
                "{}",
                key.sign(&Claims::Teacher {
                    classroom,
                    exp: tongbu::auth::now_unix() + days * 86_400,
                })
            );
        }
        Cmd::Serve(args) => {
            let tcp = match args.tcp.as_str() {
                "off" => None,
                addr => Some(
                    addr.parse()
                        .context("--tcp takes an address:port or \"off\"")?,
                ),
            };
            let cfg = ServerConfig {
                http: args.http,
                udp: args.udp,
                tcp,
                public_ips: args.public_ips,
                data_dir: Some(args.data_dir),
                directory: load_directory(args.directory.as_ref())?,
                demo: !args.no_demo,
                tuning: tongbu::bwe::Tuning {
                    headroom: args.headroom.clamp(0.1, 1.0),
                    up_hold: std::time::Duration::from_secs_f64(args.up_hold_secs.clamp(0.0, 60.0)),
                    up_hold_max: args
                        .up_hold_max_secs
                        .map_or(tongbu::bwe::Tuning::default().up_hold_max, |s| {
                            std::time::Duration::from_secs_f64(s.clamp(0.0, 120.0))
                        }),
                    down_memory: args
                        .down_memory_secs
                        .map_or(tongbu::bwe::Tuning::default().down_memory, |s| {
                            std::time::Duration::from_secs_f64(s.clamp(0.0, 600.0))
                        }),
                    backlog_brake: std::time::Duration::from_millis(
                        args.backlog_brake_ms.min(10_000),
                    ),
                    retransmit_share_cap: args.retransmit_share_cap.clamp(0.05, 1.0),
                    video_fec: !args.no_video_fec,
                    loss_tolerance: !args.no_loss_tolerance,
                    climb_probes: args.climb_probes,
                    choppy_ratio: args.choppy_ratio.clamp(0.0, 1.0),
                    ..Default::default()
                },
                time_zone: chrono_tz::Asia::Shanghai,
                adaptation: !args.no_adaptation,
                initial_estimate_bps: args.initial_estimate_kbps.max(50) * 1000,
            };
            let running = server::start(cfg).await?;
            let base = running.base_url();
            match running.tcp_addr {
                Some(tcp) => println!(
                    "tongbu serving on {base} (media UDP {}, TCP fallback {tcp})",
                    running.udp_addr
                ),
                None => println!("tongbu serving on {base} (media UDP {})", running.udp_addr),
            }
            if let Some(demo) = &running.demo {
                println!("Teacher (主讲教室):   {}", demo.teacher_url);
                for c in &demo.classrooms {
                    println!("Classroom {} — code {}: {}", c.name, c.code, c.link);
                }
                println!("Classrooms can also open {base}/classroom and type their code.");
                println!("Usage statistics (city admin): {}", demo.admin_url);
                let ready = serde_json::json!({
                    "http": base,
                    "udp": running.udp_addr.to_string(),
                    "tcp": running.tcp_addr.map(|a| a.to_string()),
                    "teacher_url": demo.teacher_url,
                    "admin_url": demo.admin_url,
                    "lesson_id": demo.lesson_id,
                    "classrooms": demo.classrooms,
                });
                println!("TONGBU_READY {ready}");
            } else {
                println!(
                    "TONGBU_READY {}",
                    serde_json::json!({"http": base, "udp": running.udp_addr.to_string()})
                );
            }
            tokio::signal::ctrl_c().await.ok();
            println!("shutting down");
            running.usage.shutdown().await?;
        }
    }
    Ok(())
}
