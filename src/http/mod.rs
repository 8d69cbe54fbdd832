//! HTTP: the web pages, the signaling WebSocket, health and metrics. Pages are compiled into
//! the binary, so `tongbu serve` needs no files beside it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State, WebSocketUpgrade};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::engine::EngineHandle;
use crate::metrics::Metrics;
use crate::signal::message::MAX_MESSAGE_BYTES;

/// Largest WebSocket frame read at all; between this and `MAX_MESSAGE_BYTES` the client gets a
/// `too_large` error message instead of a protocol close.
const MAX_FRAME_BYTES: usize = 16 * MAX_MESSAGE_BYTES;

#[derive(Clone)]
pub struct AppState {
    pub engine: EngineHandle,
    pub metrics: Arc<Metrics>,
    /// The demo lesson's links, shown on the landing page when the server runs the demo.
    pub demo_links: Option<Arc<Vec<(String, String)>>>,
}

/// A static file compiled into the binary.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../web/app.js"),
    },
    Asset {
        name: "i18n.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../web/i18n.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../web/style.css"),
    },
];

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/teacher",
            get(|| async { Html(include_str!("../../web/teacher.html")) }),
        )
        .route(
            "/classroom",
            get(|| async { Html(include_str!("../../web/classroom.html")) }),
        )
        .route("/static/{file}", get(asset))
        .route("/ws", get(ws))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn index(State(state): State<AppState>) -> Html<String> {
    let mut links = String::new();
    if let Some(demo) = &state.demo_links {
        for (label, href) in demo.iter() {
            links.push_str(&format!(
                "<li><a href=\"{}\">{}</a></li>",
                html_escape(href),
                html_escape(label)
            ));
        }
    }
    Html(format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>同步课堂 tongbu</title>\
         <link rel=\"stylesheet\" href=\"/static/style.css\"></head><body class=\"landing\">\
         <h1>同步课堂 tongbu</h1><ul><li><a href=\"/classroom\">听讲教室：输入课堂码加入 / Classroom: join with a code</a></li>\
         <li><a href=\"/admin\">管理统计 / Usage statistics</a></li>{links}</ul></body></html>"
    ))
}

pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

async fn ws(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| crate::signal::session::run(socket, addr.ip(), state.engine))
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.engine.snapshot().await {
        Some(s) => Json(serde_json::json!({"status": "ok", "engine": s})).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "engine stopped").into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
