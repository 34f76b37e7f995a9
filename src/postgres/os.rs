//! Who PostgreSQL runs as, and files and directories owned by that user.
//!
//! PostgreSQL refuses to run as root. When pgkeel is root it runs every
//! PostgreSQL program as `postgresql.os_user` and makes what it creates
//! (data directory, socket directory, its settings files) owned by that
//! user; otherwise everything runs as pgkeel's own user.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::PgError;

/// An OS account, as `getpwnam_r` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OsUser {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory, exported as `HOME` to the programs.
    pub home: PathBuf,
}

/// The account PostgreSQL programs run as, and whether pgkeel must switch
/// to it (only when pgkeel runs as root).
#[derive(Clone, Debug)]
pub struct Identity {
    /// The account owning the data directory and running the postmaster.
    pub pg: OsUser,
    /// pgkeel's own login name: pgkeel connects over the socket as it, and
    /// `pg_ident.conf` maps it to the superuser role.
    pub agent_name: String,
    /// True when each child must switch from root to `pg`.
    pub switch: bool,
}

impl Identity {
    /// Resolves `os_user` when root, else pgkeel's own account. A missing
    /// user, or `os_user` root, is a [`PgError::Setup`].
    pub fn resolve(os_user: &str) -> Result<Identity, PgError> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        let me = lookup_uid(euid).map_err(PgError::io("looking up pgkeel's own OS user"))?;
        let agent_name = me
            .as_ref()
            .map_or_else(|| euid.to_string(), |u| u.name.clone());
        if euid != 0 {
            let pg = me.ok_or_else(|| {
                PgError::Setup(format!(
                    "pgkeel runs as uid {euid}, which has no entry in the user database — run it as a named user"
                ))
            })?;
            return Ok(Identity {
                pg,
                agent_name,
                switch: false,
            });
        }
        let pg = lookup_name(os_user)
            .map_err(PgError::io(format!("looking up OS user {os_user:?}")))?
            .ok_or_else(|| {
                PgError::Setup(format!(
                    "the OS user \"{os_user}\" (postgresql.os_user) does not exist — create it (e.g. install the postgresql package) or set postgresql.os_user to the user PostgreSQL should run as"
                ))
            })?;
        if pg.uid == 0 {
            return Err(PgError::Setup(format!(
                "postgresql.os_user \"{os_user}\" is root, and PostgreSQL refuses to run as root — set it to an unprivileged user such as postgres"
            )));
        }
        Ok(Identity {
            pg,
            agent_name,
            switch: true,
        })
    }

    /// Checks that an existing directory belongs to the PostgreSQL user: a
    /// start-up error otherwise, since PostgreSQL would refuse it anyway.
    pub fn check_owner(&self, dir: &Path) -> Result<(), PgError> {
        let meta = match fs::metadata(dir) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(PgError::io(format!("reading {}", dir.display()))(e)),
        };
        if meta.uid() == self.pg.uid {
            return Ok(());
        }
        let owner = lookup_uid(meta.uid()).ok().flatten().map_or_else(
            || format!("uid {}", meta.uid()),
            |u| format!("\"{}\"", u.name),
        );
        Err(PgError::Setup(format!(
            "the data directory {} is owned by {owner}, not by \"{}\" who runs PostgreSQL — run `chown -R {} {}` or set postgresql.os_user to its owner",
            dir.display(),
            self.pg.name,
            self.pg.name,
            dir.display()
        )))
    }

    /// Creates `dir` (and missing parents, 0755) with `mode`, owned by the
    /// PostgreSQL user; an existing directory keeps its contents but gets
    /// the mode. Then checks the user can reach it through every parent.
    pub fn create_dir(&self, dir: &Path, mode: u32) -> Result<(), PgError> {
        let ctx = || format!("creating directory {}", dir.display());
        if let Some(parent) = dir.parent() {
            fs::create_dir_all(parent).map_err(PgError::io(ctx()))?;
        }
        match fs::create_dir(dir) {
            Ok(()) => self.chown(dir)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.check_owner(dir)?,
            Err(e) => return Err(PgError::io(ctx())(e)),
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(PgError::io(ctx()))?;
        self.check_reachable(dir)
    }

    /// Writes a file owned by the PostgreSQL user, mode 0600, atomically
    /// (a temporary file renamed over the old one).
    pub fn write_file(&self, path: &Path, content: &str) -> Result<(), PgError> {
        let ctx = || format!("writing {}", path.display());
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".pgkeel-tmp");
        let tmp = PathBuf::from(tmp);
        let _ = fs::remove_file(&tmp);
        {
            use std::io::Write;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(PgError::io(ctx()))?;
            f.write_all(content.as_bytes())
                .map_err(PgError::io(ctx()))?;
        }
        self.chown(&tmp)?;
        fs::rename(&tmp, path).map_err(PgError::io(ctx()))
    }

    fn chown(&self, path: &Path) -> Result<(), PgError> {
        if !self.switch {
            return Ok(());
        }
        std::os::unix::fs::chown(path, Some(self.pg.uid), Some(self.pg.gid)).map_err(PgError::io(
            format!("giving {} to {}", path.display(), self.pg.name),
        ))
    }

    /// PostgreSQL cannot use a directory below a parent it may not enter
    /// (a `mktemp -d` parent is 0700 root): say so instead of letting
    /// initdb fail with "permission denied".
    fn check_reachable(&self, dir: &Path) -> Result<(), PgError> {
        if !self.switch {
            return Ok(());
        }
        for parent in dir.ancestors().skip(1) {
            let Ok(meta) = fs::metadata(parent) else {
                continue;
            };
            let mode = meta.mode();
            let can_enter = if meta.uid() == self.pg.uid {
                mode & 0o100 != 0
            } else if meta.gid() == self.pg.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !can_enter {
                return Err(PgError::Setup(format!(
                    "\"{}\" cannot enter {} (mode {:o}), a parent of {} — run `chmod o+x {}` or choose a data directory elsewhere",
                    self.pg.name,
                    parent.display(),
                    mode & 0o7777,
                    dir.display(),
                    parent.display()
                )));
            }
        }
        Ok(())
    }
}

/// `getpwnam_r`; `Ok(None)` when no such user.
pub fn lookup_name(name: &str) -> io::Result<Option<OsUser>> {
    let Ok(cname) = CString::new(name) else {
        return Ok(None);
    };
    // SAFETY: the closure passes valid pointers sized by `lookup`.
    lookup(|pwd, buf, len, out| unsafe { libc::getpwnam_r(cname.as_ptr(), pwd, buf, len, out) })
}

/// `getpwuid_r`; `Ok(None)` when no such user.
pub fn lookup_uid(uid: u32) -> io::Result<Option<OsUser>> {
    // SAFETY: the closure passes valid pointers sized by `lookup`.
    lookup(|pwd, buf, len, out| unsafe { libc::getpwuid_r(uid, pwd, buf, len, out) })
}

fn lookup<F>(call: F) -> io::Result<Option<OsUser>>
where
    F: Fn(*mut libc::passwd, *mut libc::c_char, usize, *mut *mut libc::passwd) -> libc::c_int,
{
    let mut len = 1024usize;
    loop {
        let mut buf = vec![0 as libc::c_char; len];
        // SAFETY: passwd is plain old data; zeroed is a valid value.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        let rc = call(&mut pwd, buf.as_mut_ptr(), buf.len(), &mut out);
        if rc == libc::ERANGE && len < 1 << 20 {
            len *= 4;
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if out.is_null() {
            return Ok(None);
        }
        let text = |p: *const libc::c_char| {
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: getpwnam_r filled `buf` with NUL-terminated strings
                // that `pwd` points into; `buf` outlives this use.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        };
        return Ok(Some(OsUser {
            name: text(pwd.pw_name),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home: PathBuf::from(text(pwd.pw_dir)),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_exists_and_nonsense_does_not() {
        let root = lookup_uid(0).ok().flatten();
        assert_eq!(root.map(|u| u.name), Some("root".to_owned()));
        assert_eq!(lookup_name("pgkeel-no-such-user-x").ok(), Some(None));
        assert_eq!(lookup_name("bad\0name").ok(), Some(None));
    }
}
