//! Library halves of the CLI commands; `main.rs` parses flags with these `clap::Args` structs and
//! calls `run`. Intended commands:
//!
//! - `tongbu usage export --db tongbu.db [--from 2025-09-01] [--to 2025-09-30]
//!   [--level classroom|school|county|city] [--county ID] [--school ID] [--tz Asia/Shanghai]`:
//!   CSV (the API's columns) to stdout;
//! - `tongbu admin-token --secret-file key [--city | --county ID | --school ID] [--days 30]`:
//!   prints a token;
//! - `tongbu directory import --db tongbu.db FILE.{toml,csv}`: validates and replaces the stored
//!   directory (a running server picks it up on restart; live edits go through the admin API).

use std::io::Write;
use std::path::PathBuf;

use chrono::NaiveDate;
use chrono_tz::Tz;

use crate::auth::{AdminScope, Claims, TokenKey};
use crate::directory::{Directory, DirectoryError, DirectoryFormat};
use crate::store::query::{self, Filter, Level, Period};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error("{0}")]
    Usage(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, clap::Args)]
pub struct UsageExportArgs {
    /// SQLite database file.
    #[arg(long, default_value = "tongbu-data/usage.db")]
    pub db: PathBuf,
    /// First day, inclusive (default: 29 days before --to).
    #[arg(long)]
    pub from: Option<NaiveDate>,
    /// Last day, inclusive (default: today).
    #[arg(long)]
    pub to: Option<NaiveDate>,
    #[arg(long, value_enum, default_value = "classroom")]
    pub level: LevelArg,
    #[arg(long)]
    pub county: Option<String>,
    #[arg(long)]
    pub school: Option<String>,
    /// Time zone for dates.
    #[arg(long, default_value = "Asia/Shanghai")]
    pub tz: Tz,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LevelArg {
    Classroom,
    School,
    County,
    City,
}

impl From<LevelArg> for Level {
    fn from(l: LevelArg) -> Level {
        match l {
            LevelArg::Classroom => Level::Classroom,
            LevelArg::School => Level::School,
            LevelArg::County => Level::County,
            LevelArg::City => Level::City,
        }
    }
}

impl UsageExportArgs {
    /// Writes the report as CSV to `out`.
    pub fn run(&self, out: &mut impl Write) -> Result<(), CliError> {
        let today = chrono::Utc::now().with_timezone(&self.tz).date_naive();
        let to = self.to.unwrap_or(today);
        let from = self.from.unwrap_or(to - chrono::Duration::days(29));
        if from > to {
            return Err(CliError::Usage("--from is after --to".into()));
        }
        let store = Store::open(&self.db)?;
        let dir = store
            .load_directory()?
            .ok_or_else(|| CliError::Usage("the database holds no directory yet".into()))?;
        let filter = Filter {
            county: self.county.clone(),
            school: self.school.clone(),
        };
        let rows = store.usage(
            &dir,
            Period::from_dates(from, to, self.tz),
            &filter,
            self.level.into(),
        )?;
        out.write_all(query::usage_csv(&rows).as_bytes())?;
        Ok(())
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct AdminTokenArgs {
    /// File holding the server's token secret.
    #[arg(long, default_value = "tongbu-data/secret.key")]
    pub secret_file: PathBuf,
    /// Scope: the whole city.
    #[arg(long, conflicts_with_all = ["county", "school"])]
    pub city: bool,
    #[arg(long, conflicts_with = "school")]
    pub county: Option<String>,
    #[arg(long)]
    pub school: Option<String>,
    /// Validity in days.
    #[arg(long, default_value_t = 30)]
    pub days: i64,
}

impl AdminTokenArgs {
    pub fn run(&self, now_unix: i64) -> Result<String, CliError> {
        let secret = std::fs::read(&self.secret_file)?;
        let scope = match (&self.county, &self.school) {
            (Some(k), None) => AdminScope::County(k.clone()),
            (None, Some(s)) => AdminScope::School(s.clone()),
            _ if self.city => AdminScope::City,
            _ => {
                return Err(CliError::Usage(
                    "give one of --city, --county ID, --school ID".into(),
                ))
            }
        };
        if !(1..=3660).contains(&self.days) {
            return Err(CliError::Usage("--days is 1..=3660".into()));
        }
        Ok(mint_admin_token(
            &TokenKey::new(secret),
            scope,
            now_unix + self.days * 86_400,
        ))
    }
}

/// An admin token for `scope`, valid until `exp` (Unix seconds).
pub fn mint_admin_token(key: &TokenKey, scope: AdminScope, exp: i64) -> String {
    key.sign(&Claims::Admin { scope, exp })
}

#[derive(Debug, Clone, clap::Args)]
pub struct DirectoryImportArgs {
    #[arg(long, default_value = "tongbu-data/usage.db")]
    pub db: PathBuf,
    /// A `.toml` or `.csv` directory file.
    pub file: PathBuf,
}

impl DirectoryImportArgs {
    /// Validates the file and replaces the stored directory; returns it.
    pub fn run(&self) -> Result<Directory, CliError> {
        let dir = import_directory(&self.db, &self.file)?;
        Ok(dir)
    }
}

/// Reads a TOML or CSV directory file (by extension) and stores it in the database at `db`.
pub fn import_directory(
    db: &std::path::Path,
    file: &std::path::Path,
) -> Result<Directory, CliError> {
    let text = std::fs::read_to_string(file)?;
    let dir = Directory::parse(&text, DirectoryFormat::from_path(file))?;
    let mut store = Store::open(db)?;
    store.save_directory(&dir)?;
    Ok(dir)
}
