//! Usage accounting benchmark. Prints:
//! 1. the time to answer city-wide one-month queries over a generated city (7,000 classrooms in
//!    ~860 schools, a semester of lessons);
//! 2. the cost of accounting for the media path: none per packet; the once-a-second `Sample`
//!    send and its handling by the recorder.
//!
//! Run: `cargo run -p tongbu-loadtest --release --bin usage_bench [-- --days 90 --db /tmp/x.db]`.

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use tongbu::directory::{Classroom, County, Directory, School, SchoolKind};
use tongbu::store::query::{Filter, Level, Period};
use tongbu::store::{LessonRecord, SessionRecord, Store, Writes};
use tongbu::usage::event::{QualityLevel, UsageEvent};
use tongbu::usage::{Recorder, RecorderConfig};

const COUNTIES: usize = 9;
const SCHOOLS: usize = 860;
const CLASSROOMS: usize = 7_000;
const INVITED_PER_LESSON: usize = 8;

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn city() -> Directory {
    let counties: Vec<County> = (0..COUNTIES)
        .map(|i| County {
            id: format!("k{i}"),
            name: format!("第{i}县"),
        })
        .collect();
    // One central school in eight; classrooms spread evenly.
    let schools: Vec<School> = (0..SCHOOLS)
        .map(|i| School {
            id: format!("s{i:03}"),
            name: format!("学校{i}"),
            county: format!("k{}", i % COUNTIES),
            kind: if i % 8 == 0 {
                SchoolKind::Central
            } else {
                SchoolKind::Village
            },
        })
        .collect();
    let classrooms: Vec<Classroom> = (0..CLASSROOMS)
        .map(|i| Classroom {
            id: format!("c{i:04}"),
            name: format!("教室{i}"),
            school: format!("s{:03}", i % SCHOOLS),
        })
        .collect();
    Directory::from_parts("基准市".into(), counties, schools, classrooms).expect("valid city")
}

fn arg(name: &str) -> Option<String> {
    let mut args = std::env::args();
    while let Some(a) = args.next() {
        if a == name {
            return args.next();
        }
    }
    None
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        last = Some(f());
        times.push(t.elapsed());
    }
    (median(times), last.expect("runs > 0"))
}

fn main() -> anyhow::Result<()> {
    let days: i64 = arg("--days").map(|s| s.parse()).transpose()?.unwrap_or(90);
    let db = arg("--db").unwrap_or_else(|| {
        std::env::temp_dir()
            .join(format!("tongbu-usage-bench-{}.db", std::process::id()))
            .display()
            .to_string()
    });
    let _ = std::fs::remove_file(&db);
    let tz = chrono_tz::Asia::Shanghai;
    let dir = city();
    let mut store = Store::open(&db)?;
    store.save_directory(&dir)?;

    // A semester from 2025-09-01: every school day each classroom is invited to about two
    // 40-minute lessons and attends ~85 % of them.
    let hosts: Vec<&Classroom> = dir
        .classrooms
        .iter()
        .filter(|c| {
            dir.school(&c.school)
                .is_some_and(|s| s.kind == SchoolKind::Central)
        })
        .collect();
    let guests: Vec<&Classroom> = dir
        .classrooms
        .iter()
        .filter(|c| {
            dir.school(&c.school)
                .is_some_and(|s| s.kind == SchoolKind::Village)
        })
        .collect();
    let first = NaiveDate::from_ymd_opt(2025, 9, 1).expect("date");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut lessons, mut sessions) = (0usize, 0usize);
    let t = Instant::now();
    let mut school_days = 0;
    for d in 0..days {
        let date = first + chrono::Duration::days(d);
        if chrono::Datelike::weekday(&date).number_from_monday() > 5 {
            continue;
        }
        school_days += 1;
        let day_start = tongbu::store::query::local_midnight(date, tz) + 8 * 3_600_000;
        let mut w = Writes::default();
        for slot in 0..2 {
            for (chunk_i, chunk) in guests.chunks(INVITED_PER_LESSON).enumerate() {
                let host = hosts[(chunk_i + slot) % hosts.len()];
                let start = day_start + (slot as i64 * 2 + (chunk_i as i64 % 3)) * 3_600_000;
                let id = format!("L{d}-{slot}-{chunk_i}");
                let end = start + 40 * 60_000;
                w.lessons.push(LessonRecord {
                    id: id.clone(),
                    title: "课".into(),
                    host_classroom: host.id.clone(),
                    invited: chunk.iter().map(|c| c.id.clone()).collect(),
                    started_at: start,
                    ended_at: Some(end),
                    checkpoint_at: end,
                });
                lessons += 1;
                for c in std::iter::once(host).chain(chunk.iter().copied()) {
                    if rng.below(100) >= 85 {
                        continue;
                    }
                    let joined = start + rng.below(120_000) as i64;
                    let ms = end - joined;
                    let top = ms * (50 + rng.below(50) as i64) / 100;
                    w.sessions.push(SessionRecord {
                        id: format!("{id}/{}", c.id),
                        lesson_id: id.clone(),
                        classroom_id: c.id.clone(),
                        joined_at: joined,
                        left_at: Some(end),
                        connected_ms: ms,
                        bytes_in: ms * 40,
                        bytes_out: ms * 150,
                        top_ms: top,
                        middle_ms: (ms - top) / 2,
                        low_ms: (ms - top) / 2,
                        loss_samples: ms / 1000,
                        loss_mean: Some(0.02),
                        loss_p95: Some(0.08),
                        rtt_samples: ms / 1000,
                        rtt_mean_ms: Some(120.0),
                        rtt_p95_ms: Some(300.0),
                        reconnects: rng.below(3) as i64,
                        called_on: rng.below(2) as i64,
                        hands_raised: rng.below(4) as i64,
                        checkpoint_at: end,
                        ..Default::default()
                    });
                    sessions += 1;
                }
            }
        }
        store.apply(&w)?;
    }
    println!(
        "generated: {} counties, {} schools, {} classrooms; {school_days} school days, {lessons} lessons, {sessions} sessions in {:.1} s",
        dir.counties.len(),
        dir.schools.len(),
        dir.classrooms.len(),
        t.elapsed().as_secs_f64()
    );
    drop(store);

    // Queries on a fresh connection, as the admin API has.
    let store = Store::open(&db)?;
    let october = Period::from_dates(
        NaiveDate::from_ymd_opt(2025, 10, 1).expect("date"),
        NaiveDate::from_ymd_opt(2025, 10, 31).expect("date"),
        tz,
    );
    let all = Filter::default();
    let county = Filter {
        county: Some("k3".into()),
        school: None,
    };
    println!("one-month queries (October 2025), median of 5:");
    for (label, level, filter) in [
        (
            "city-wide, per classroom (7,000 rows)",
            Level::Classroom,
            &all,
        ),
        ("city-wide, per school", Level::School, &all),
        ("city-wide, city total", Level::City, &all),
        ("one county, per classroom", Level::Classroom, &county),
    ] {
        let (d, rows) = time(5, || {
            store.usage(&dir, october, filter, level).expect("query")
        });
        let minutes: f64 = rows.iter().map(|r| r.minutes).sum();
        println!(
            "  {label:<40} {:>8.1} ms  ({} rows, {:.0} minutes)",
            d.as_secs_f64() * 1e3,
            rows.len(),
            minutes
        );
    }
    let (d, days) = time(5, || store.daily_minutes(october, &all, tz).expect("query"));
    println!(
        "  {:<40} {:>8.1} ms  ({} days)",
        "city-wide minutes per day",
        d.as_secs_f64() * 1e3,
        days.len()
    );
    let (d, (total, _)) = time(5, || {
        store.lessons(october, &all, None, 0, 50).expect("query")
    });
    println!(
        "  {:<40} {:>8.1} ms  ({total} lessons)",
        "city-wide lessons, first page",
        d.as_secs_f64() * 1e3
    );
    let (d, rows) = time(5, || {
        let mut rows = store
            .usage(&dir, october, &all, Level::Classroom)
            .expect("query");
        tongbu::store::query::sort_least_used(&mut rows);
        tongbu::store::query::usage_csv(&rows)
    });
    println!(
        "  {:<40} {:>8.1} ms  ({} kB)",
        "city-wide CSV export (least used first)",
        d.as_secs_f64() * 1e3,
        rows.len() / 1024
    );
    drop(store);
    let _ = std::fs::remove_file(&db);

    forwarding_cost();
    Ok(())
}

/// What accounting costs the media path. Nothing per forwarded packet: the engine reads bytes
/// from str0m's per-peer stats once a second. What remains is one `Sample` per connection per
/// second, sent into the channel and handled by the recorder, measured here.
fn forwarding_cost() {
    println!("forwarding path: no per-packet accounting (bytes come from str0m's peer stats each second)");
    // Once a second per connection: one Sample into the channel and through the recorder.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut recorder = Recorder::new(RecorderConfig::default());
    for c in 0..1000 {
        recorder.handle(&UsageEvent::Joined {
            lesson_id: format!("L{}", c / 8),
            classroom_id: format!("c{c}"),
            at: 0,
        });
    }
    const SAMPLES: usize = 200_000;
    let t = Instant::now();
    for i in 0..SAMPLES {
        let c = i % 1000;
        let ev = UsageEvent::Sample {
            lesson_id: format!("L{}", c / 8),
            classroom_id: format!("c{c}"),
            at: (i / 1000) as i64 * 1000 + 1000,
            bytes_in: 50_000,
            bytes_out: 150_000,
            quality: QualityLevel::Top,
            loss: Some(0.01),
            rtt_ms: Some(100.0),
            freezes: 0,
        };
        let _ = tx.send(ev);
    }
    let send_ns = t.elapsed().as_nanos() as f64 / SAMPLES as f64;
    let t = Instant::now();
    while let Ok(ev) = rx.try_recv() {
        recorder.handle(&ev);
    }
    let handle_ns = t.elapsed().as_nanos() as f64 / SAMPLES as f64;
    println!("per connection per second (engine side): build + send one Sample: {send_ns:.0} ns");
    println!(
        "  = {:.2} ns per packet at 500 packets/s per connection",
        send_ns / 500.0
    );
    println!("usage task: recorder handles a Sample in {handle_ns:.0} ns ({:.0} k connections/s of samples per core)", 1e6 / handle_ns);
}
