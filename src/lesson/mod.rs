//! Lessons: who hosts, who is invited, join codes, who is connected, who is called on.
//!
//! Pure state owned by the engine task; no I/O, time passed in. The engine turns every change
//! into signaling messages and media routes.

mod code_guard;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Instant;

use crate::auth::{Claims, TokenKey};
use crate::directory::Directory;
use crate::signal::message::{ClassroomView, Invite, LessonView};
use crate::signal::ConnId;

pub use code_guard::CodeGuard;

/// How long a classroom link token is valid at most; it also dies with its lesson.
const CLASSROOM_TOKEN_SECS: i64 = 24 * 3600;
/// Longest lesson title kept.
const MAX_TITLE_CHARS: usize = 100;
/// Most classrooms one lesson may invite.
pub const MAX_INVITED: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LessonError {
    #[error("this classroom already hosts a live lesson")]
    AlreadyLive,
    #[error("unknown classroom {0}")]
    UnknownClassroom(String),
    #[error("a lesson must invite between 1 and {MAX_INVITED} classrooms")]
    BadInviteCount,
    #[error("join code unknown or expired")]
    BadCode,
    #[error("too many wrong codes; wait a minute")]
    TooManyAttempts,
}

#[derive(Debug)]
pub struct Invitee {
    pub classroom_id: String,
    pub code: String,
    pub token: String,
}

#[derive(Debug)]
pub struct Lesson {
    pub id: String,
    pub title: String,
    pub host: String,
    pub invited: Vec<Invitee>,
    pub teacher: Option<ConnId>,
    /// Connected classrooms (not the host) and their connection.
    pub present: BTreeMap<String, ConnId>,
    pub hands: BTreeSet<String>,
    pub called_on: Option<String>,
}

impl Lesson {
    pub fn is_invited(&self, classroom_id: &str) -> bool {
        self.invited.iter().any(|i| i.classroom_id == classroom_id)
    }

    /// Every connection in the lesson: the teacher's first, then the classrooms'.
    pub fn connections(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.teacher
            .into_iter()
            .chain(self.present.values().copied())
    }

    pub fn view(&self, dir: &Directory) -> LessonView {
        let name = |id: &str| {
            dir.classroom(id)
                .map(|c| c.name.clone())
                .unwrap_or_default()
        };
        LessonView {
            lesson_id: self.id.clone(),
            title: self.title.clone(),
            host_classroom_id: self.host.clone(),
            host_name: name(&self.host),
            teacher_connected: self.teacher.is_some(),
            classrooms: self
                .invited
                .iter()
                .map(|i| classroom_view(dir, &i.classroom_id, Some(self)))
                .collect(),
            called_on: self.called_on.clone(),
        }
    }

    pub fn invites(&self, dir: &Directory) -> Vec<Invite> {
        self.invited
            .iter()
            .map(|i| Invite {
                classroom_id: i.classroom_id.clone(),
                name: dir
                    .classroom(&i.classroom_id)
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
                code: i.code.clone(),
                link: format!("/classroom?t={}", i.token),
            })
            .collect()
    }
}

/// A classroom as pages show it; `lesson` tells whether it is connected and has its hand up.
pub fn classroom_view(dir: &Directory, id: &str, lesson: Option<&Lesson>) -> ClassroomView {
    let classroom = dir.classroom(id);
    ClassroomView {
        classroom_id: id.to_string(),
        name: classroom.map(|c| c.name.clone()).unwrap_or_default(),
        school: dir
            .school_of(id)
            .map(|s| s.name.clone())
            .unwrap_or_default(),
        connected: lesson.is_some_and(|l| l.present.contains_key(id)),
        hand_raised: lesson.is_some_and(|l| l.hands.contains(id)),
    }
}

/// Every live lesson, indexed by id, host classroom and join code.
#[derive(Debug, Default)]
pub struct Registry {
    lessons: HashMap<String, Lesson>,
    by_host: HashMap<String, String>,
    by_code: HashMap<String, (String, String)>,
    guard: CodeGuard,
}

impl Registry {
    pub fn get(&self, lesson_id: &str) -> Option<&Lesson> {
        self.lessons.get(lesson_id)
    }

    pub fn get_mut(&mut self, lesson_id: &str) -> Option<&mut Lesson> {
        self.lessons.get_mut(lesson_id)
    }

    pub fn live_for_host(&self, host: &str) -> Option<&Lesson> {
        self.by_host.get(host).and_then(|id| self.lessons.get(id))
    }

    pub fn lessons(&self) -> impl Iterator<Item = &Lesson> {
        self.lessons.values()
    }

    pub fn len(&self) -> usize {
        self.lessons.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lessons.is_empty()
    }

    /// Starts a lesson hosted by `host`, with fresh codes and link tokens for each invitee.
    pub fn start(
        &mut self,
        dir: &Directory,
        key: &TokenKey,
        host: &str,
        title: &str,
        invited: &[String],
        now_unix: i64,
    ) -> Result<&Lesson, LessonError> {
        if self.by_host.contains_key(host) {
            return Err(LessonError::AlreadyLive);
        }
        if dir.classroom(host).is_none() {
            return Err(LessonError::UnknownClassroom(host.to_string()));
        }
        let mut unique: Vec<&String> = Vec::new();
        for id in invited {
            if dir.classroom(id).is_none() || id == host {
                return Err(LessonError::UnknownClassroom(id.clone()));
            }
            if !unique.contains(&id) {
                unique.push(id);
            }
        }
        if unique.is_empty() || unique.len() > MAX_INVITED {
            return Err(LessonError::BadInviteCount);
        }
        let id = format!("L{}", uuid::Uuid::new_v4().simple());
        let invited = unique
            .into_iter()
            .map(|classroom_id| {
                let code = self.fresh_code();
                self.by_code
                    .insert(code.clone(), (id.clone(), classroom_id.clone()));
                Invitee {
                    classroom_id: classroom_id.clone(),
                    token: key.sign(&Claims::Classroom {
                        lesson: id.clone(),
                        classroom: classroom_id.clone(),
                        exp: now_unix + CLASSROOM_TOKEN_SECS,
                    }),
                    code,
                }
            })
            .collect();
        let title: String = title.trim().chars().take(MAX_TITLE_CHARS).collect();
        let lesson = Lesson {
            id: id.clone(),
            title,
            host: host.to_string(),
            invited,
            teacher: None,
            present: BTreeMap::new(),
            hands: BTreeSet::new(),
            called_on: None,
        };
        self.by_host.insert(host.to_string(), id.clone());
        Ok(self.lessons.entry(id).or_insert(lesson))
    }

    fn fresh_code(&self) -> String {
        loop {
            let code = format!("{:06}", rand::random_range(0..1_000_000u32));
            if !self.by_code.contains_key(&code) {
                return code;
            }
        }
    }

    /// Resolves a join code to (lesson id, classroom id), counting wrong guesses per address.
    pub fn resolve_code(
        &mut self,
        code: &str,
        addr: IpAddr,
        now: Instant,
    ) -> Result<(String, String), LessonError> {
        if !self.guard.allows(addr, now) {
            return Err(LessonError::TooManyAttempts);
        }
        match self.by_code.get(code.trim()) {
            Some(found) => Ok(found.clone()),
            None => {
                self.guard.record_failure(addr, now);
                Err(LessonError::BadCode)
            }
        }
    }

    /// Removes the lesson; its codes and tokens stop working at once.
    pub fn end(&mut self, lesson_id: &str) -> Option<Lesson> {
        let lesson = self.lessons.remove(lesson_id)?;
        self.by_host.remove(&lesson.host);
        for invitee in &lesson.invited {
            self.by_code.remove(&invitee.code);
        }
        Some(lesson)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started() -> (Registry, Directory, String) {
        let dir = Directory::demo();
        let key = TokenKey::new(b"k".to_vec());
        let mut reg = Registry::default();
        let invited = dir.default_invites("c-central-1");
        let id = reg
            .start(&dir, &key, "c-central-1", " 数学 ", &invited, 1000)
            .unwrap()
            .id
            .clone();
        (reg, dir, id)
    }

    #[test]
    fn start_issues_unique_codes_and_one_lesson_per_host() {
        let (mut reg, dir, id) = started();
        let lesson = reg.get(&id).unwrap();
        assert_eq!(lesson.title, "数学");
        assert_eq!(lesson.invited.len(), 3);
        let codes: BTreeSet<_> = lesson.invited.iter().map(|i| i.code.clone()).collect();
        assert_eq!(codes.len(), 3);
        assert!(codes.iter().all(|c| c.len() == 6));
        let key = TokenKey::new(b"k".to_vec());
        assert_eq!(
            reg.start(
                &dir,
                &key,
                "c-central-1",
                "again",
                &["c-xiacun-1".into()],
                1000
            )
            .err(),
            Some(LessonError::AlreadyLive)
        );
    }

    #[test]
    fn codes_resolve_until_the_lesson_ends() {
        let (mut reg, _dir, id) = started();
        let invitee = &reg.get(&id).unwrap().invited[0];
        let (code, classroom) = (invitee.code.clone(), invitee.classroom_id.clone());
        let addr: IpAddr = "127.0.0.1".parse().unwrap();
        let now = Instant::now();
        assert_eq!(
            reg.resolve_code(&code, addr, now),
            Ok((id.clone(), classroom))
        );
        reg.end(&id);
        assert_eq!(
            reg.resolve_code(&code, addr, now),
            Err(LessonError::BadCode)
        );
        assert!(reg.live_for_host("c-central-1").is_none());
    }

    #[test]
    fn rejects_unknown_or_self_invites() {
        let dir = Directory::demo();
        let key = TokenKey::new(b"k".to_vec());
        let mut reg = Registry::default();
        for invited in [vec!["nope".to_string()], vec!["c-central-1".to_string()]] {
            assert!(matches!(
                reg.start(&dir, &key, "c-central-1", "t", &invited, 0),
                Err(LessonError::UnknownClassroom(_))
            ));
        }
        assert_eq!(
            reg.start(&dir, &key, "c-central-1", "t", &[], 0).err(),
            Some(LessonError::BadInviteCount)
        );
    }
}
