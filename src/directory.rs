//! The school directory: city → county → school → classroom. Every usage figure is keyed by
//! classroom id, never by display name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The directory the server starts with when none is configured: one county, one central school
/// with the host classroom, and three village teaching points.
pub const DEMO_DIRECTORY: &str = include_str!("demo_directory.toml");

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("directory file is not valid TOML: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("school {school} names unknown county {county}")]
    UnknownCounty { school: String, county: String },
    #[error("classroom {classroom} names unknown school {school}")]
    UnknownSchool { classroom: String, school: String },
    #[error("duplicate id {0}")]
    Duplicate(String),
    #[error("id {0:?} is empty or has characters other than letters, digits, '-' and '_'")]
    BadId(String),
    #[error("{0}")]
    Csv(#[from] crate::usage::csv::CsvError),
    #[error("CSV line {line}: {message}")]
    CsvRecord { line: usize, message: String },
    #[error("name of {0} is empty or longer than 200 characters")]
    BadName(String),
    #[error("{kind} {id} does not exist")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} {id} still has {children} entries under it")]
    NotEmpty {
        kind: &'static str,
        id: String,
        children: usize,
    },
}

/// The directory shared between the engine (invitations), the usage service (metric labels) and
/// the admin API (which edits it).
pub type SharedDirectory = std::sync::Arc<std::sync::RwLock<Directory>>;

/// File formats a directory can be imported from and exported to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryFormat {
    Toml,
    /// One table: `type,id,name,parent,kind` with `type` one of city/county/school/classroom;
    /// `parent` is a school's county or a classroom's school, `kind` is central/village.
    Csv,
}

impl DirectoryFormat {
    /// Guesses from a file name's extension (`.csv`, else TOML).
    pub fn from_path(path: &std::path::Path) -> DirectoryFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => DirectoryFormat::Csv,
            _ => DirectoryFormat::Toml,
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.trim().is_empty() && name.chars().count() <= 200
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct County {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SchoolKind {
    /// 乡镇中心校: hosts lessons.
    Central,
    /// 村小 / 教学点: joins lessons.
    Village,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct School {
    pub id: String,
    pub name: String,
    pub county: String,
    pub kind: SchoolKind,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Classroom {
    pub id: String,
    pub name: String,
    pub school: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Directory {
    #[serde(default)]
    pub city: String,
    #[serde(default, rename = "county")]
    pub counties: Vec<County>,
    #[serde(default, rename = "school")]
    pub schools: Vec<School>,
    #[serde(default, rename = "classroom")]
    pub classrooms: Vec<Classroom>,
    #[serde(skip)]
    classroom_index: BTreeMap<String, usize>,
    #[serde(skip)]
    school_index: BTreeMap<String, usize>,
}

pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Directory {
    pub fn from_toml(text: &str) -> Result<Directory, DirectoryError> {
        let mut dir: Directory = toml::from_str(text)?;
        dir.index()?;
        Ok(dir)
    }

    /// Builds and validates a directory from its parts.
    pub fn from_parts(
        city: String,
        counties: Vec<County>,
        schools: Vec<School>,
        classrooms: Vec<Classroom>,
    ) -> Result<Directory, DirectoryError> {
        let mut dir = Directory {
            city,
            counties,
            schools,
            classrooms,
            ..Default::default()
        };
        dir.index()?;
        Ok(dir)
    }

    pub fn parse(text: &str, format: DirectoryFormat) -> Result<Directory, DirectoryError> {
        match format {
            DirectoryFormat::Toml => Directory::from_toml(text),
            DirectoryFormat::Csv => Directory::from_csv(text),
        }
    }

    /// Reads the CSV form (see [`DirectoryFormat::Csv`]); a header row starting with `type` is
    /// skipped.
    pub fn from_csv(text: &str) -> Result<Directory, DirectoryError> {
        let mut dir = Directory::default();
        for (i, rec) in crate::usage::csv::parse(text)?.into_iter().enumerate() {
            let line = i + 1;
            let field = |n: usize| rec.get(n).map(|s| s.trim().to_string()).unwrap_or_default();
            let bad = |message: String| DirectoryError::CsvRecord { line, message };
            match field(0).as_str() {
                "type" if i == 0 => {}
                "city" => dir.city = field(2),
                "county" => dir.counties.push(County {
                    id: field(1),
                    name: field(2),
                }),
                "school" => dir.schools.push(School {
                    id: field(1),
                    name: field(2),
                    county: field(3),
                    kind: match field(4).as_str() {
                        "central" => SchoolKind::Central,
                        "village" => SchoolKind::Village,
                        other => {
                            return Err(bad(format!(
                                "school kind {other:?} is not central or village"
                            )))
                        }
                    },
                }),
                "classroom" => dir.classrooms.push(Classroom {
                    id: field(1),
                    name: field(2),
                    school: field(3),
                }),
                other => {
                    return Err(bad(format!(
                        "type {other:?} is not city, county, school or classroom"
                    )))
                }
            }
        }
        dir.index()?;
        Ok(dir)
    }

    pub fn to_csv(&self) -> String {
        use crate::usage::csv::write_record;
        let mut out = String::new();
        write_record(&mut out, &["type", "id", "name", "parent", "kind"]);
        write_record(&mut out, &["city", "", &self.city, "", ""]);
        for c in &self.counties {
            write_record(&mut out, &["county", &c.id, &c.name, "", ""]);
        }
        for s in &self.schools {
            let kind = match s.kind {
                SchoolKind::Central => "central",
                SchoolKind::Village => "village",
            };
            write_record(&mut out, &["school", &s.id, &s.name, &s.county, kind]);
        }
        for c in &self.classrooms {
            write_record(&mut out, &["classroom", &c.id, &c.name, &c.school, ""]);
        }
        out
    }

    pub fn to_toml(&self) -> String {
        // Plain strings and vectors of tables; serialization cannot fail.
        toml::to_string(self).expect("directory serializes to TOML")
    }

    pub fn county(&self, id: &str) -> Option<&County> {
        self.counties.iter().find(|c| c.id == id)
    }

    /// The county a classroom belongs to (through its school).
    pub fn county_of(&self, classroom_id: &str) -> Option<&str> {
        self.school_of(classroom_id).map(|s| s.county.as_str())
    }

    /// Adds or renames a county.
    pub fn upsert_county(&mut self, county: County) -> Result<(), DirectoryError> {
        let mut next = self.clone();
        match next.counties.iter_mut().find(|c| c.id == county.id) {
            Some(c) => *c = county,
            None => next.counties.push(county),
        }
        next.commit(self)
    }

    /// Adds or changes a school (its county must exist).
    pub fn upsert_school(&mut self, school: School) -> Result<(), DirectoryError> {
        let mut next = self.clone();
        match next.schools.iter_mut().find(|s| s.id == school.id) {
            Some(s) => *s = school,
            None => next.schools.push(school),
        }
        next.commit(self)
    }

    /// Adds or changes a classroom (its school must exist).
    pub fn upsert_classroom(&mut self, classroom: Classroom) -> Result<(), DirectoryError> {
        let mut next = self.clone();
        match next.classrooms.iter_mut().find(|c| c.id == classroom.id) {
            Some(c) => *c = classroom,
            None => next.classrooms.push(classroom),
        }
        next.commit(self)
    }

    /// Removes an empty county.
    pub fn remove_county(&mut self, id: &str) -> Result<County, DirectoryError> {
        let children = self.schools.iter().filter(|s| s.county == id).count();
        if children > 0 {
            return Err(DirectoryError::NotEmpty {
                kind: "county",
                id: id.into(),
                children,
            });
        }
        let pos = self.counties.iter().position(|c| c.id == id);
        let pos = pos.ok_or_else(|| DirectoryError::NotFound {
            kind: "county",
            id: id.into(),
        })?;
        let removed = self.counties.remove(pos);
        self.index()?;
        Ok(removed)
    }

    /// Removes a school without classrooms.
    pub fn remove_school(&mut self, id: &str) -> Result<School, DirectoryError> {
        let children = self.classrooms.iter().filter(|c| c.school == id).count();
        if children > 0 {
            return Err(DirectoryError::NotEmpty {
                kind: "school",
                id: id.into(),
                children,
            });
        }
        let pos = self.school_index.get(id).copied();
        let pos = pos.ok_or_else(|| DirectoryError::NotFound {
            kind: "school",
            id: id.into(),
        })?;
        let removed = self.schools.remove(pos);
        self.index()?;
        Ok(removed)
    }

    /// Removes a classroom; its usage history stays in the store.
    pub fn remove_classroom(&mut self, id: &str) -> Result<Classroom, DirectoryError> {
        let pos = self.classroom_index.get(id).copied();
        let pos = pos.ok_or_else(|| DirectoryError::NotFound {
            kind: "classroom",
            id: id.into(),
        })?;
        let removed = self.classrooms.remove(pos);
        self.index()?;
        Ok(removed)
    }

    /// Validates `self` and, if sound, replaces `target` with it (edits are all-or-nothing).
    fn commit(mut self, target: &mut Directory) -> Result<(), DirectoryError> {
        self.index()?;
        *target = self;
        Ok(())
    }

    pub fn demo() -> Directory {
        // The embedded demo directory is checked by a unit test.
        Directory::from_toml(DEMO_DIRECTORY).expect("embedded demo directory is valid")
    }

    fn index(&mut self) -> Result<(), DirectoryError> {
        let mut counties = BTreeMap::new();
        for c in &self.counties {
            if !valid_id(&c.id) {
                return Err(DirectoryError::BadId(c.id.clone()));
            }
            if !valid_name(&c.name) {
                return Err(DirectoryError::BadName(c.id.clone()));
            }
            if counties.insert(c.id.clone(), ()).is_some() {
                return Err(DirectoryError::Duplicate(c.id.clone()));
            }
        }
        self.school_index.clear();
        for (i, s) in self.schools.iter().enumerate() {
            if !valid_id(&s.id) {
                return Err(DirectoryError::BadId(s.id.clone()));
            }
            if !valid_name(&s.name) {
                return Err(DirectoryError::BadName(s.id.clone()));
            }
            if !counties.contains_key(&s.county) {
                return Err(DirectoryError::UnknownCounty {
                    school: s.id.clone(),
                    county: s.county.clone(),
                });
            }
            if self.school_index.insert(s.id.clone(), i).is_some() {
                return Err(DirectoryError::Duplicate(s.id.clone()));
            }
        }
        self.classroom_index.clear();
        for (i, c) in self.classrooms.iter().enumerate() {
            if !valid_id(&c.id) {
                return Err(DirectoryError::BadId(c.id.clone()));
            }
            if !valid_name(&c.name) {
                return Err(DirectoryError::BadName(c.id.clone()));
            }
            if !self.school_index.contains_key(&c.school) {
                return Err(DirectoryError::UnknownSchool {
                    classroom: c.id.clone(),
                    school: c.school.clone(),
                });
            }
            if self.classroom_index.insert(c.id.clone(), i).is_some() {
                return Err(DirectoryError::Duplicate(c.id.clone()));
            }
        }
        Ok(())
    }

    pub fn classroom(&self, id: &str) -> Option<&Classroom> {
        self.classroom_index.get(id).map(|&i| &self.classrooms[i])
    }

    pub fn school(&self, id: &str) -> Option<&School> {
        self.school_index.get(id).map(|&i| &self.schools[i])
    }

    pub fn school_of(&self, classroom_id: &str) -> Option<&School> {
        self.classroom(classroom_id)
            .and_then(|c| self.school(&c.school))
    }

    /// The village classrooms a host classroom invites by default: every classroom of a village
    /// school in the same county.
    pub fn default_invites(&self, host_classroom: &str) -> Vec<String> {
        let Some(host_school) = self.school_of(host_classroom) else {
            return Vec::new();
        };
        self.classrooms
            .iter()
            .filter(|c| c.id != host_classroom)
            .filter(|c| {
                self.school(&c.school).is_some_and(|s| {
                    s.county == host_school.county && s.kind == SchoolKind::Village
                })
            })
            .map(|c| c.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_directory_is_valid_and_indexed() {
        let dir = Directory::demo();
        let host = dir.classroom("c-central-1").expect("host classroom");
        assert_eq!(dir.school(&host.school).unwrap().kind, SchoolKind::Central);
        let invites = dir.default_invites("c-central-1");
        assert_eq!(invites.len(), 3, "{invites:?}");
        assert!(invites.iter().all(|id| id != "c-central-1"));
    }

    #[test]
    fn csv_and_toml_round_trip_and_edits_are_validated() {
        let demo = Directory::demo();
        let csv = demo.to_csv();
        assert_eq!(Directory::from_csv(&csv).unwrap(), demo);
        assert_eq!(Directory::from_toml(&demo.to_toml()).unwrap(), demo);
        assert!(matches!(
            Directory::from_csv("school,s1,校,k-none,village\n"),
            Err(DirectoryError::UnknownCounty { .. })
        ));
        assert!(matches!(
            Directory::from_csv("county,k1,县\nschool,s1,校,k1,castle\n"),
            Err(DirectoryError::CsvRecord { line: 2, .. })
        ));

        let mut dir = demo.clone();
        let orphan = Classroom {
            id: "c-new".into(),
            name: "新教室".into(),
            school: "s-nowhere".into(),
        };
        assert!(dir.upsert_classroom(orphan).is_err());
        assert_eq!(dir, demo, "a failed edit leaves the directory unchanged");
        dir.upsert_classroom(Classroom {
            id: "c-new".into(),
            name: "新教室".into(),
            school: "s-xiacun".into(),
        })
        .unwrap();
        assert_eq!(dir.county_of("c-new"), Some("k-qingshui"));
        assert!(matches!(
            dir.remove_school("s-xiacun"),
            Err(DirectoryError::NotEmpty { children: 2, .. })
        ));
        dir.remove_classroom("c-new").unwrap();
        assert!(dir.classroom("c-new").is_none());
        assert_eq!(dir, demo);
    }

    #[test]
    fn rejects_dangling_references_and_duplicates() {
        let bad_school = r#"
            [[county]]
            id = "k1"
            name = "县"
            [[school]]
            id = "s1"
            name = "校"
            county = "k2"
            kind = "village"
        "#;
        assert!(matches!(
            Directory::from_toml(bad_school),
            Err(DirectoryError::UnknownCounty { .. })
        ));
        let dup = r#"
            [[county]]
            id = "k1"
            name = "县"
            [[county]]
            id = "k1"
            name = "县"
        "#;
        assert!(matches!(
            Directory::from_toml(dup),
            Err(DirectoryError::Duplicate(_))
        ));
        let bad_id = r#"
            [[county]]
            id = "<script>"
            name = "县"
        "#;
        assert!(matches!(
            Directory::from_toml(bad_id),
            Err(DirectoryError::BadId(_))
        ));
    }
}
