//! Admin API access and input handling, through the router with `oneshot` (no socket).

mod usage_support;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use tongbu::auth::{AdminScope, Claims, TokenKey};
use tongbu::http::admin::{router, AdminState};
use tongbu::store::{LessonRecord, SessionRecord, Store, Writes};
use tower::ServiceExt;
use usage_support::*;

const FAR: i64 = 4_000_000_000;

fn key() -> TokenKey {
    TokenKey::new(b"test-secret".to_vec())
}

fn admin(scope: AdminScope) -> String {
    key().sign(&Claims::Admin { scope, exp: FAR })
}

/// A store with one lesson in each county (k1: hosted by c-h1 with c-a; k2: c-h2 with c-x), and
/// the database it lives in (keep it while the state is used).
fn state(name: &str) -> (AdminState, TempDb) {
    let db = temp_db(name);
    let mut store = Store::open(&db).unwrap();
    let mut writes = Writes::default();
    for (lesson, host, guest, t) in [
        ("L-k1", "c-h1", "c-a", T0),
        ("L-k2", "c-h2", "c-x", T0 + 3_600_000),
    ] {
        writes.lessons.push(LessonRecord {
            id: lesson.into(),
            title: "数学".into(),
            host_classroom: host.into(),
            invited: vec![guest.into()],
            started_at: t,
            ended_at: Some(t + 2_400_000),
            checkpoint_at: t + 2_400_000,
        });
        for c in [host, guest] {
            writes.sessions.push(SessionRecord {
                id: format!("{lesson}-{c}"),
                lesson_id: lesson.into(),
                classroom_id: c.into(),
                joined_at: t,
                left_at: Some(t + 2_400_000),
                connected_ms: 2_400_000,
                top_ms: 2_000_000,
                low_ms: 400_000,
                checkpoint_at: t + 2_400_000,
                ..Default::default()
            });
        }
    }
    store.apply(&writes).unwrap();
    drop(store);
    let state = AdminState::open(&db, key(), &directory(), chrono_tz::Asia::Shanghai).unwrap();
    (state, db)
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<(&str, String)>,
) -> (StatusCode, String, axum::http::HeaderMap) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some((ct, b)) => req.header(header::CONTENT_TYPE, ct).body(Body::from(b)),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap(), headers)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

const SEPT: &str = "from=2025-09-01&to=2025-09-30";

#[tokio::test]
async fn no_token_reads_nothing_and_county_admins_stay_in_their_county() {
    let (admin_state, _db) = state("access");
    let app = router(admin_state);
    for uri in [
        format!("/api/usage?{SEPT}"),
        format!("/api/usage/least-used?{SEPT}"),
        format!("/api/usage/daily?{SEPT}"),
        format!("/api/lessons?{SEPT}"),
        "/api/lessons/L-k1".to_string(),
        "/api/directory".to_string(),
    ] {
        let (status, body, headers) = call(&app, "GET", &uri, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(json(&body)["code"], "unauthorized");
        assert!(headers.contains_key(header::WWW_AUTHENTICATE));
        let (status, _, _) = call(&app, "GET", &uri, Some("forged.token"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let expired = key().sign(&Claims::Admin {
        scope: AdminScope::City,
        exp: 1,
    });
    let (status, _, _) = call(&app, "GET", "/api/usage", Some(&expired), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let k1 = admin(AdminScope::County("k1".into()));
    let (status, body, _) = call(
        &app,
        "GET",
        &format!("/api/usage?{SEPT}&county=k2"),
        Some(&k1),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(json(&body)["code"], "forbidden");
    let (status, _, _) = call(
        &app,
        "GET",
        &format!("/api/usage?{SEPT}&school=s3"),
        Some(&k1),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(&app, "GET", "/api/lessons/L-k2", Some(&k1), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body, _) = call(
        &app,
        "GET",
        &format!("/api/usage?{SEPT}&per_page=100"),
        Some(&k1),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let rows = json(&body)["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 3, "{body}");
    assert!(rows.iter().all(|r| r["county_id"] == "k1"));
    let (_, body, _) = call(
        &app,
        "GET",
        &format!("/api/lessons?{SEPT}"),
        Some(&k1),
        None,
    )
    .await;
    let lessons = json(&body);
    assert_eq!(lessons["total"], 1);
    assert_eq!(lessons["lessons"][0]["id"], "L-k1");
    let (_, body, _) = call(&app, "GET", "/api/directory", Some(&k1), None).await;
    let d = json(&body);
    assert!(d["classroom"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["school"] != "s3"));

    // A school admin sees its school only; the city sees both counties.
    let s3 = admin(AdminScope::School("s3".into()));
    let (_, body, _) = call(
        &app,
        "GET",
        &format!("/api/usage?{SEPT}&level=school"),
        Some(&s3),
        None,
    )
    .await;
    let rows = json(&body)["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], "s3");
    let city = admin(AdminScope::City);
    let (_, body, _) = call(
        &app,
        "GET",
        &format!("/api/usage?{SEPT}&level=county"),
        Some(&city),
        None,
    )
    .await;
    let rows = json(&body)["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["minutes"] == 80.0), "{rows:?}");

    // Teachers read the lessons they hosted, not others; not reports.
    let teacher = key().sign(&Claims::Teacher {
        classroom: "c-h1".into(),
        exp: FAR,
    });
    assert_eq!(
        call(&app, "GET", "/api/lessons/L-k1", Some(&teacher), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "GET", "/api/lessons/L-k2", Some(&teacher), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, "GET", "/api/usage", Some(&teacher), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    // The lesson list shows a teacher only the lessons its classroom hosted, with attendance.
    let (status, body, _) = call(
        &app,
        "GET",
        &format!("/api/lessons?{SEPT}"),
        Some(&teacher),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let lessons = json(&body)["lessons"].as_array().unwrap().clone();
    assert!(!lessons.is_empty());
    assert!(
        lessons.iter().all(|l| l["host_classroom"] == "c-h1"),
        "{lessons:?}"
    );
    assert!(lessons
        .iter()
        .all(|l| l["invited"].as_i64().is_some() && l["attended"].as_i64().is_some()));
    let (_, body, _) = call(
        &app,
        "GET",
        &format!("/api/lessons?{SEPT}"),
        Some(&city),
        None,
    )
    .await;
    assert!(json(&body)["lessons"].as_array().unwrap().len() > lessons.len());
}

#[tokio::test]
async fn csv_links_bad_input_and_directory_edits() {
    let (admin_state, _db) = state("input");
    let app = router(admin_state);
    let city = admin(AdminScope::City);
    // CSV via ?token= (links), same rows as JSON.
    let (status, csv, headers) = call(
        &app,
        "GET",
        &format!("/api/usage?{SEPT}&format=csv&token={city}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let records = tongbu::usage::csv::parse(&csv).unwrap();
    assert_eq!(records.len(), 1 + 5);
    assert_eq!(records[0][0], "id");
    assert!(
        csv.contains("<b>上村</b>小学"),
        "CSV carries names verbatim"
    );

    for (uri, what) in [
        ("/api/usage?from=2025-13-01".to_string(), "bad date"),
        (format!("/api/usage?{SEPT}&per_page=0"), "zero page size"),
        (format!("/api/usage?{SEPT}&level=galaxy"), "unknown level"),
        (
            "/api/usage?from=2025-09-30&to=2025-09-01".to_string(),
            "reversed period",
        ),
        (
            "/api/usage?from=2020-01-01&to=2025-01-01".to_string(),
            "period too long",
        ),
        (format!("/api/usage?{SEPT}&format=xml"), "unknown format"),
        (
            format!("/api/usage?{SEPT}&page=99999999999"),
            "page overflow",
        ),
    ] {
        let (status, body, _) = call(&app, "GET", &uri, Some(&city), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert_eq!(json(&body)["code"], "bad_request", "{what}");
    }
    let (status, _, _) = call(&app, "GET", "/api/lessons/none", Some(&city), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Directory edits: a k2 admin may not add a classroom to a k1 school; a k1 admin may.
    let k1 = admin(AdminScope::County("k1".into()));
    let k2 = admin(AdminScope::County("k2".into()));
    let body = r#"{"name":"新教室","school":"s2"}"#.to_string();
    let put = |t: String, b: String| {
        let app = app.clone();
        async move {
            call(
                &app,
                "PUT",
                "/api/directory/classrooms/c-new",
                Some(&t),
                Some(("application/json", b)),
            )
            .await
        }
    };
    assert_eq!(put(k2.clone(), body.clone()).await.0, StatusCode::FORBIDDEN);
    assert_eq!(put(k1.clone(), body.clone()).await.0, StatusCode::OK);
    assert_eq!(
        put(k1.clone(), "{not json".into()).await.0,
        StatusCode::BAD_REQUEST
    );
    let (status, body, _) = put(city.clone(), r#"{"name":"x","school":"s-none"}"#.into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (_, body, _) = call(&app, "GET", "/api/directory?format=csv", Some(&k1), None).await;
    assert!(body.contains("c-new"));
    assert_eq!(
        call(
            &app,
            "DELETE",
            "/api/directory/schools/s2",
            Some(&city),
            None
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        call(
            &app,
            "PUT",
            "/api/directory",
            Some(&k1),
            Some(("text/csv", "county,k9,九县\n".into()))
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let (status, body, _) = call(
        &app,
        "PUT",
        "/api/directory",
        Some(&city),
        Some(("text/csv", directory().to_csv())),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["classrooms"], 5);
    let huge = "x".repeat(5 << 20);
    let (status, _, _) = call(
        &app,
        "PUT",
        "/api/directory",
        Some(&city),
        Some(("text/csv", huge)),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // The page and the API description.
    let (status, html, headers) = call(&app, "GET", "/admin", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("admin.js"));
    assert!(headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let (status, spec, _) = call(&app, "GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let spec = json(&spec);
    assert_eq!(spec["openapi"], "3.1.0");
    assert!(spec["paths"]["/api/usage"]["get"].is_object());
}
