//! The bytes of pkg's `signing_command:` protocol, so that a signing command can stand
//! in for a key file (`pkg repo DIR signing_command: CMD...`). Running the command is
//! the caller's business; this module formats what it reads and parses what it prints,
//! with pkg 2.8.4's rules (`libpkg/pkg_repo_create.c`, `pkg_repo_sign`;
//! `docs/reference/pkg-signers.md` §6).
//!
//! The command reads the hex SHA-256 to sign and a newline on its stdin (and must not
//! wait for end of file: pkg keeps stdin open until it has the answer). It prints, each
//! marker on a line of its own: optionally `TYPE` and the signer type, `SIGNATURE` and
//! the signature followed by a newline, `CERT` and the public key, then `END` (which may
//! directly follow a binary key, as pkg allows).
//!
//! ```
//! use pkgrepo::signature::SignerType;
//! use pkgrepo::signing_command::{parse_response, request};
//!
//! let digest = "3e37873f895788288a5c4977c7fb0564db8fa36ad6ef5ada362f28d03eee6d48";
//! assert_eq!(request(digest), format!("{digest}\n").into_bytes());
//! let printed = b"SIGNATURE\n\x01\x02\nCERT\n-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\nEND\n";
//! let signed = parse_response(printed)?;
//! assert_eq!((signed.signer, signed.signature.as_slice()), (SignerType::Rsa, &[1u8, 2][..]));
//! assert!(signed.cert.starts_with(b"-----BEGIN PUBLIC KEY-----\n"));
//! # Ok::<(), pkgrepo::Error>(())
//! ```

use crate::error::{Result, bail};
use crate::sign::Signed;
use crate::signature::{SignerType, check_type_name};

/// An answer longer than this is refused (a signature and a key are a few kilobytes).
pub const MAX_RESPONSE: usize = 4 << 20;

/// What the command reads on its stdin: the hex digest and a newline.
pub fn request(hex_digest: &str) -> Vec<u8> {
    format!("{hex_digest}\n").into_bytes()
}

/// Reads what a signing command printed, line by line as pkg does: a line that is
/// exactly `SIGNATURE`, `CERT` or `TYPE` starts that block, `END` stops reading, lines
/// before the first marker are dropped, every other line is appended to the current
/// block. Then the signature's last byte (the newline after it) is dropped; a key that
/// ends with `END\n` without `END` having been a line of its own loses those 4 bytes;
/// the type loses one trailing newline, and no type means rsa.
///
/// Stricter than pkg, which publishes whatever it got (and crashes on an empty
/// signature): the answer must have a signature, a key and an `END`, and name one of
/// pkg's signer types.
pub fn parse_response(out: &[u8]) -> Result<Signed> {
    #[derive(PartialEq, Clone, Copy)]
    enum Block {
        None,
        Type,
        Signature,
        Cert,
    }
    if out.len() > MAX_RESPONSE {
        bail!("the signing command printed {} bytes; an answer is at most {MAX_RESPONSE}", out.len());
    }
    let mut block = Block::None;
    let (mut typ, mut signature, mut cert) = (Vec::new(), Vec::new(), Vec::new());
    let mut end_seen = false;
    for line in out.split_inclusive(|b| *b == b'\n') {
        match line {
            b"SIGNATURE\n" => block = Block::Signature,
            b"CERT\n" => block = Block::Cert,
            b"TYPE\n" => block = Block::Type,
            b"END\n" => {
                end_seen = true;
                break;
            }
            _ => match block {
                Block::None => {}
                Block::Type => typ.extend_from_slice(line),
                Block::Signature => signature.extend_from_slice(line),
                Block::Cert => cert.extend_from_slice(line),
            },
        }
    }
    if !end_seen {
        if !cert.ends_with(b"END\n") {
            bail!("the signing command's output does not end with END (it must print SIGNATURE ... CERT ... END)");
        }
        cert.truncate(cert.len() - 4);
    }
    if signature.pop().is_none() || signature.is_empty() {
        bail!("the signing command's output has no SIGNATURE block (or an empty one)");
    }
    if cert.is_empty() {
        bail!("the signing command's output has no CERT block (or an empty one)");
    }
    let signer = if typ.is_empty() {
        SignerType::Rsa
    } else {
        let name = typ.strip_suffix(b"\n").unwrap_or(&typ);
        let Ok(name) = std::str::from_utf8(name) else {
            bail!("the signing command's TYPE is not text");
        };
        check_type_name(name).map_err(|e| crate::error::Error::msg(format!("the signing command's TYPE: {e}")))?
    };
    Ok(Signed { signer, signature, cert })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_signing_command_protocol_as_pkg_does() {
        let mut out = b"noise before any marker\nSIGNATURE\n".to_vec();
        out.extend_from_slice(&[1, b'\n', 2, 3]);
        out.extend_from_slice(b"\nCERT\n-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\nEND\nignored\n");
        let s = parse_response(&out).unwrap();
        assert_eq!((s.signer, s.signature.as_slice()), (SignerType::Rsa, &[1, b'\n', 2, 3][..]));
        assert!(s.cert.starts_with(b"-----BEGIN") && s.cert.ends_with(b"-----\n"));
        // Everything after TYPE until the next marker is the type, as pkg reads it.
        let typed = [b"TYPE\nrsa\n".as_slice(), &out[24..]].concat();
        assert_eq!(parse_response(&typed).unwrap().signature, s.signature);
        // A binary key followed directly by END, as the ecc sample's command prints it.
        let ecc = b"TYPE\necc\nSIGNATURE\n\x30\x06\nCERT\n\x30\x5e\x0a\x01END\n";
        let s = parse_response(ecc).unwrap();
        assert_eq!(
            (s.signer, s.signature.as_slice(), s.cert.as_slice()),
            (SignerType::Ecc, &b"\x30\x06"[..], &b"\x30\x5e\x0a\x01"[..])
        );
        for (bad, says) in [
            (&b"nonsense\n"[..], "does not end with END"),
            (b"SIGNATURE\nx\nCERT\ny\n", "does not end with END"),
            (b"SIGNATURE\n\nCERT\ny\nEND\n", "no SIGNATURE block"),
            (b"SIGNATURE\nx\nEND\n", "no CERT block"),
            (b"TYPE\nfoo\nSIGNATURE\nx\nCERT\ny\nEND\n", "`foo` is not one of pkg's signers"),
            (b"TYPE\nabcdefghijklmnopqrstuvwxyz\nSIGNATURE\nx\nCERT\ny\nEND\n", "longer than the 21 characters"),
        ] {
            let err = parse_response(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{:?}: {err}", String::from_utf8_lossy(bad));
        }
    }
}
