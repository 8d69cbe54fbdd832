//! The administrators' API and page: usage reports (JSON and CSV), lessons, the directory, and
//! `/admin`. Mounted by the lead with `app.merge(admin::router(state))`.
//!
//! Access: `Authorization: Bearer <token>` or `?token=` (for CSV links). No token: 401. An admin
//! token reads within its scope (a county admin only that county; a school admin only that
//! school); asking outside it: 403. A teacher token reads the lessons its classroom hosted.

use std::sync::{Arc, Mutex};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{now_unix, AdminScope, Claims, TokenKey};
use crate::directory::{
    Classroom, County, Directory, DirectoryError, DirectoryFormat, School, SchoolKind,
    SharedDirectory,
};
use crate::store::query::{self, Filter, Level, Period, UsageRow};
use crate::store::{Store, StoreError};

/// Directory uploads larger than this are refused (7,000 classrooms are about 500 kB).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Longest report period, in days.
const MAX_DAYS: i64 = 400;
const MAX_PER_PAGE: u32 = 1000;

#[derive(Clone)]
pub struct AdminState {
    store: Arc<Mutex<Store>>,
    key: Arc<TokenKey>,
    directory: SharedDirectory,
    tz: Tz,
}

impl AdminState {
    /// `store` is a connection of its own (readers do not block the usage writer under WAL);
    /// `directory` is the shared, live directory (see [`AdminState::open`]).
    pub fn new(store: Store, key: TokenKey, directory: SharedDirectory, tz: Tz) -> AdminState {
        AdminState {
            store: Arc::new(Mutex::new(store)),
            key: Arc::new(key),
            directory,
            tz,
        }
    }

    /// Opens the store at `path`, loads its directory (storing `initial` first if it has none)
    /// and returns the state; share [`AdminState::directory`] with the engine and metrics.
    pub fn open(
        path: impl AsRef<std::path::Path>,
        key: TokenKey,
        initial: &Directory,
        tz: Tz,
    ) -> Result<AdminState, StoreError> {
        let mut store = Store::open(path)?;
        let dir = store.directory_or_seed(initial)?;
        Ok(AdminState::new(
            store,
            key,
            Arc::new(std::sync::RwLock::new(dir)),
            tz,
        ))
    }

    pub fn directory(&self) -> SharedDirectory {
        self.directory.clone()
    }

    /// Runs blocking store work off the async runtime, with the directory read-locked.
    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Store, &Directory) -> Result<R, AppError> + Send + 'static,
    ) -> Result<R, AppError> {
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            let store = state.store.lock().unwrap_or_else(|p| p.into_inner());
            let dir = state.directory.read().unwrap_or_else(|p| p.into_inner());
            f(&store, &dir)
        })
        .await
        .map_err(|e| AppError::Internal(format!("query task failed: {e}")))?
    }

    /// Applies a directory edit: validated on a copy, stored, then made live.
    async fn edit(
        &self,
        f: impl FnOnce(&mut Directory) -> Result<(), AppError> + Send + 'static,
    ) -> Result<Directory, AppError> {
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            // The store lock serialises edits, so no edit is lost between copy and swap.
            let mut store = state.store.lock().unwrap_or_else(|p| p.into_inner());
            let mut next = state
                .directory
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            f(&mut next)?;
            store.save_directory(&next)?;
            *state.directory.write().unwrap_or_else(|p| p.into_inner()) = next.clone();
            Ok(next)
        })
        .await
        .map_err(|e| AppError::Internal(format!("edit task failed: {e}")))?
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        AppError::Internal(e.to_string())
    }
}

impl From<DirectoryError> for AppError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::NotFound { .. } => AppError::NotFound(e.to_string()),
            DirectoryError::NotEmpty { .. } => AppError::Conflict(e.to_string()),
            _ => AppError::BadRequest(e.to_string()),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    code: &'static str,
    message: String,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            AppError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AppError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let message = match &self {
            AppError::Internal(detail) => {
                // Details go to the log, not to the client.
                tracing::error!(error = %detail, "admin API internal error");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let mut resp = (status, Json(ErrorBody { code, message })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Query parameters, with malformed ones answered as `AppError::BadRequest`.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Params(v))
            .map_err(|e| AppError::BadRequest(e.body_text()))
    }
}

/// A JSON body, with rejections in the app's error shape.
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = AppError;
    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| AppJson(v))
            .map_err(|e: JsonRejection| AppError::BadRequest(e.body_text()))
    }
}

// ---------------------------------------------------------------------------------------------
// Access

/// The verified claims of the caller.
pub struct Caller(pub Claims);

#[derive(Deserialize)]
struct TokenParam {
    token: Option<String>,
}

impl FromRequestParts<AdminState> for Caller {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, AppError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .map(String::from);
        let token = match header {
            Some(t) => Some(t),
            None => Query::<TokenParam>::try_from_uri(&parts.uri)
                .ok()
                .and_then(|Query(p)| p.token),
        };
        let token = token.ok_or(AppError::Unauthorized(
            "an admin token is required (Authorization: Bearer or ?token=)",
        ))?;
        let claims = state
            .key
            .verify(&token, now_unix())
            .map_err(|_| AppError::Unauthorized("the token is invalid or has expired"))?;
        Ok(Caller(claims))
    }
}

fn forbidden(what: &str) -> AppError {
    AppError::Forbidden(format!("this token may not read {what}"))
}

/// The report filter for a caller asking for `county` / `school`: the request narrowed by the
/// token's scope; asking outside the scope is refused rather than silently narrowed.
fn filter_for(
    claims: &Claims,
    county: Option<String>,
    school: Option<String>,
    dir: &Directory,
) -> Result<Filter, AppError> {
    let county = county.filter(|s| !s.is_empty());
    let school = school.filter(|s| !s.is_empty());
    let Claims::Admin { scope, .. } = claims else {
        return Err(AppError::Forbidden(
            "usage reports need an admin token".into(),
        ));
    };
    let school_county = |s: &str| dir.school(s).map(|x| x.county.clone());
    match scope {
        AdminScope::City => Ok(Filter { county, school }),
        AdminScope::County(k) => {
            if county.as_ref().is_some_and(|c| c != k) {
                return Err(forbidden("another county"));
            }
            if let Some(s) = &school {
                if school_county(s).as_ref() != Some(k) {
                    return Err(forbidden("a school outside its county"));
                }
            }
            Ok(Filter {
                county: Some(k.clone()),
                school,
            })
        }
        AdminScope::School(s) => {
            if school.as_ref().is_some_and(|x| x != s) {
                return Err(forbidden("another school"));
            }
            if county.is_some() && county != school_county(s) {
                return Err(forbidden("another county"));
            }
            Ok(Filter {
                county: None,
                school: Some(s.clone()),
            })
        }
    }
}

/// Directory edits: the city edits everything; a county admin edits schools and classrooms of
/// its county; a school admin edits its own classrooms.
fn may_edit_school(claims: &Claims, county: &str) -> bool {
    match claims {
        Claims::Admin { scope, .. } => match scope {
            AdminScope::City => true,
            AdminScope::County(k) => k == county,
            AdminScope::School(_) => false,
        },
        _ => false,
    }
}

fn may_edit_classroom(claims: &Claims, school: &str, dir: &Directory) -> bool {
    match claims {
        Claims::Admin { scope, .. } => match scope {
            AdminScope::City => true,
            AdminScope::County(k) => dir.school(school).is_some_and(|s| &s.county == k),
            AdminScope::School(s) => s == school,
        },
        _ => false,
    }
}

fn require_city(claims: &Claims) -> Result<(), AppError> {
    match claims {
        Claims::Admin {
            scope: AdminScope::City,
            ..
        } => Ok(()),
        _ => Err(AppError::Forbidden("this needs a city admin token".into())),
    }
}

// ---------------------------------------------------------------------------------------------
// Periods and formats

#[derive(Debug, Clone, Serialize)]
struct PeriodOut {
    from: String,
    to: String,
    time_zone: String,
}

fn parse_date(s: &str, name: &str) -> Result<NaiveDate, AppError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| AppError::BadRequest(format!("{name} must be a date like 2025-09-01")))
}

/// `from`/`to` are inclusive local dates; default: the 30 days up to today.
fn period(from: Option<&str>, to: Option<&str>, tz: Tz) -> Result<(Period, PeriodOut), AppError> {
    let today = chrono::Utc::now().with_timezone(&tz).date_naive();
    let to = match to.filter(|s| !s.is_empty()) {
        Some(s) => parse_date(s, "to")?,
        None => today,
    };
    let from = match from.filter(|s| !s.is_empty()) {
        Some(s) => parse_date(s, "from")?,
        None => to - chrono::Duration::days(29),
    };
    if from > to {
        return Err(AppError::BadRequest("from is after to".into()));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(AppError::BadRequest(format!(
            "a period may span at most {MAX_DAYS} days"
        )));
    }
    Ok((
        Period::from_dates(from, to, tz),
        PeriodOut {
            from: from.to_string(),
            to: to.to_string(),
            time_zone: tz.name().to_string(),
        },
    ))
}

fn wants_csv(format: Option<&str>, headers: &HeaderMap) -> Result<bool, AppError> {
    match format {
        Some("csv") => Ok(true),
        Some("json") => Ok(false),
        Some(other) => Err(AppError::BadRequest(format!(
            "format {other:?} is not json or csv"
        ))),
        None => Ok(headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.starts_with("text/csv"))),
    }
}

fn csv_response(body: String, filename: &str) -> Response {
    // The BOM makes spreadsheet software read the Chinese names as UTF-8.
    let body = format!("\u{feff}{body}");
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
                    .unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Usage

#[derive(Debug, Deserialize)]
pub struct UsageParams {
    from: Option<String>,
    to: Option<String>,
    county: Option<String>,
    school: Option<String>,
    level: Option<Level>,
    sort: Option<String>,
    order: Option<String>,
    page: Option<u32>,
    per_page: Option<u32>,
    format: Option<String>,
    limit: Option<u32>,
    #[allow(dead_code)] // read by the `Caller` extractor
    token: Option<String>,
}

#[derive(Serialize)]
struct UsageOut {
    period: PeriodOut,
    level: Level,
    total: usize,
    page: u32,
    per_page: u32,
    rows: Vec<UsageRow>,
}

fn paging(p: &UsageParams) -> Result<(u32, u32), AppError> {
    let page = p.page.unwrap_or(1);
    let per_page = p.per_page.unwrap_or(50);
    if page == 0 || per_page == 0 || per_page > MAX_PER_PAGE {
        return Err(AppError::BadRequest(format!(
            "page starts at 1; per_page is 1..={MAX_PER_PAGE}"
        )));
    }
    Ok((page, per_page))
}

fn page_of<T>(rows: Vec<T>, page: u32, per_page: u32) -> Vec<T> {
    rows.into_iter()
        .skip((page as usize - 1) * per_page as usize)
        .take(per_page as usize)
        .collect()
}

async fn usage(
    State(state): State<AdminState>,
    Caller(claims): Caller,
    headers: HeaderMap,
    Params(p): Params<UsageParams>,
) -> Result<Response, AppError> {
    let (period, period_out) = period(p.from.as_deref(), p.to.as_deref(), state.tz)?;
    let csv = wants_csv(p.format.as_deref(), &headers)?;
    let (page, per_page) = paging(&p)?;
    let level = p.level.unwrap_or_default();
    let descending = match p.order.as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(o) => {
            return Err(AppError::BadRequest(format!(
                "order {o:?} is not asc or desc"
            )))
        }
    };
    let sort = p.sort.clone().unwrap_or_else(|| "minutes".into());
    let (county, school) = (p.county.clone(), p.school.clone());
    let mut rows = state
        .read(move |store, dir| {
            let filter = filter_for(&claims, county, school, dir)?;
            Ok(store.usage(dir, period, &filter, level)?)
        })
        .await?;
    query::sort_rows(&mut rows, &sort, descending);
    if csv {
        let name = format!(
            "usage-{}-{}-{}.csv",
            level_name(level),
            period_out.from,
            period_out.to
        );
        return Ok(csv_response(query::usage_csv(&rows), &name));
    }
    let total = rows.len();
    Ok(Json(UsageOut {
        period: period_out,
        level,
        total,
        page,
        per_page,
        rows: page_of(rows, page, per_page),
    })
    .into_response())
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Classroom => "classroom",
        Level::School => "school",
        Level::County => "county",
        Level::City => "city",
    }
}

async fn least_used(
    State(state): State<AdminState>,
    Caller(claims): Caller,
    headers: HeaderMap,
    Params(p): Params<UsageParams>,
) -> Result<Response, AppError> {
    let (period, period_out) = period(p.from.as_deref(), p.to.as_deref(), state.tz)?;
    let csv = wants_csv(p.format.as_deref(), &headers)?;
    let limit = p.limit.unwrap_or(20);
    if limit == 0 || limit > MAX_PER_PAGE {
        return Err(AppError::BadRequest(format!("limit is 1..={MAX_PER_PAGE}")));
    }
    let (county, school) = (p.county.clone(), p.school.clone());
    let mut rows = state
        .read(move |store, dir| {
            let filter = filter_for(&claims, county, school, dir)?;
            Ok(store.usage(dir, period, &filter, Level::Classroom)?)
        })
        .await?;
    query::sort_least_used(&mut rows);
    rows.truncate(limit as usize);
    if csv {
        let name = format!("least-used-{}-{}.csv", period_out.from, period_out.to);
        return Ok(csv_response(query::usage_csv(&rows), &name));
    }
    let total = rows.len();
    Ok(Json(UsageOut {
        period: period_out,
        level: Level::Classroom,
        total,
        page: 1,
        per_page: limit,
        rows,
    })
    .into_response())
}

#[derive(Serialize)]
struct DailyOut {
    period: PeriodOut,
    days: Vec<query::DayMinutes>,
}

async fn daily(
    State(state): State<AdminState>,
    Caller(claims): Caller,
    Params(p): Params<UsageParams>,
) -> Result<Json<DailyOut>, AppError> {
    let (period, period_out) = period(p.from.as_deref(), p.to.as_deref(), state.tz)?;
    let tz = state.tz;
    let (county, school) = (p.county.clone(), p.school.clone());
    let days = state
        .read(move |store, dir| {
            let filter = filter_for(&claims, county, school, dir)?;
            Ok(store.daily_minutes(period, &filter, tz)?)
        })
        .await?;
    Ok(Json(DailyOut {
        period: period_out,
        days,
    }))
}

// ---------------------------------------------------------------------------------------------
// Lessons

#[derive(Serialize)]
struct LessonsOut {
    period: PeriodOut,
    total: i64,
    page: u32,
    per_page: u32,
    lessons: Vec<query::LessonSummary>,
}

async fn lessons(
    State(state): State<AdminState>,
    Caller(claims): Caller,
    Params(p): Params<UsageParams>,
) -> Result<Json<LessonsOut>, AppError> {
    let (period, period_out) = period(p.from.as_deref(), p.to.as_deref(), state.tz)?;
    let (page, per_page) = paging(&p)?;
    let (county, school) = (p.county.clone(), p.school.clone());
    let (total, lessons) = state
        .read(move |store, dir| {
            let offset = (page as i64 - 1) * per_page as i64;
            // Teachers see the attendance of the lessons their own classroom hosted.
            if let Claims::Teacher { classroom, .. } = &claims {
                let all = Filter::default();
                return Ok(store.lessons(
                    period,
                    &all,
                    Some(classroom),
                    offset,
                    per_page as i64,
                )?);
            }
            let filter = filter_for(&claims, county, school, dir)?;
            Ok(store.lessons(period, &filter, None, offset, per_page as i64)?)
        })
        .await?;
    Ok(Json(LessonsOut {
        period: period_out,
        total,
        page,
        per_page,
        lessons,
    }))
}

async fn lesson(
    State(state): State<AdminState>,
    Caller(claims): Caller,
    Path(id): Path<String>,
) -> Result<Json<query::LessonDetail>, AppError> {
    if id.len() > 128 {
        return Err(AppError::BadRequest("lesson id is too long".into()));
    }
    let detail = state
        .read(move |store, dir| {
            let not_found = || AppError::NotFound(format!("no lesson {id}"));
            // Teachers see the lessons their classroom hosted, in full.
            if let Claims::Teacher { classroom, .. } = &claims {
                let d = store
                    .lesson_detail(dir, &id, &Filter::default())?
                    .ok_or_else(not_found)?;
                if &d.lesson.host_classroom != classroom {
                    return Err(forbidden("a lesson another classroom hosted"));
                }
                return Ok(d);
            }
            let filter = filter_for(&claims, None, None, dir)?;
            let d = store
                .lesson_detail(dir, &id, &filter)?
                .ok_or_else(not_found)?;
            if d.classrooms.is_empty() && filter != Filter::default() {
                return Err(forbidden("a lesson outside its scope"));
            }
            Ok(d)
        })
        .await?;
    Ok(Json(detail))
}

// ---------------------------------------------------------------------------------------------
// Directory

#[derive(Deserialize)]
struct DirParams {
    format: Option<String>,
    #[allow(dead_code)] // read by the `Caller` extractor
    token: Option<String>,
}

/// The part of the directory a caller may read.
fn scoped_directory(claims: &Claims, dir: &Directory) -> Result<Directory, AppError> {
    let filter = filter_for(claims, None, None, dir)?;
    if filter == Filter::default() {
        return Ok(dir.clone());
    }
    let schools: Vec<School> = dir
        .schools
        .iter()
        .filter(|s| {
            filter.county.as_ref().is_none_or(|k| &s.county == k)
                && filter.school.as_ref().is_none_or(|x| &s.id == x)
        })
        .cloned()
        .collect();
    let counties = dir
        .counties
        .iter()
        .filter(|c| {
            schools.iter().any(|s| s.county == c.id) || filter.county.as_ref() == Some(&c.id)
        })
        .cloned()
        .collect();
    let classrooms = dir
        .classrooms
        .iter()
        .filter(|c| schools.iter().any(|s| s.id == c.school))
        .cloned()
        .collect();
    Ok(Directory::from_parts(
        dir.city.clone(),
        counties,
        schools,
        classrooms,
    )?)
}

async fn get_directory(
    State(state): State<AdminState>,
    Caller(claims): Caller,
    Params(p): Params<DirParams>,
) -> Result<Response, AppError> {
    let dir = state
        .read(move |_, dir| scoped_directory(&claims, dir))
        .await?;
    Ok(match p.format.as_deref() {
        None | Some("json") => Json(dir).into_response(),
        Some("csv") => csv_response(dir.to_csv(), "directory.csv"),
        Some("toml") => (
            [(header::CONTENT_TYPE, "application/toml; charset=utf-8")],
            dir.to_toml(),
        )
            .into_response(),
        Some(other) => {
            return Err(AppError::BadRequest(format!(
                "format {other:?} is not json, csv or toml"
            )))
        }
    })
}

#[derive(Serialize)]
struct DirectorySummary {
    counties: usize,
    schools: usize,
    classrooms: usize,
}

fn summary(d: &Directory) -> DirectorySummary {
    DirectorySummary {
        counties: d.counties.len(),
        schools: d.schools.len(),
        classrooms: d.classrooms.len(),
    }
}

/// Replaces the whole directory (city admins): CSV when the content type says so, else TOML.
async fn put_directory(
    State(state): State<AdminState>,
    Caller(claims): Caller,
    headers: HeaderMap,
    body: String,
) -> Result<Json<DirectorySummary>, AppError> {
    require_city(&claims)?;
    let format = match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        Some(ct) if ct.starts_with("text/csv") => DirectoryFormat::Csv,
        _ => DirectoryFormat::Toml,
    };
    let parsed = Directory::parse(&body, format)?;
    let d = state
        .edit(move |dir| {
            *dir = parsed;
            Ok(())
        })
        .await?;
    Ok(Json(summary(&d)))
}

#[derive(Deserialize)]
struct NameBody {
    name: String,
}

#[derive(Deserialize)]
struct SchoolBody {
    name: String,
    county: String,
    kind: SchoolKind,
}

#[derive(Deserialize)]
struct ClassroomBody {
    name: String,
    school: String,
}

async fn put_county(
    State(state): State<AdminState>,
    Caller(claims): Caller,
    Path(id): Path<String>,
    AppJson(body): AppJson<NameBody>,
) -> Result<Json<County>, AppError> {
    require_city(&claims)?;
    let county = County {
        id,
        name: body.name,
    };
    let c = county.clone();
    state.edit(move |d| Ok(d.upsert_county(c)?)).await?;
    Ok(Json(county))
}

async fn delete_county(
    State(state): State<AdminState>,
    Caller(claims): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    require_city(&claims)?;
    state
        .edit(move |d| Ok(d.remove_county(&id).map(|_| ())?))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn put_school(
    State(state): State<AdminState>,
    Caller(claims): Caller,
    Path(id): Path<String>,
    AppJson(body): AppJson<SchoolBody>,
) -> Result<Json<School>, AppError> {
    let school = School {
        id,
        name: body.name,
        county: body.county,
        kind: body.kind,
    };
    let s = school.clone();
    state
        .edit(move |d| {
            let old_county = d.school(&s.id).map(|x| x.county.clone());
            let allowed = may_edit_school(&claims, &s.county)
                && old_county.is_none_or(|k| may_edit_school(&claims, &k));
            if !allowed {
                return Err(AppError::Forbidden(
                    "this token may not edit schools of that county".into(),
                ));
            }
            Ok(d.upsert_school(s)?)
        })
        .await?;
    Ok(Json(school))
}

async fn delete_school(
    State(state): State<AdminState>,
    Caller(claims): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    state
        .edit(move |d| {
            let county = d
                .school(&id)
                .map(|s| s.county.clone())
                .ok_or_else(|| AppError::NotFound(format!("school {id} does not exist")))?;
            if !may_edit_school(&claims, &county) {
                return Err(AppError::Forbidden(
                    "this token may not edit schools of that county".into(),
                ));
            }
            Ok(d.remove_school(&id).map(|_| ())?)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn put_classroom(
    State(state): State<AdminState>,
    Caller(claims): Caller,
    Path(id): Path<String>,
    AppJson(body): AppJson<ClassroomBody>,
) -> Result<Json<Classroom>, AppError> {
    let classroom = Classroom {
        id,
        name: body.name,
        school: body.school,
    };
    let c = classroom.clone();
    state
        .edit(move |d| {
            let old_school = d.classroom(&c.id).map(|x| x.school.clone());
            let allowed = may_edit_classroom(&claims, &c.school, d)
                && old_school.is_none_or(|s| may_edit_classroom(&claims, &s, d));
            if !allowed {
                return Err(AppError::Forbidden(
                    "this token may not edit classrooms of that school".into(),
                ));
            }
            Ok(d.upsert_classroom(c)?)
        })
        .await?;
    Ok(Json(classroom))
}

async fn delete_classroom(
    State(state): State<AdminState>,
    Caller(claims): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    state
        .edit(move |d| {
            let school = d
                .classroom(&id)
                .map(|c| c.school.clone())
                .ok_or_else(|| AppError::NotFound(format!("classroom {id} does not exist")))?;
            if !may_edit_classroom(&claims, &school, d) {
                return Err(AppError::Forbidden(
                    "this token may not edit classrooms of that school".into(),
                ));
            }
            Ok(d.remove_classroom(&id).map(|_| ())?)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Page and description

const ADMIN_HTML: &str = include_str!("../../web/admin.html");
const ADMIN_JS: &str = include_str!("../../web/admin.js");
const ADMIN_CSS: &str = include_str!("../../web/admin.css");

/// Everything the page needs is served from here; nothing else may load or run.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        ADMIN_HTML,
    )
        .into_response()
}

async fn page_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        ADMIN_JS,
    )
        .into_response()
}

async fn page_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        ADMIN_CSS,
    )
        .into_response()
}

async fn openapi() -> Json<serde_json::Value> {
    Json(openapi_document())
}

/// The OpenAPI 3.1 description of this router.
pub fn openapi_document() -> serde_json::Value {
    let period = json!([
        {"name": "from", "in": "query", "schema": {"type": "string", "format": "date"},
         "description": "First day (inclusive, server time zone). Default: 29 days before `to`."},
        {"name": "to", "in": "query", "schema": {"type": "string", "format": "date"},
         "description": "Last day (inclusive). Default: today. At most 400 days in all."},
        {"name": "county", "in": "query", "schema": {"type": "string"}},
        {"name": "school", "in": "query", "schema": {"type": "string"}},
        {"name": "token", "in": "query", "schema": {"type": "string"},
         "description": "Admin token, for links (CSV downloads); else use the Authorization header."}
    ]);
    let paging = json!([
        {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 1}},
        {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}}
    ]);
    let format = json!({"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "csv"]},
        "description": "csv (or `Accept: text/csv`) returns every row, unpaginated, same columns as JSON."});
    let errors = json!({
        "400": {"$ref": "#/components/responses/Error"},
        "401": {"$ref": "#/components/responses/Error"},
        "403": {"$ref": "#/components/responses/Error"}
    });
    let with = |base: &serde_json::Value, extra: &[serde_json::Value]| {
        let mut v = base.as_array().cloned().unwrap_or_default();
        v.extend(extra.iter().cloned());
        serde_json::Value::Array(v)
    };
    let usage_params = with(
        &period,
        &[
            json!({"name": "level", "in": "query", "schema": {"type": "string", "enum": ["classroom", "school", "county", "city"], "default": "classroom"}}),
            json!({"name": "sort", "in": "query", "schema": {"type": "string", "default": "minutes"},
                   "description": "minutes, sessions, lessons_invited, lessons_attended, usage_rate, quality_score, reconnects, called_on, hands_raised, freezes, classrooms, loss_mean, rtt_mean_ms, name"}),
            json!({"name": "order", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"], "default": "desc"}}),
            format.clone(),
        ],
    );
    let usage_params = with(
        &usage_params,
        paging.as_array().map(Vec::as_slice).unwrap_or(&[]),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tongbu admin API",
            "version": "1",
            "description": "Usage of interactive classrooms. A session belongs to the period its join falls in, a lesson to its start. usage_rate = lessons_attended / lessons_invited (lessons hosted count as invited). quality_score: time-weighted received quality, top 100, middle 75, low 50, audio-only 25, paused 0. Seconds per quality level come from per-second samples. loss_mean and rtt_mean_ms are sample-weighted means; per-session p95 is in the lesson detail."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": {
                "Error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string", "enum": ["unauthorized", "forbidden", "bad_request", "not_found", "conflict", "internal"]},
                    "message": {"type": "string"}}},
                "UsageRow": {"type": "object", "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"},
                    "school_id": {"type": ["string", "null"]}, "school_name": {"type": ["string", "null"]},
                    "county_id": {"type": ["string", "null"]}, "county_name": {"type": ["string", "null"]},
                    "classrooms": {"type": "integer"}, "sessions": {"type": "integer"},
                    "connected_seconds": {"type": "integer"}, "minutes": {"type": "number"},
                    "lessons_invited": {"type": "integer"}, "lessons_attended": {"type": "integer"},
                    "usage_rate": {"type": ["number", "null"]}, "quality_score": {"type": ["number", "null"]},
                    "top_seconds": {"type": "integer"}, "middle_seconds": {"type": "integer"},
                    "low_seconds": {"type": "integer"}, "audio_only_seconds": {"type": "integer"},
                    "paused_seconds": {"type": "integer"}, "bytes_in": {"type": "integer"},
                    "bytes_out": {"type": "integer"}, "loss_mean": {"type": ["number", "null"]},
                    "rtt_mean_ms": {"type": ["number", "null"]}, "freezes": {"type": "integer"},
                    "reconnects": {"type": "integer"}, "called_on": {"type": "integer"},
                    "hands_raised": {"type": "integer"}}},
                "UsageReport": {"type": "object", "properties": {
                    "period": {"type": "object"}, "level": {"type": "string"}, "total": {"type": "integer"},
                    "page": {"type": "integer"}, "per_page": {"type": "integer"},
                    "rows": {"type": "array", "items": {"$ref": "#/components/schemas/UsageRow"}}}}
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/usage": {"get": {"summary": "Usage per classroom, school, county or city over a period",
                "parameters": usage_params,
                "responses": merge(json!({"200": {"description": "Report", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/UsageReport"}},
                    "text/csv": {"schema": {"type": "string"}}}}}), &errors)}},
            "/api/usage/least-used": {"get": {"summary": "Least-used classrooms first (lowest usage rate, then fewest minutes)",
                "parameters": with(&period, &[json!({"name": "limit", "in": "query", "schema": {"type": "integer", "default": 20, "maximum": 1000}}), format]),
                "responses": merge(json!({"200": {"description": "Report", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/UsageReport"}},
                    "text/csv": {"schema": {"type": "string"}}}}}), &errors)}},
            "/api/usage/daily": {"get": {"summary": "Connected minutes per day (a session counts on the day it started)",
                "parameters": period,
                "responses": merge(json!({"200": {"description": "Days", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"days": {"type": "array", "items": {"type": "object", "properties": {
                        "date": {"type": "string", "format": "date"}, "minutes": {"type": "number"}}}}}}}}}}), &errors)}},
            "/api/lessons": {"get": {"summary": "Lessons involving the scope, newest first, with invited and attended counts (teachers: the lessons their classroom hosted)",
                "parameters": with(&period, paging.as_array().map(Vec::as_slice).unwrap_or(&[])),
                "responses": merge(json!({"200": {"description": "Lessons"}}), &errors)}},
            "/api/lessons/{id}": {"get": {"summary": "One lesson: every classroom's sessions (teachers: lessons they hosted)",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": merge(json!({"200": {"description": "Lesson detail"}, "404": {"$ref": "#/components/responses/Error"}}), &errors)}},
            "/api/directory": {
                "get": {"summary": "The directory within the token's scope",
                    "parameters": [{"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "csv", "toml"]}}],
                    "responses": merge(json!({"200": {"description": "Directory"}}), &errors)},
                "put": {"summary": "Replace the directory (city admins). Body: TOML, or CSV with Content-Type text/csv (columns type,id,name,parent,kind)",
                    "requestBody": {"content": {"text/csv": {}, "application/toml": {}}},
                    "responses": merge(json!({"200": {"description": "Counts"}}), &errors)}},
            "/api/directory/counties/{id}": {
                "put": {"summary": "Add or rename a county (city admins)", "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}}}, "responses": errors},
                "delete": {"summary": "Remove an empty county (city admins)", "responses": merge(json!({"204": {"description": "Removed"}, "409": {"$ref": "#/components/responses/Error"}}), &errors)}},
            "/api/directory/schools/{id}": {
                "put": {"summary": "Add or change a school (city, or the county's admin)", "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["name", "county", "kind"], "properties": {"name": {"type": "string"}, "county": {"type": "string"}, "kind": {"type": "string", "enum": ["central", "village"]}}}}}}, "responses": errors},
                "delete": {"summary": "Remove a school without classrooms", "responses": merge(json!({"204": {"description": "Removed"}, "409": {"$ref": "#/components/responses/Error"}}), &errors)}},
            "/api/directory/classrooms/{id}": {
                "put": {"summary": "Add or change a classroom (city, county or school admin of its school)", "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["name", "school"], "properties": {"name": {"type": "string"}, "school": {"type": "string"}}}}}}, "responses": errors},
                "delete": {"summary": "Remove a classroom (its usage history stays)", "responses": merge(json!({"204": {"description": "Removed"}}), &errors)}}
        }
    })
}

fn merge(mut a: serde_json::Value, b: &serde_json::Value) -> serde_json::Value {
    if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
    a
}

/// The admin routes: `/admin` (page), `/api/openapi.json`, `/api/usage*`, `/api/lessons*`,
/// `/api/directory*`.
pub fn router(state: AdminState) -> Router {
    use axum::routing::put;
    Router::new()
        .route("/admin", get(page))
        .route("/admin/admin.js", get(page_js))
        .route("/admin/admin.css", get(page_css))
        .route("/api/openapi.json", get(openapi))
        .route("/api/usage", get(usage))
        .route("/api/usage/least-used", get(least_used))
        .route("/api/usage/daily", get(daily))
        .route("/api/lessons", get(lessons))
        .route("/api/lessons/{id}", get(lesson))
        .route("/api/directory", get(get_directory).put(put_directory))
        .route(
            "/api/directory/counties/{id}",
            put(put_county).delete(delete_county),
        )
        .route(
            "/api/directory/schools/{id}",
            put(put_school).delete(delete_school),
        )
        .route(
            "/api/directory/classrooms/{id}",
            put(put_classroom).delete(delete_classroom),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}
