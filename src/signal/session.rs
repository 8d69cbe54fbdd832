//! One WebSocket signaling session: parses and checks what the client sends (size, shape,
//! version, rate), hands valid messages to the engine, and writes the engine's replies.
//! Bad input always gets an `error` message, never a silently dropped socket.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use tokio::sync::mpsc;

use crate::engine::{Command, EngineHandle, Outbound, OUTBOX_CAPACITY};
use crate::signal::message::{
    ClientEnvelope, ErrorCode, ServerEnvelope, ServerMessage, MAX_MESSAGE_BYTES, PROTOCOL_VERSION,
};

/// Sustained messages per second a client may send, and the burst above it.
const RATE_PER_SEC: f64 = 20.0;
const BURST: f64 = 60.0;
/// Over-limit messages after which the session is closed.
const FLOOD_LIMIT: u32 = 200;
/// A client that sends nothing (pages ping every 10 s) for this long is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// Token bucket; time passed in.
#[derive(Debug)]
pub struct RateLimit {
    tokens: f64,
    last: Instant,
    over: u32,
}

impl RateLimit {
    pub fn new(now: Instant) -> Self {
        RateLimit {
            tokens: BURST,
            last: now,
            over: 0,
        }
    }

    /// Whether one more message is allowed now.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * RATE_PER_SEC).min(BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.over += 1;
            false
        }
    }

    pub fn flooding(&self) -> bool {
        self.over >= FLOOD_LIMIT
    }
}

/// Parses one text message, checking size and version.
pub fn parse(text: &str) -> Result<ClientEnvelope, (ErrorCode, String)> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err((
            ErrorCode::TooLarge,
            format!(
                "message of {} bytes exceeds {MAX_MESSAGE_BYTES}",
                text.len()
            ),
        ));
    }
    // Check the version before the shape, so a future client gets the more useful error.
    #[derive(serde::Deserialize)]
    struct VersionOnly {
        v: Option<u32>,
    }
    match serde_json::from_str::<VersionOnly>(text) {
        Ok(VersionOnly {
            v: Some(PROTOCOL_VERSION),
        }) => {}
        Ok(VersionOnly { v: Some(v) }) => {
            return Err((
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {v} is not supported; this server speaks {PROTOCOL_VERSION}"
                ),
            ))
        }
        Ok(VersionOnly { v: None }) => {
            return Err((
                ErrorCode::BadMessage,
                "missing protocol version \"v\"".into(),
            ))
        }
        Err(e) => return Err((ErrorCode::BadMessage, format!("not a JSON object: {e}"))),
    }
    serde_json::from_str(text).map_err(|e| {
        (
            ErrorCode::BadMessage,
            format!("unknown or malformed message: {e}"),
        )
    })
}

fn encode(msg: ServerMessage) -> Message {
    // Our own message types always serialize.
    let text =
        serde_json::to_string(&ServerEnvelope::from(msg)).expect("server messages serialize");
    Message::Text(text.into())
}

/// Runs the session until either side closes.
pub async fn run(mut socket: WebSocket, addr: IpAddr, engine: EngineHandle) {
    let conn = engine.next_conn_id();
    let (outbox, mut inbox) = mpsc::channel(OUTBOX_CAPACITY);
    if !engine.send(Command::Open { conn, addr, outbox }).await {
        let _ = socket
            .send(encode(ServerMessage::fatal(
                ErrorCode::Internal,
                "server is shutting down",
            )))
            .await;
        return;
    }
    let mut limit = RateLimit::new(Instant::now());
    let mut last_rate_error: Option<Instant> = None;
    let idle = tokio::time::sleep(IDLE_TIMEOUT);
    tokio::pin!(idle);

    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => {
                        let _ = socket.send(encode(ServerMessage::error(ErrorCode::BadMessage, "binary messages are not part of the protocol"))).await;
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) => {
                        // Answer the client's close so it sees a clean close, not 1006.
                        let _ = socket.send(Message::Close(None)).await;
                        break;
                    }
                    None => break,
                    Some(Err(e)) => {
                        tracing::debug!(%conn, "websocket error: {e}");
                        break;
                    }
                };
                idle.as_mut().reset((Instant::now() + IDLE_TIMEOUT).into());
                let now = Instant::now();
                if !limit.allow(now) {
                    if limit.flooding() {
                        tracing::warn!(%conn, %addr, "signaling flood, closing");
                        let _ = socket.send(encode(ServerMessage::fatal(ErrorCode::RateLimited, "too many messages; connection closed"))).await;
                        break;
                    }
                    if last_rate_error.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                        last_rate_error = Some(now);
                        let _ = socket.send(encode(ServerMessage::error(ErrorCode::RateLimited, "too many messages; slow down"))).await;
                    }
                    continue;
                }
                match parse(&text) {
                    Ok(envelope) => {
                        if !engine.send(Command::Message { conn, msg: envelope.msg }).await {
                            break;
                        }
                    }
                    Err((code, message)) => {
                        tracing::info!(%conn, code = code.as_str(), "refused signaling message: {message}");
                        if socket.send(encode(ServerMessage::error(code, message))).await.is_err() {
                            break;
                        }
                    }
                }
            }
            out = inbox.recv() => {
                match out {
                    Some(Outbound::Message(msg)) => {
                        if socket.send(encode(msg)).await.is_err() {
                            break;
                        }
                    }
                    Some(Outbound::Close) | None => {
                        let _ = socket.send(Message::Close(None)).await;
                        break;
                    }
                }
            }
            _ = &mut idle => {
                let _ = socket.send(encode(ServerMessage::fatal(ErrorCode::IdleTimeout, "no message for 45 s; connection closed"))).await;
                break;
            }
        }
    }
    engine.send(Command::Close { conn }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reports_each_kind_of_bad_input() {
        let cases = [
            ("not json", ErrorCode::BadMessage),
            ("[1,2]", ErrorCode::BadMessage),
            (r#"{"type":"ping"}"#, ErrorCode::BadMessage),
            (r#"{"v":2,"type":"ping"}"#, ErrorCode::UnsupportedVersion),
            (r#"{"v":1,"type":"dance"}"#, ErrorCode::BadMessage),
            (r#"{"v":1,"type":"call_on"}"#, ErrorCode::BadMessage),
        ];
        for (text, code) in cases {
            assert_eq!(parse(text).unwrap_err().0, code, "{text}");
        }
        let big = format!(
            r#"{{"v":1,"type":"offer","sdp":"{}"}}"#,
            "a".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(parse(&big).unwrap_err().0, ErrorCode::TooLarge);
        assert!(parse(r#"{"v":1,"type":"ping"}"#).is_ok());
        assert!(parse(r#"{"v":1,"type":"join","code":"123456"}"#).is_ok());
    }

    #[test]
    fn rate_limit_allows_bursts_then_throttles_then_recovers() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(t0);
        let allowed = (0..100).filter(|_| limit.allow(t0)).count();
        assert_eq!(allowed, BURST as usize);
        assert!(limit.allow(t0 + Duration::from_secs(1)));
        assert!(!limit.flooding());
    }
}
