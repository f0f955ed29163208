//! File identities, and indexes of what was found out about files while their identity
//! holds: a file verified once need not be read again until it changes.
//!
//! An [`Identity`] is what the file system says about a file without reading it:
//! device, inode, size, modification time and change time. Rewriting a file in place
//! changes its modification time; setting that back (`touch -r`, `utimensat`) changes
//! its change time, which no unprivileged call can set. The change time also moves
//! when a hard link to the file is made or removed, so an index of files that are
//! linked elsewhere (publish's versions) compares without it ([`Strength`]).
//!
//! [`Produced`] holds the identities of the files a stage produced, recorded in its
//! outputs and compared before the stage is skipped.
//!
//! An [`Index`] maps paths (relative to a directory) to an identity and a value (the
//! digests found). It is a JSON file written atomically; one that is missing, damaged,
//! of another schema or larger than its bound reads as empty, so it is rebuilt, never
//! trusted.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What the file system says about a file, without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "IdentityRow", into = "IdentityRow")]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

/// An identity as the index stores it: `[dev, ino, size, mtime, mtime_nsec, ctime, ctime_nsec]`.
#[derive(Serialize, Deserialize)]
struct IdentityRow(u64, u64, u64, i64, i64, i64, i64);

impl From<IdentityRow> for Identity {
    fn from(r: IdentityRow) -> Identity {
        Identity { dev: r.0, ino: r.1, size: r.2, mtime: (r.3, r.4), ctime: (r.5, r.6) }
    }
}

impl From<Identity> for IdentityRow {
    fn from(i: Identity) -> IdentityRow {
        IdentityRow(i.dev, i.ino, i.size, i.mtime.0, i.mtime.1, i.ctime.0, i.ctime.1)
    }
}

impl Identity {
    /// The identity in `m` (from `stat`, symlinks followed).
    pub fn of(m: &Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// The identity `path` has now (symlinks followed).
    pub fn of_path(path: &Utf8Path) -> Result<Identity> {
        let m = std::fs::metadata(path).with_context(|| format!("cannot stat {path}"))?;
        Ok(Identity::of(&m))
    }

    /// Whether `other` is this file, unchanged, compared as `strength` says.
    pub fn same(&self, other: &Identity, strength: Strength) -> bool {
        self.dev == other.dev
            && self.ino == other.ino
            && self.size == other.size
            && self.mtime == other.mtime
            && (strength == Strength::WithoutCtime || self.ctime == other.ctime)
    }
}

/// A directory open to look files up relative to it: one short path walk per file
/// instead of the whole path's (35,000 lookups in a full ports tree's pool).
pub struct Dir {
    path: Utf8PathBuf,
    fd: Option<std::fs::File>,
}

/// What is at a name, as [`Dir::lstat`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A regular file, with its identity.
    File(Identity),
    /// A symlink, a directory or anything else.
    Other,
}

impl Dir {
    /// `path`, open (when it cannot be, names are looked up by their whole path).
    pub fn open(path: &Utf8Path) -> Dir {
        let fd = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(path).ok();
        Dir { path: path.to_owned(), fd }
    }

    /// What is at `rel` (relative to the directory), a symlink at its end not followed.
    pub fn lstat(&self, rel: &str) -> std::io::Result<Found> {
        use std::os::fd::AsRawFd;
        let found = |regular: bool, id: Identity| if regular { Found::File(id) } else { Found::Other };
        let Some(fd) = &self.fd else {
            let m = std::fs::symlink_metadata(self.path.join(rel))?;
            return Ok(found(m.is_file(), Identity::of(&m)));
        };
        let name = std::ffi::CString::new(rel).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: an all-zero stat is a valid value for fstatat to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid directory descriptor, a NUL-terminated name and a stat to fill.
        let rc = unsafe { libc::fstatat(fd.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        let id = Identity {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as u64,
            mtime: (i64::from(st.st_mtime), i64::from(st.st_mtime_nsec)),
            ctime: (i64::from(st.st_ctime), i64::from(st.st_ctime_nsec)),
        };
        Ok(found(st.st_mode & libc::S_IFMT == libc::S_IFREG, id))
    }
}

/// How identities are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strength {
    /// Every field: a file rewritten in place with its modification time set back is
    /// still told apart.
    Full,
    /// Without the change time, for files hard-linked after they were recorded (a link
    /// moves it): only a rewrite that sets the modification time back goes unseen.
    WithoutCtime,
}

/// The files a stage produced, by the name its outputs give each, with the identity
/// each had when the stage ended. A file rewritten in place (even at the same size) or
/// replaced has another. They are compared [`Strength::WithoutCtime`]: publish
/// hard-links the packages sign and bulk produced, which moves their change time, and a
/// no-op `release` must not redo those stages for it; only bytes changed with the
/// modification time forged back go unseen (catching those would mean hashing every
/// output on every release).
///
/// Keyed by the name as a string, not a path: a path compares component by component,
/// which showed in the profile of loading the record of 35,000 packages.
///
/// Read from a record, it keeps its JSON text and reads it only when asked (`intact`,
/// `add`, comparing): a stage that reads sign's record to publish it never looks at
/// these 35,000 identities, which were half the time of reading the record.
#[derive(Debug, Clone, Default)]
pub struct Produced(ProducedRepr);

#[derive(Debug, Clone)]
enum ProducedRepr {
    Files(BTreeMap<String, Identity>),
    /// As read from a record, not yet parsed.
    Text(Box<serde_json::value::RawValue>),
}

impl Default for ProducedRepr {
    fn default() -> Self {
        ProducedRepr::Files(BTreeMap::new())
    }
}

impl Produced {
    /// The files and their identities; `None` when the text read is not such a map.
    fn files(&self) -> Option<std::borrow::Cow<'_, BTreeMap<String, Identity>>> {
        match &self.0 {
            ProducedRepr::Files(f) => Some(std::borrow::Cow::Borrowed(f)),
            ProducedRepr::Text(t) => serde_json::from_str(t.get()).ok().map(std::borrow::Cow::Owned),
        }
    }

    /// Records the identity of the file at `path` under `name`.
    pub fn add(&mut self, name: impl Into<Utf8PathBuf>, path: &Utf8Path) -> Result<()> {
        if let ProducedRepr::Text(_) = self.0 {
            let files = self.files().context("the produced files recorded cannot be read")?.into_owned();
            self.0 = ProducedRepr::Files(files);
        }
        let ProducedRepr::Files(files) = &mut self.0 else { unreachable!("made a map above") };
        files.insert(name.into().into_string(), Identity::of_path(path)?);
        Ok(())
    }

    /// Whether every file recorded still has its identity; `path(name)` says where the
    /// file named `name` is. (A stage recorded before identities were has none: its
    /// other checks decide.) A record whose identities cannot be read is not intact.
    pub fn intact(&self, path: impl Fn(&Utf8Path) -> Utf8PathBuf) -> bool {
        self.files().is_some_and(|files| {
            files.iter().all(|(name, id)| {
                Identity::of_path(&path(Utf8Path::new(name))).is_ok_and(|now| now.same(id, Strength::WithoutCtime))
            })
        })
    }
}

impl PartialEq for Produced {
    fn eq(&self, other: &Produced) -> bool {
        match (&self.0, &other.0) {
            (ProducedRepr::Text(a), ProducedRepr::Text(b)) if a.get() == b.get() => true,
            _ => self.files().is_some_and(|a| other.files().is_some_and(|b| a == b)),
        }
    }
}

impl Eq for Produced {}

impl Serialize for Produced {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match &self.0 {
            ProducedRepr::Files(f) => f.serialize(s),
            ProducedRepr::Text(t) => t.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Produced {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Produced, D::Error> {
        Ok(Produced(ProducedRepr::Text(Deserialize::deserialize(d)?)))
    }
}

/// An index file: what was found out about each file, by path, while its identity holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Index<T> {
    schema: u32,
    strength: Strength,
    files: BTreeMap<String, (Identity, T)>,
}

/// The file: `{"schema": N, "files": [[PATH, IDENTITY, VALUE], ...]}`, sorted by path.
#[derive(Serialize, Deserialize)]
struct Stored<T> {
    schema: u32,
    files: Vec<(String, Identity, T)>,
}

impl<T: Serialize + DeserializeOwned> Index<T> {
    /// An empty index of this schema.
    pub fn new(schema: u32, strength: Strength) -> Index<T> {
        Index { schema, strength, files: BTreeMap::new() }
    }

    /// Reads the index at `path`: empty when it is missing, larger than `max_bytes`,
    /// damaged or of another schema.
    pub fn read(path: &Utf8Path, schema: u32, strength: Strength, max_bytes: u64) -> Index<T> {
        let mut index = Index::new(schema, strength);
        let Ok(file) = std::fs::File::open(path) else { return index };
        if file.metadata().map_or(true, |m| m.len() > max_bytes) {
            return index;
        }
        let mut bytes = Vec::new();
        if std::io::Read::read_to_end(&mut std::io::Read::take(file, max_bytes), &mut bytes).is_err() {
            return index;
        }
        if let Ok(stored) = serde_json::from_slice::<Stored<T>>(&bytes)
            && stored.schema == schema
        {
            index.files = stored.files.into_iter().map(|(p, id, v)| (p, (id, v))).collect();
        }
        index
    }

    /// Writes the index to `path` atomically.
    pub fn write(&self, path: &Utf8Path) -> Result<()>
    where
        T: Clone,
    {
        let files: Vec<(&String, &Identity, &T)> = self.files.iter().map(|(p, (id, v))| (p, id, v)).collect();
        let mut text = serde_json::to_vec(&StoredRef { schema: self.schema, files })?;
        text.push(b'\n');
        crate::fsx::write_atomic(path, &text)
    }

    /// What was recorded for `rel`, when the file now has the recorded identity
    /// (`now`: its metadata, just read).
    pub fn get(&self, rel: &str, now: &Metadata) -> Option<&T> {
        let (id, value) = self.files.get(rel)?;
        id.same(&Identity::of(now), self.strength).then_some(value)
    }

    /// What was recorded for `rel`, when the file now has the recorded identity `now`.
    pub fn get_by_identity(&self, rel: &str, now: &Identity) -> Option<&T> {
        let (id, value) = self.files.get(rel)?;
        id.same(now, self.strength).then_some(value)
    }

    /// What was recorded for `rel`, whatever the file is now.
    pub fn recorded(&self, rel: &str) -> Option<&(Identity, T)> {
        self.files.get(rel)
    }

    /// Records `value` for the file `rel` of identity `id`.
    pub fn insert(&mut self, rel: String, id: Identity, value: T) {
        self.files.insert(rel, (id, value));
    }

    /// Adds the entries of `other`, which win over this index's; whether that changed
    /// anything.
    pub fn extend(&mut self, other: Index<T>) -> bool
    where
        T: PartialEq,
    {
        let mut changed = false;
        for (path, entry) in other.files {
            match self.files.get_mut(&path) {
                Some(had) if *had == entry => {}
                Some(had) => {
                    *had = entry;
                    changed = true;
                }
                None => {
                    self.files.insert(path, entry);
                    changed = true;
                }
            }
        }
        changed
    }

    /// Keeps only the entries `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Identity, &T) -> bool) {
        self.files.retain(|p, (id, v)| keep(p, id, v));
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// [`Stored`], borrowed for writing.
#[derive(Serialize)]
struct StoredRef<'a, T> {
    schema: u32,
    files: Vec<(&'a String, &'a Identity, &'a T)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> (tempfile::TempDir, camino::Utf8PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = camino::Utf8PathBuf::from_path_buf(d.path().to_owned()).unwrap();
        (d, p)
    }

    #[test]
    fn an_index_round_trips_and_a_damaged_one_reads_as_empty() {
        let (_d, dir) = scratch();
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        let mut index: Index<String> = Index::new(3, Strength::Full);
        index.insert("f".into(), Identity::of(&meta), "digest".into());
        let path = dir.join("index.json");
        index.write(&path).unwrap();
        let back: Index<String> = Index::read(&path, 3, Strength::Full, 1 << 20);
        assert_eq!(back.get("f", &meta).map(String::as_str), Some("digest"));
        assert!(Index::<String>::read(&path, 4, Strength::Full, 1 << 20).is_empty(), "another schema");
        assert!(Index::<String>::read(&path, 3, Strength::Full, 10).is_empty(), "over its bound");
        std::fs::write(&path, b"{\"schema\":3,\"files\":[[\"f\",[1,2]").unwrap();
        assert!(Index::<String>::read(&path, 3, Strength::Full, 1 << 20).is_empty(), "damaged");
        assert!(Index::<String>::read(&dir.join("absent"), 3, Strength::Full, 1 << 20).is_empty());
    }

    #[test]
    fn a_file_rewritten_at_the_same_size_is_no_longer_intact() {
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(dir.path()).unwrap();
        std::fs::write(dir.join("a"), "one").unwrap();
        let mut produced = Produced::default();
        produced.add("a", &dir.join("a")).unwrap();
        assert!(produced.intact(|n| dir.join(n)));
        // The same bytes a tick later: another modification time.
        let before = Identity::of_path(&dir.join("a")).unwrap();
        while Identity::of_path(&dir.join("a")).unwrap() == before {
            std::fs::write(dir.join("a"), "two").unwrap();
        }
        assert!(!produced.intact(|n| dir.join(n)));
        // Replaced by another file whose time is set back: another inode.
        let mut produced = Produced::default();
        produced.add("a", &dir.join("a")).unwrap();
        let times = std::fs::File::open(dir.join("a")).unwrap().metadata().unwrap().modified().unwrap();
        std::fs::write(dir.join("b"), "two").unwrap();
        std::fs::File::options().write(true).open(dir.join("b")).unwrap().set_modified(times).unwrap();
        std::fs::rename(dir.join("b"), dir.join("a")).unwrap();
        assert!(!produced.intact(|n| dir.join(n)));
        std::fs::remove_file(dir.join("a")).unwrap();
        assert!(!produced.intact(|n| dir.join(n)), "a missing file is not intact");
    }

    #[test]
    fn produced_read_from_a_record_is_the_one_written() {
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(dir.path()).unwrap();
        std::fs::write(dir.join("a"), "one").unwrap();
        std::fs::write(dir.join("b"), "two").unwrap();
        let mut produced = Produced::default();
        produced.add("a", &dir.join("a")).unwrap();
        let text = serde_json::to_string(&produced).unwrap();
        let read: Produced = serde_json::from_str(&text).unwrap();
        // Kept as text: written again byte for byte, equal, and checked when asked.
        assert_eq!(serde_json::to_string(&read).unwrap(), text);
        assert_eq!(read, produced);
        assert!(read.intact(|n| dir.join(n)));
        let mut more = read.clone();
        more.add("b", &dir.join("b")).unwrap();
        assert_ne!(more, produced);
        assert!(more.intact(|n| dir.join(n)));
        assert_eq!(serde_json::from_str::<Produced>(&serde_json::to_string(&more).unwrap()).unwrap(), more);
        // Identities that cannot be read are never intact, nor can more be added.
        let mut damaged: Produced = serde_json::from_str(r#"{"a":[1,2]}"#).unwrap();
        assert!(!damaged.intact(|n| dir.join(n)));
        assert!(damaged.add("b", &dir.join("b")).is_err());
    }

    #[test]
    fn a_lookup_in_an_open_directory_finds_what_stat_finds() {
        let (_d, dir) = scratch();
        std::fs::create_dir(dir.join("All")).unwrap();
        std::fs::write(dir.join("All/a.pkg"), b"abc").unwrap();
        std::os::unix::fs::symlink("a.pkg", dir.join("All/l.pkg")).unwrap();
        let m = std::fs::symlink_metadata(dir.join("All/a.pkg")).unwrap();
        for d in [Dir::open(&dir), Dir { path: dir.clone(), fd: None }] {
            assert_eq!(d.lstat("All/a.pkg").unwrap(), Found::File(Identity::of(&m)));
            assert_eq!(d.lstat("All/l.pkg").unwrap(), Found::Other, "a symlink is not followed");
            assert_eq!(d.lstat("All").unwrap(), Found::Other);
            assert_eq!(d.lstat("All/none.pkg").unwrap_err().kind(), std::io::ErrorKind::NotFound);
        }
    }

    #[test]
    fn the_change_time_counts_only_at_full_strength() {
        let a = Identity { dev: 1, ino: 2, size: 3, mtime: (4, 5), ctime: (6, 7) };
        let linked = Identity { ctime: (8, 0), ..a };
        assert!(!a.same(&linked, Strength::Full));
        assert!(a.same(&linked, Strength::WithoutCtime));
        assert!(!a.same(&Identity { mtime: (4, 6), ..a }, Strength::WithoutCtime));
        assert!(!a.same(&Identity { ino: 9, ..a }, Strength::WithoutCtime));
    }
}
