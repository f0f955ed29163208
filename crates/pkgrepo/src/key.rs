//! The signing key: checked before use, read only into memory, never printed, logged
//! or copied. A key file readable by group or others is refused.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use camino::Utf8Path;
use zeroize::Zeroizing;

use crate::error::{Context, Error, Result, bail};

/// Private key bytes: wiped when dropped, and never shown by `Debug`.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// The bytes, for parsing the key. Do not print, log or copy them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

/// Checks a private key file: a regular file (not a symlink), owned by this user or
/// root, with no permission bits for group or others.
pub fn check_private_key(path: &Utf8Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).with_context(|| format!("cannot read the signing key {path}"))?;
    if meta.file_type().is_symlink() {
        return Err(Error::with_help(
            format!("the signing key {path} is a symlink"),
            "name the key file itself, not a link to it",
        ));
    }
    if !meta.is_file() {
        bail!("the signing key {path} is not a regular file");
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::with_help(
            format!(
                "the signing key {path} is readable or writable by group or others (mode {mode:04o}); refusing to use it"
            ),
            format!("chmod 0600 {path}, and consider the key exposed if others could read it"),
        ));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        bail!("the signing key {path} belongs to uid {}, neither this user ({me}) nor root", meta.uid());
    }
    Ok(())
}

/// Reads a private key after [`check_private_key`].
pub fn read_private_key(path: &Utf8Path) -> Result<SecretBytes> {
    check_private_key(path)?;
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open the signing key {path}"))?;
    // Room for the whole key up front: a buffer that grew would leave copies behind
    // that nothing wipes.
    let len = f.metadata().map_or(0, |m| m.len()).min(1 << 20) as usize;
    let mut buf = Zeroizing::new(Vec::with_capacity(len + 1));
    f.read_to_end(&mut buf).with_context(|| format!("cannot read the signing key {path}"))?;
    Ok(SecretBytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = camino::Utf8PathBuf::from_path_buf(dir.path().join("k.pem")).unwrap();
        std::fs::write(&path, "secret").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_private_key(&path).unwrap_err();
        let (message, help) = (err.to_string(), err.help().unwrap_or_default().to_owned());
        assert!(
            message.contains("mode 0640") && help.starts_with("chmod 0600") && !message.contains("secret"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private_key(&path).unwrap().expose(), b"secret");
        assert_eq!(format!("{:?}", read_private_key(&path).unwrap()), "SecretBytes(<redacted>)");
        let link = path.with_file_name("link.pem");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(read_private_key(&link).unwrap_err().to_string().contains("is a symlink"));
    }
}
