//! The bytes of pkg's `signing_command:` protocol, so that a signing command can stand
//! in for a key file (`pkg repo DIR signing_command: CMD...`). Running the command is
//! the caller's business; this module formats what it reads and parses what it prints.
//!
//! The command reads the hex SHA-256 to sign and a newline on its stdin, and prints
//! `SIGNATURE`, the raw signature, `CERT`, the PEM public key, `END`, each on lines of
//! their own; it may say `TYPE` and the key type first (pkg's `libpkg/pkg_repo_create.c`,
//! `pkg_repo_sign`).
//!
//! ```
//! use pkgrepo::signing_command::{parse_response, request};
//!
//! let digest = "3e37873f895788288a5c4977c7fb0564db8fa36ad6ef5ada362f28d03eee6d48";
//! assert_eq!(request(digest), format!("{digest}\n").into_bytes());
//! let printed = b"SIGNATURE\n\x01\x02\nCERT\n-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\nEND\n";
//! let signed = parse_response(printed)?;
//! assert_eq!(signed.signature, [1, 2]);
//! assert!(signed.cert.starts_with(b"-----BEGIN PUBLIC KEY-----\n"));
//! # Ok::<(), pkgrepo::Error>(())
//! ```

use crate::error::{Result, bail};
use crate::sign::Signed;

/// What the command reads on its stdin: the hex digest and a newline.
pub fn request(hex_digest: &str) -> Vec<u8> {
    format!("{hex_digest}\n").into_bytes()
}

/// Reads what a signing command printed: optional `TYPE\n<type>\n`, then
/// `SIGNATURE\n<raw bytes>\nCERT\n<PEM>END\n`. As pkg does, lines are read one by one
/// and the last byte of the signature block (the newline after it) is dropped. Only the
/// `rsa` type is accepted.
pub fn parse_response(out: &[u8]) -> Result<Signed> {
    #[derive(PartialEq)]
    enum State {
        Start,
        Type,
        Signature,
        Cert,
        End,
    }
    let mut state = State::Start;
    let (mut signature, mut cert) = (Vec::new(), Vec::new());
    for line in out.split_inclusive(|b| *b == b'\n') {
        match state {
            State::Start | State::End if line == b"SIGNATURE\n" => state = State::Signature,
            State::Start if line == b"TYPE\n" => state = State::Type,
            State::Type => {
                if line != b"rsa\n" {
                    bail!(
                        "the signing command says TYPE {}; only rsa is supported",
                        String::from_utf8_lossy(line).trim()
                    );
                }
                state = State::Start;
            }
            State::Signature if line == b"CERT\n" => state = State::Cert,
            State::Signature => signature.extend_from_slice(line),
            State::Cert if line == b"END\n" => state = State::End,
            State::Cert => cert.extend_from_slice(line),
            _ => {}
        }
    }
    if signature.is_empty() || cert.is_empty() || state != State::End {
        bail!("the signing command's output is not SIGNATURE ... CERT ... END");
    }
    signature.pop();
    Ok(Signed { signature, cert })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_signing_command_protocol() {
        let mut out = b"SIGNATURE\n".to_vec();
        out.extend_from_slice(&[1, b'\n', 2, 3]);
        out.extend_from_slice(b"\nCERT\n-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\nEND\n");
        let s = parse_response(&out).unwrap();
        assert_eq!(s.signature, vec![1, b'\n', 2, 3]);
        assert!(s.cert.starts_with(b"-----BEGIN") && s.cert.ends_with(b"-----\n"));
        let typed = [b"TYPE\nrsa\n".as_slice(), &out].concat();
        assert_eq!(parse_response(&typed).unwrap().signature, s.signature);
        assert!(parse_response(b"nonsense\n").is_err());
        assert!(parse_response(b"SIGNATURE\nx\nCERT\ny\n").is_err(), "no END");
        assert!(
            parse_response(b"TYPE\necdsa\nSIGNATURE\nx\nCERT\ny\nEND\n")
                .unwrap_err()
                .to_string()
                .contains("TYPE ecdsa")
        );
    }
}
