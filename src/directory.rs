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
            if counties.insert(c.id.clone(), ()).is_some() {
                return Err(DirectoryError::Duplicate(c.id.clone()));
            }
        }
        self.school_index.clear();
        for (i, s) in self.schools.iter().enumerate() {
            if !valid_id(&s.id) {
                return Err(DirectoryError::BadId(s.id.clone()));
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
