//! Native signing writes the bytes pkg wrote, in both layouts; the private key is
//! refused when others may read it and never shows in an error or `Debug`.

use std::os::unix::fs::PermissionsExt;

use camino::{Utf8Path, Utf8PathBuf};
use pkgrepo::archive::Archive;
use pkgrepo::key::read_private_key;
use pkgrepo::sign::{KeySigner, Signed, Signer, sign_archive};
use pkgrepo::signature::Message;
use pkgrepo::{BoxError, TrustMode, signing_command};

use crate::{TEST_FP, check, copy_sample, data, fingerprints_trust, lines, pubkey, pubkey_trust, scratch};

/// The test key copied to a 0600 file (git does not keep modes).
fn private_key(dir: &Utf8Path) -> Utf8PathBuf {
    let key = dir.join("test-repo.key");
    std::fs::copy(data("pkg-repo/keys/test-repo.key"), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    key
}

fn key_signer(dir: &Utf8Path) -> KeySigner {
    let key = private_key(dir);
    let secret = read_private_key(&key).unwrap();
    KeySigner::new(&secret, &key, std::fs::read(pubkey()).unwrap(), &pubkey()).unwrap()
}

fn names(a: &Archive) -> Vec<&str> {
    a.entries.iter().map(|e| e.name.as_str()).collect()
}

#[test]
fn native_signatures_equal_the_ones_pkg_wrote() {
    let s = scratch();
    let signer = key_signer(&s.path);
    for (mode, theirs) in
        [(TrustMode::Pubkey, "production-pubkey"), (TrustMode::Fingerprints, "production-fingerprints")]
    {
        for (archive, inner) in [("data.pkg", "data"), ("packagesite.pkg", "packagesite.yaml")] {
            let path = s.path.join(archive);
            std::fs::copy(data("pkg-repo/unsigned").join(archive), &path).unwrap();
            let digest = sign_archive(&path, inner, mode, &signer).unwrap();
            let ours = Archive::read(&path).unwrap();
            let pkg = Archive::read(&data("pkg-repo").join(theirs).join(archive)).unwrap();
            assert_eq!(names(&ours), names(&pkg), "{mode} {archive}");
            for (a, b) in ours.entries.iter().zip(&pkg.entries) {
                assert_eq!(a.data, b.data, "{mode} {archive}: {}", a.name);
            }
            assert_eq!(ours.compression, pkg.compression);
            if archive == "data.pkg" {
                assert_eq!(digest, "3e37873f895788288a5c4977c7fb0564db8fa36ad6ef5ada362f28d03eee6d48");
            }
        }
    }
}

#[test]
fn a_signed_repository_verifies_in_the_mode_it_was_signed_for() {
    let dir = scratch();
    let signer = key_signer(&dir.path);
    for (mode, trust) in [(TrustMode::Pubkey, pubkey_trust()), (TrustMode::Fingerprints, fingerprints_trust())] {
        let (_s, repo) = copy_sample("pkg-repo/unsigned");
        assert!(!check(&repo, &trust).ok());
        for (archive, inner) in [("data.pkg", "data"), ("packagesite.pkg", "packagesite.yaml")] {
            sign_archive(&repo.join(archive), inner, mode, &signer).unwrap();
        }
        let r = check(&repo, &trust);
        assert!(r.ok() && r.signed_by(TEST_FP), "{mode}: {:?}", lines(&r));
        // Signing again replaces the signature entries rather than adding to them.
        sign_archive(&repo.join("data.pkg"), "data", mode, &signer).unwrap();
        assert!(check(&repo, &trust).ok(), "{mode}");
    }
}

/// A signer that answers as a signing command would, by formatting its protocol.
pub struct Command(pub Vec<u8>);

impl Signer for Command {
    fn sign(&self, message: &Message, _layout: TrustMode) -> Result<Signed, BoxError> {
        let hex = message.hex();
        assert_eq!(signing_command::request(hex), format!("{hex}\n").into_bytes());
        Ok(signing_command::parse_response(&self.0)?)
    }
}

#[test]
fn a_signing_commands_answer_gives_the_fingerprints_layout_pkg_wrote() {
    // What pkg's signing command printed for the production catalogue (README).
    let pkg = Archive::read(&data("pkg-repo/production-fingerprints/data.pkg")).unwrap();
    let sig = &pkg.find("data.sig").next().unwrap().data;
    let cert = &pkg.find("data.pub").next().unwrap().data;
    let answer = [b"SIGNATURE\n".as_slice(), sig, b"\nCERT\n", cert, b"END\n"].concat();
    let s = scratch();
    let path = s.path.join("data.pkg");
    std::fs::copy(data("pkg-repo/unsigned/data.pkg"), &path).unwrap();
    sign_archive(&path, "data", TrustMode::Fingerprints, &Command(answer)).unwrap();
    let ours = Archive::read(&path).unwrap();
    assert_eq!(names(&ours), names(&pkg));
    for (a, b) in ours.entries.iter().zip(&pkg.entries) {
        assert_eq!(a.data, b.data, "{}", a.name);
    }
    // A command that answers nonsense signs nothing, and says which archive.
    let err = sign_archive(&path, "data", TrustMode::Fingerprints, &Command(b"oops\n".to_vec())).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!(
            "cannot sign {path}: the signing command's output does not end with END (it must print SIGNATURE ... CERT ... END)"
        )
    );
    assert_eq!(Archive::read(&path).unwrap().entries, ours.entries, "the archive is unchanged");
}

#[test]
fn a_key_readable_by_others_is_refused_and_never_shown() {
    let s = scratch();
    let key = private_key(&s.path);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = read_private_key(&key).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("mode 0644") && text.contains(key.as_str()), "{text}");
    assert_eq!(
        err.help(),
        Some(format!("chmod 0600 {key}, and consider the key exposed if others could read it").as_str())
    );
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let secret = read_private_key(&key).unwrap();
    assert_eq!(format!("{secret:?}"), "SecretBytes(<redacted>)");
}

#[test]
fn keys_native_signing_cannot_use_are_refused_with_what_to_do() {
    let s = scratch();
    let cert = std::fs::read(pubkey()).unwrap();
    let write = |name: &str, text: &str| {
        let path = s.path.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    let encrypted = write(
        "enc.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQww\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let err = KeySigner::new(&read_private_key(&encrypted).unwrap(), &encrypted, cert.clone(), &pubkey())
        .err()
        .expect("an encrypted key is refused");
    assert!(err.message().contains("is encrypted"), "{err}");
    assert!(err.help().unwrap().contains("signing command"), "{err}");
    let garbage = write("garbage.key", "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n");
    let err = KeySigner::new(&read_private_key(&garbage).unwrap(), &garbage, cert, &pubkey())
        .err()
        .expect("garbage is refused");
    assert_eq!(
        err.to_string(),
        format!(
            "the signing key {garbage} cannot be used: it is not a readable PKCS#8 private key (unexpected ASN.1 DER tag: expected SEQUENCE, got APPLICATION [14] (constructed))"
        )
    );
    // The public key must be one.
    let key = private_key(&s.path);
    let err = KeySigner::new(&read_private_key(&key).unwrap(), &key, b"not pem".to_vec(), Utf8Path::new("x.pub"))
        .err()
        .expect("a bad public key is refused");
    assert!(format!("{err:#}").starts_with("x.pub is not a public key pkg reads: "), "{err:#}");
}
