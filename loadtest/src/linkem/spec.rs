//! Text form of a link direction, for the CLI and the namespace helpers.
//!
//! Comma-separated items; an item without `=` names a profile to start from.
//! Examples: `village4g`, `village4g,loss=5%`,
//! `rate=2M,at=20s:300k,at=50s:2M,delay=30ms`, `delay=50ms,jitter=5ms,ge=0.05/0.3/0.9/0.01`.
//!
//! Keys: `rate` (bit/s with k/M suffix, or `off`), `at=<time>:<rate>` (rate
//! from that time on, repeatable), `delay`, `jitter` (`us`/`ms`/`s`, bare
//! number = ms), `loss` (`0.01` or `1%`), `ge=p_gb/p_bg/loss_bad/loss_good` or
//! `ge=off`, `queue` (`100ms` of the current rate, or bytes as `30000B`/`30kB`),
//! `reorder` / `reorder=false`, `seed`.

use std::time::Duration;

use super::config::{ConfigError, GilbertElliott, LinkConfig, QueueLimit};
use super::profile::{profile, Direction};
use super::schedule::RateSchedule;

/// Parses a link spec for one direction (a profile name picks that direction's side).
pub fn parse_spec(spec: &str, dir: Direction) -> Result<LinkConfig, ConfigError> {
    let mut cfg = LinkConfig::default();
    let mut steps: Vec<(Duration, Option<u64>)> = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let err = |reason: &str| ConfigError::Spec {
            item: item.to_string(),
            reason: reason.to_string(),
        };
        let Some((key, value)) = item.split_once('=') else {
            if item == "reorder" {
                cfg.reorder = true;
            } else {
                cfg = profile(item)?.get(dir).clone();
            }
            continue;
        };
        match key {
            "rate" => {
                cfg.rate = RateSchedule::constant(
                    parse_rate(value).ok_or_else(|| err("want e.g. 500k, 2M, off"))?,
                )
            }
            "at" => {
                let (t, r) = value
                    .split_once(':')
                    .ok_or_else(|| err("want <time>:<rate>, e.g. 20s:300k"))?;
                let t = parse_duration(t).ok_or_else(|| err("bad time"))?;
                let r = parse_rate(r).ok_or_else(|| err("bad rate"))?;
                steps.push((t, r));
            }
            "delay" => cfg.delay = parse_duration(value).ok_or_else(|| err("want e.g. 30ms"))?,
            "jitter" => cfg.jitter = parse_duration(value).ok_or_else(|| err("want e.g. 10ms"))?,
            "loss" => cfg.loss = parse_prob(value).ok_or_else(|| err("want e.g. 0.01 or 1%"))?,
            "ge" if value == "off" => cfg.gilbert = None,
            "ge" => {
                let v: Option<Vec<f64>> = value.split('/').map(parse_prob).collect();
                match v.as_deref() {
                    Some(&[p_gb, p_bg, loss_bad, loss_good]) => {
                        cfg.gilbert = Some(GilbertElliott {
                            p_gb,
                            p_bg,
                            loss_bad,
                            loss_good,
                        })
                    }
                    _ => return Err(err("want p_gb/p_bg/loss_bad/loss_good")),
                }
            }
            "queue" => {
                cfg.queue = parse_queue(value).ok_or_else(|| err("want e.g. 100ms or 30000B"))?
            }
            "reorder" => cfg.reorder = value.parse().map_err(|_| err("want true or false"))?,
            "seed" => cfg.seed = value.parse().map_err(|_| err("want an integer"))?,
            _ => return Err(err("unknown key")),
        }
    }
    // Rate steps apply on top of whatever rate the spec or profile set at t=0.
    for (t, r) in steps {
        cfg.rate.set_from(t, r);
    }
    cfg.validate()?;
    Ok(cfg)
}

fn parse_rate(s: &str) -> Option<Option<u64>> {
    if s == "off" || s == "none" {
        return Some(None);
    }
    let (num, mult) = split_suffix(
        s,
        &[
            ("bit", 1.0),
            ("k", 1e3),
            ("K", 1e3),
            ("M", 1e6),
            ("m", 1e6),
            ("G", 1e9),
        ],
    );
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| Some((v * mult).round() as u64))
}

fn parse_duration(s: &str) -> Option<Duration> {
    let (num, mult) = split_suffix(s, &[("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0)]);
    // A bare number is milliseconds, the natural unit for link delays.
    let mult = if num.len() == s.len() { 1e-3 } else { mult };
    // Integers go through exact arithmetic so printed specs read back unchanged.
    if let Ok(n) = num.parse::<u64>() {
        let nanos = (n as u128).checked_mul((mult * 1e9).round() as u128)?;
        return u64::try_from(nanos).ok().map(Duration::from_nanos);
    }
    let v: f64 = num.parse().ok()?;
    Duration::try_from_secs_f64(v * mult).ok()
}

fn parse_prob(s: &str) -> Option<f64> {
    let v = match s.strip_suffix('%') {
        Some(p) => p.parse::<f64>().ok()? / 100.0,
        None => s.parse().ok()?,
    };
    (0.0..=1.0).contains(&v).then_some(v)
}

fn parse_queue(s: &str) -> Option<QueueLimit> {
    if let Some(n) = s.strip_suffix("kB") {
        return n.parse::<usize>().ok().map(|n| QueueLimit::Bytes(n * 1000));
    }
    if let Some(n) = s.strip_suffix('B') {
        return n.parse().ok().map(QueueLimit::Bytes);
    }
    parse_duration(s).map(QueueLimit::Delay)
}

/// Splits a known unit suffix off; longest suffixes must come first where they overlap.
fn split_suffix<'a>(s: &'a str, units: &[(&str, f64)]) -> (&'a str, f64) {
    for (u, m) in units {
        if let Some(n) = s.strip_suffix(u) {
            return (n, *m);
        }
    }
    (s, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn parses_every_key() {
        let c = parse_spec(
            "rate=2M,at=20s:300k,at=50s:2M,delay=30ms,jitter=5,loss=1%,ge=0.05/0.3/0.9/0.01,queue=200ms,reorder,seed=9",
            Direction::Down,
        )
        .unwrap();
        assert_eq!(c.rate.rate_at(ms(0)), Some(2_000_000));
        assert_eq!(c.rate.rate_at(ms(20_000)), Some(300_000));
        assert_eq!(c.rate.rate_at(ms(50_000)), Some(2_000_000));
        assert_eq!((c.delay, c.jitter), (ms(30), ms(5)));
        assert!((c.loss - 0.01).abs() < 1e-12);
        assert_eq!(c.gilbert.unwrap().p_bg, 0.3);
        assert_eq!(c.queue, QueueLimit::Delay(ms(200)));
        assert!(c.reorder);
        assert_eq!(c.seed, 9);
        assert_eq!(
            parse_spec("queue=30kB", Direction::Up).unwrap().queue,
            QueueLimit::Bytes(30_000)
        );
        assert_eq!(
            parse_spec("rate=off", Direction::Up).unwrap().rate,
            RateSchedule::unlimited()
        );
    }

    #[test]
    fn profile_then_overrides_per_direction() {
        let up = parse_spec("collapse,loss=2%", Direction::Up).unwrap();
        assert_eq!(up.rate.rate_at(ms(30_000)), Some(2_000_000));
        assert!((up.loss - 0.02).abs() < 1e-12);
        let down = parse_spec("collapse", Direction::Down).unwrap();
        assert_eq!(down.rate.rate_at(ms(30_000)), Some(300_000));
        assert_eq!(
            parse_spec("", Direction::Down).unwrap(),
            LinkConfig::default()
        );
    }

    #[test]
    fn display_round_trips_through_the_parser() {
        for name in crate::linkem::profile::NAMES {
            for dir in [Direction::Down, Direction::Up] {
                let c = profile(name).unwrap().get(dir).clone();
                assert_eq!(parse_spec(&c.to_string(), dir).unwrap(), c, "{name}: {c}");
            }
        }
        let odd = parse_spec(
            "delay=1500us,jitter=7ns,queue=1234B,reorder,rate=off,at=1s:5k",
            Direction::Up,
        )
        .unwrap();
        assert_eq!(parse_spec(&odd.to_string(), Direction::Up).unwrap(), odd);
    }

    #[test]
    fn bad_specs_are_errors_not_panics() {
        for bad in [
            "rate=fast",
            "delay=-5ms",
            "loss=150%",
            "loss=2",
            "ge=0.1/0.2",
            "at=20s",
            "at=x:1M",
            "queue=0B",
            "nosuchprofile",
            "colour=red",
            "seed=-1",
            "reorder=maybe",
            "delay=1e300s",
        ] {
            assert!(parse_spec(bad, Direction::Down).is_err(), "{bad} accepted");
        }
    }
}
