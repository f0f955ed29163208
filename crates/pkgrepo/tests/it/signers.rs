//! Every signer type pkg 2.8.4 has, against the repositories it made (tests/data/pkg-repo-2):
//! the samples verify in their trust mode and no other; native ecc signatures are pkg's
//! bytes exactly (Ed25519 is deterministic) in both layouts, through a key file and a
//! signing command's answer; ecdsa signs and verifies on every curve this crate
//! computes on; what pkg lets pass and a publication should not is refused.

use std::os::unix::fs::PermissionsExt;

use camino::{Utf8Path, Utf8PathBuf};
use pkgrepo::TrustMode;
use pkgrepo::archive::{Archive, Entry};
use pkgrepo::key::read_private_key;
use pkgrepo::keys::{Algorithm, Curve, PrivateKey, PublicKey};
use pkgrepo::sign::{KeySigner, sign_archive};
use pkgrepo::signature::Message;
use pkgrepo::trust::Trust;

use crate::sign::Command;
use crate::{check, copy_sample, data, lines, scratch};

const ECC_FP: &str = "33011c7527dfdfbb00dad7a92fcd06fdfd6dadb81e73bd6a2855217d7ef0b619";
const ECDSA_FP: &str = "110f09c3d070e4216296269c3ee833d1584a8c54f967887f5638edfdb3c55400";

fn key(name: &str) -> Utf8PathBuf {
    data("pkg-repo-2/keys").join(name)
}

fn ecc_trust() -> Trust {
    Trust::pubkey(&key("ecc-repo.pub")).unwrap()
}

fn ecdsa_trust() -> Trust {
    Trust::pubkey(&key("ecdsa-repo.pub")).unwrap()
}

fn ecc_fingerprints() -> Trust {
    Trust::fingerprints(&data("pkg-repo-2/fingerprints-ecc")).unwrap()
}

/// A private key copied to a 0600 file, and a signer of it with its public half.
fn signer(dir: &Utf8Path, private: &Utf8Path, public: &Utf8Path) -> KeySigner {
    let copy = dir.join(private.file_name().unwrap());
    std::fs::copy(private, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    let secret = read_private_key(&copy).unwrap();
    KeySigner::new(&secret, &copy, std::fs::read(public).unwrap(), public).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn pkgs_ecc_key_is_the_ed25519_key_the_readme_names() {
    let public = PublicKey::parse(&std::fs::read(key("ecc-repo.pub")).unwrap()).unwrap();
    assert_eq!(public.algorithm(), Algorithm::Ed25519);
    assert_eq!(public.fingerprint(), ECC_FP);
    assert_eq!(
        public.ed25519().unwrap().to_vec(),
        hex("23e1f8076deb20c8e317704b19d470de723a5fbe800ff3dd042b5c111b192e0a")
    );
    // The private key's scalar times the base point is that same key.
    let private = PrivateKey::parse(&std::fs::read(key("ecc-repo.key")).unwrap()).unwrap();
    assert_eq!(private.algorithm(), Algorithm::Ed25519);
    assert!(private.pairs_with(&public));
    assert_eq!(format!("{private:?}"), "PrivateKey(ecc (Ed25519), <redacted>)");
    let ecdsa = PublicKey::parse(&std::fs::read(key("ecdsa-repo.pub")).unwrap()).unwrap();
    assert_eq!((ecdsa.algorithm(), ecdsa.fingerprint()), (Algorithm::Ecdsa(Curve::Secp384r1), ECDSA_FP));
    assert!(!private.pairs_with(&ecdsa));
    assert!(PrivateKey::parse(&std::fs::read(key("ecdsa-repo.key")).unwrap()).unwrap().pairs_with(&ecdsa));
}

#[test]
fn the_samples_verify_in_their_trust_mode_and_no_other() {
    for (repo, trust, fp) in [
        ("pkg-repo-2/ecc-pubkey", ecc_trust(), ECC_FP),
        ("pkg-repo-2/ecdsa-pubkey", ecdsa_trust(), ECDSA_FP),
        ("pkg-repo-2/ecc-fingerprints", ecc_fingerprints(), ECC_FP),
    ] {
        let r = check(&data(repo), &trust);
        assert!(r.ok(), "{repo}: {:?}", lines(&r));
        assert!(r.signed_by(fp), "{repo}");
        assert_eq!(r.packages().len(), 1);
    }
    // The real client's verdicts in the other mode (pkg-repo-2 README): refused.
    for (repo, trust, says) in [
        ("pkg-repo-2/ecc-fingerprints", ecc_trust(), "only fingerprints-mode signatures"),
        ("pkg-repo-2/ecc-pubkey", ecc_fingerprints(), "only a pubkey-mode `signature` entry"),
        ("pkg-repo-2/ecdsa-pubkey", ecc_trust(), "is signed as ecdsa, but the public key"),
        ("pkg-repo-2/ecc-pubkey", ecdsa_trust(), "is signed as ecc, but the public key"),
        ("pkg-repo-2/hashed", ecc_trust(), "is signed as rsa, but the public key"),
    ] {
        let r = check(&data(repo), &trust);
        let found = lines(&r);
        assert_eq!(found.len(), 2, "{repo}: {found:?}");
        assert!(found.iter().all(|l| l.contains(says)), "{repo}: {found:?}");
        assert!(r.only_signature_problems());
    }
}

/// Signs a copy of the unsigned sample's catalogues and compares each entry with the
/// sample pkg made.
fn sign_like(theirs: &str, mode: TrustMode, signer: &dyn pkgrepo::sign::Signer) -> (crate::Scratch, Utf8PathBuf) {
    let (s, repo) = copy_sample("pkg-repo/unsigned");
    for (archive, inner) in [("data.pkg", "data"), ("packagesite.pkg", "packagesite.yaml")] {
        sign_archive(&repo.join(archive), inner, mode, signer).unwrap();
        let ours = Archive::read(&repo.join(archive)).unwrap();
        let pkg = Archive::read(&data(theirs).join(archive)).unwrap();
        let names = |a: &Archive| a.entries.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&ours), names(&pkg), "{theirs} {archive}");
        for (a, b) in ours.entries.iter().zip(&pkg.entries) {
            assert_eq!(a.data, b.data, "{theirs} {archive}: {}", a.name);
        }
    }
    (s, repo)
}

#[test]
fn native_ecc_signatures_are_pkgs_bytes_in_both_layouts() {
    let s = scratch();
    let ecc = signer(&s.path, &key("ecc-repo.key"), &key("ecc-repo.pub"));
    // Key file, pubkey layout: Ed25519 over the BLAKE2b, `$PKGSIGN:ecc$` + DER.
    let (_s, repo) = sign_like("pkg-repo-2/ecc-pubkey", TrustMode::Pubkey, &ecc);
    assert!(check(&repo, &ecc_trust()).ok());
    // The fingerprints layout from the key file: what pkg's signing command made.
    let (_s, repo) = sign_like("pkg-repo-2/ecc-fingerprints", TrustMode::Fingerprints, &ecc);
    assert!(check(&repo, &ecc_fingerprints()).ok());
}

#[test]
fn a_signing_commands_ecc_answer_gives_pkgs_fingerprints_layout() {
    // What bin/sign-ecc.sh printed for data: TYPE, SIGNATURE, CERT with the binary key
    // and END right after it.
    let pkg = Archive::read(&data("pkg-repo-2/ecc-fingerprints/data.pkg")).unwrap();
    let strip = |e: &Entry| e.data.strip_prefix(b"$PKGSIGN:ecc$").unwrap().to_vec();
    let sig = strip(pkg.find("data.sig").next().unwrap());
    let cert = strip(pkg.find("data.pub").next().unwrap());
    let answer = [b"TYPE\necc\nSIGNATURE\n".as_slice(), &sig, b"\nCERT\n", &cert, b"END\n"].concat();
    let (_s, repo) = copy_sample("pkg-repo/unsigned");
    sign_archive(&repo.join("data.pkg"), "data", TrustMode::Fingerprints, &Command(answer.clone())).unwrap();
    let ours = Archive::read(&repo.join("data.pkg")).unwrap();
    assert_eq!(
        ours.entries,
        pkg.entries.iter().map(|e| Entry { mtime: ours.entries[2].mtime, ..e.clone() }).collect::<Vec<_>>()
    );
    // The same answer cannot sign for pubkey clients: they check Ed25519 over the
    // BLAKE2b, the command signed the hex. Refused before anything is written.
    let before = std::fs::read(repo.join("packagesite.pkg")).unwrap();
    let err = sign_archive(&repo.join("packagesite.pkg"), "packagesite.yaml", TrustMode::Pubkey, &Command(answer))
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("does not verify for pubkey clients") && text.contains("use fingerprints mode"), "{text}");
    assert_eq!(std::fs::read(repo.join("packagesite.pkg")).unwrap(), before);
}

#[test]
fn ecdsa_signs_and_verifies_in_both_layouts_on_every_computable_curve() {
    let s = scratch();
    let dir = data("ecdsa-keys");
    for (curve, private, public) in [
        (Curve::Secp384r1, key("ecdsa-repo.key"), key("ecdsa-repo.pub")),
        (Curve::Secp256k1, dir.join("secp256k1.key"), dir.join("secp256k1.pub")),
        (Curve::Secp521r1, dir.join("secp521r1.key"), dir.join("secp521r1.pub")),
        (Curve::BrainpoolP256t1, dir.join("brainpoolP256t1.key"), dir.join("brainpoolP256t1.pub")),
        (Curve::BrainpoolP384r1, dir.join("brainpoolP384r1.key"), dir.join("brainpoolP384r1.pub")),
    ] {
        let signer = signer(&s.path, &private, &public);
        assert_eq!(signer.algorithm(), Algorithm::Ecdsa(curve));
        for mode in [TrustMode::Pubkey, TrustMode::Fingerprints] {
            let (_s, repo) = copy_sample("pkg-repo/unsigned");
            for (archive, inner) in [("data.pkg", "data"), ("packagesite.pkg", "packagesite.yaml")] {
                sign_archive(&repo.join(archive), inner, mode, &signer).unwrap();
            }
            let entries = Archive::read(&repo.join("data.pkg")).unwrap().entries;
            assert!(entries[0].data.starts_with(b"$PKGSIGN:ecdsa$"), "{curve} {mode}");
            let trust = match mode {
                TrustMode::Pubkey => Trust::pubkey(&public).unwrap(),
                TrustMode::Fingerprints => {
                    let fps = s.path.join(format!("fps-{curve}"));
                    std::fs::create_dir_all(fps.join("trusted")).unwrap();
                    let fp = PublicKey::parse(&std::fs::read(&public).unwrap()).unwrap().fingerprint().to_owned();
                    std::fs::write(fps.join("trusted/key"), pkgrepo::meta::fingerprint_file(&fp)).unwrap();
                    Trust::fingerprints(&fps).unwrap()
                }
            };
            let r = check(&repo, &trust);
            assert!(r.ok(), "{curve} {mode}: {:?}", lines(&r));
        }
    }
}

#[test]
fn keys_and_curves_pkg_refuses_or_that_cannot_be_computed_are_refused_by_name() {
    let dir = data("ecdsa-keys");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let err = PrivateKey::parse(&read("prime256v1.key")).unwrap_err().to_string();
    assert!(err.contains("NIST P-256 (prime256v1), which pkg refuses"), "{err}");
    let err = PublicKey::parse(&read("prime256v1.pub")).unwrap_err().to_string();
    assert!(err.contains("NIST P-256"), "{err}");
    for name in ["brainpoolP512r1.key", "brainpoolP512r1.pub"] {
        let err = match name.ends_with(".key") {
            true => PrivateKey::parse(&read(name)).unwrap_err().to_string(),
            false => PublicKey::parse(&read(name)).unwrap_err().to_string(),
        };
        assert!(
            err.contains("brainpoolP512r1: pkg accepts it, but there is no well-kept Rust implementation"),
            "{err}"
        );
    }
    let err = PrivateKey::parse(&read("secp384r1.pem")).unwrap_err().to_string();
    assert!(err.contains("an EC key in PEM, which pkg does not sign with"), "{err}");
    // An Ed25519 key made by OpenSSL: pkg reads only its own format.
    let spki = hex("302a300506032b6570032100d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    assert!(PublicKey::parse(&spki).unwrap_err().to_string().contains("pkg does not read"));
    let pkcs1 = "-----BEGIN RSA PUBLIC KEY-----\nMAoCAwEAAQIDAQAB\n-----END RSA PUBLIC KEY-----\n";
    assert!(PublicKey::parse(pkcs1.as_bytes()).unwrap_err().to_string().contains("PKCS#1"));
}

#[test]
fn pkgs_own_der_format_for_ecdsa_keys_is_read() {
    // `pkg key --create -t ecdsa` writes secp256k1 keys in pkg's DER format: the
    // secret left-padded to 114 bytes, the public point as X || Y.
    let sec1 = std::fs::read(data("ecdsa-keys/secp256k1.key")).unwrap();
    let spki = std::fs::read(data("ecdsa-keys/secp256k1.pub")).unwrap();
    // SEC1: 30 74 02 01 01 04 20 <32-byte secret> ...; SPKI: the point is the last 65 bytes.
    let secret = &sec1[7..39];
    let point = &spki[spki.len() - 64..];
    let pkg_der = |public: bool, bits: &[u8]| {
        let mut body = Vec::new();
        for s in [&b"pkg"[..], b"\x01", b"ecc", b"SECP256K1"] {
            if s == b"\x01" {
                body.extend_from_slice(&[2, 1, 1]);
            } else {
                body.extend_from_slice(&[0x0c, s.len() as u8]);
                body.extend_from_slice(s);
            }
        }
        body.extend_from_slice(&[1, 1, if public { 0xff } else { 0 }]);
        body.extend_from_slice(&[3, bits.len() as u8 + 2, 0, 4]);
        body.extend_from_slice(bits);
        let len = if body.len() < 128 { vec![body.len() as u8] } else { vec![0x81, body.len() as u8] };
        [vec![0x30], len, body].concat()
    };
    let private = PrivateKey::parse(&pkg_der(false, &[vec![0; 82], secret.to_vec()].concat())).unwrap();
    let public = PublicKey::parse(&pkg_der(true, point)).unwrap();
    assert_eq!(public.algorithm(), Algorithm::Ecdsa(Curve::Secp256k1));
    assert!(private.pairs_with(&public) && private.pairs_with(&PublicKey::parse(&spki).unwrap()));
    let m = Message::of(b"x");
    public
        .verify(
            &m,
            pkgrepo::signature::SignerType::Ecdsa,
            TrustMode::Pubkey,
            &private.sign(&m, TrustMode::Pubkey).unwrap(),
        )
        .unwrap();
    // A public key where a private one is expected, and the reverse, are refused.
    assert!(PrivateKey::parse(&pkg_der(true, point)).is_err());
}

/// A copy of a sample with its data.pkg changed by `f`.
fn edited(sample: &str, f: impl FnOnce(&mut Vec<Entry>)) -> (crate::Scratch, Utf8PathBuf) {
    let (s, repo) = copy_sample(sample);
    let path = repo.join("data.pkg");
    let mut a = Archive::read(&path).unwrap();
    f(&mut a.entries);
    a.write(&path).unwrap();
    (s, repo)
}

fn data_problems(repo: &Utf8Path, trust: &Trust) -> Vec<String> {
    lines(&check(repo, trust)).into_iter().filter(|l| l.starts_with("data.pkg: ")).collect()
}

#[test]
fn what_pkg_lets_pass_is_refused_with_what_it_is() {
    // A doubled ecc `signature` entry: pkg concatenates and ignores the trailing copy.
    let (_s, repo) = edited("pkg-repo-2/ecc-pubkey", |e| {
        let sig = e[0].clone();
        e.insert(1, sig);
    });
    let found = data_problems(&repo, &ecc_trust());
    assert!(found[0].contains("has 2 `signature` entries"), "{found:?}");
    // Bytes after the DER signature.
    let (_s, repo) = edited("pkg-repo-2/ecc-pubkey", |e| e[0].data.extend_from_slice(b"\x30\x00"));
    let found = data_problems(&repo, &ecc_trust());
    assert!(found[0].contains("nothing after it") && found[0].contains("failed to decode signature"), "{found:?}");
    // A header naming a signer pkg does not have.
    let (_s, repo) = edited("pkg-repo-2/ecc-pubkey", |e| {
        e[0].data = [&b"$PKGSIGN:foo$"[..], &e[0].data[13..]].concat();
    });
    assert!(data_problems(&repo, &ecc_trust())[0].contains("'foo' signer not found"));
    // The ecc signature with its header cut: read as rsa, against an ecc key.
    let (_s, repo) = edited("pkg-repo-2/ecc-pubkey", |e| e[0].data.drain(..13).for_each(drop));
    assert!(data_problems(&repo, &ecc_trust())[0].contains("is signed as rsa, but the public key"));
    // Another key's valid entry: an entry that pkg would ignore beside the catalogue.
    let (_s, repo) =
        edited("pkg-repo-2/ecc-pubkey", |e| e.push(Entry { name: "notes".into(), data: b"x".to_vec(), mtime: 0 }));
    let found = data_problems(&repo, &ecc_trust());
    assert_eq!(found, ["data.pkg: holds an entry `notes` that is neither `data` nor a signature (clients ignore it)"]);
    // The catalogue changed after signing.
    let (_s, repo) = edited("pkg-repo-2/ecdsa-pubkey", |e| e[1].data.push(b' '));
    assert!(data_problems(&repo, &ecdsa_trust())[0].contains("does not verify"));
}

#[test]
fn fingerprints_mode_refuses_as_pkg_does_and_more() {
    let fps = ecc_fingerprints();
    // A `.pub` without its header: pkg reads the pair as rsa (and fails).
    let (_s, repo) = edited("pkg-repo-2/ecc-fingerprints", |e| e[1].data.drain(..13).for_each(drop));
    let found = data_problems(&repo, &fps);
    assert!(found[0].contains("`data.sig` says ecc but `data.pub` says rsa"), "{found:?}");
    // Repeated entries: pkg keeps the last.
    let (_s, repo) = edited("pkg-repo-2/ecc-fingerprints", |e| {
        let sig = e[0].clone();
        e.insert(0, sig);
    });
    assert!(data_problems(&repo, &fps)[0].contains("`data.sig` appears twice"));
    // Nine entries: pkg 2.8.2 and later refuse the archive.
    let (_s, repo) = edited("pkg-repo-2/ecc-fingerprints", |e| {
        for i in 0..7 {
            e.insert(0, Entry { name: format!("k{i}.pub"), data: b"x".to_vec(), mtime: 0 });
        }
    });
    assert!(data_problems(&repo, &fps)[0].contains("has 9 .sig/.pub entries; pkg reads at most 8"));
    // An empty entry.
    let (_s, repo) = edited("pkg-repo-2/ecc-fingerprints", |e| e[0].data.clear());
    assert!(data_problems(&repo, &fps)[0].contains("invalid repository signature entry size"));
    // A signer nobody trusts: pkg's "No trusted public keys found".
    let (_s, repo) = copy_sample("pkg-repo-2/ecc-fingerprints");
    let other = crate::fingerprints_trust();
    let found = data_problems(&repo, &other);
    assert!(
        found[0].contains(&format!("fingerprint {ECC_FP} is not in"))
            && found[0].contains("No trusted public keys found"),
        "{found:?}"
    );
    // Revoked, even while trusted.
    let s = scratch();
    let dir = s.path.join("fps");
    crate::copy_tree(&data("pkg-repo-2/fingerprints-ecc"), &dir);
    crate::copy_tree(&data("pkg-repo-2/fingerprints-ecc/trusted"), &dir.join("revoked"));
    let found = data_problems(&repo, &Trust::fingerprints(&dir).unwrap());
    assert!(found[0].contains("which is revoked") && found[0].contains("has been revoked"), "{found:?}");
}

#[test]
fn trust_directories_are_read_as_pkg_reads_them() {
    let s = scratch();
    let err = Trust::fingerprints(&s.path.join("none")).err().unwrap();
    assert!(err.to_string().contains("Error opening the trusted directory"), "{err}");
    std::fs::create_dir_all(s.path.join("empty/trusted")).unwrap();
    let err = Trust::fingerprints(&s.path.join("empty")).err().unwrap();
    assert!(err.to_string().contains("No trusted certificates"), "{err}");
    std::fs::create_dir_all(s.path.join("upper/trusted")).unwrap();
    std::fs::write(s.path.join("upper/trusted/k"), pkgrepo::meta::fingerprint_file(&ECC_FP.to_ascii_uppercase()))
        .unwrap();
    let err = format!("{:#}", Trust::fingerprints(&s.path.join("upper")).err().unwrap());
    assert!(err.contains("upper-case") && err.contains("never match"), "{err}");
}

#[test]
fn eddsa_is_ecc_under_another_name_and_rsa_signs_through_a_command_in_both_layouts() {
    // pkg writes the type as named (`eddsa:KEY` gives `$PKGSIGN:eddsa$`) and verifies it
    // with the same key.
    let (_s, repo) = edited("pkg-repo-2/ecc-pubkey", |e| {
        e[0].data = [&b"$PKGSIGN:eddsa$"[..], &e[0].data[13..]].concat();
    });
    assert!(data_problems(&repo, &ecc_trust()).is_empty());
    // An rsa signing command signs the hex, which is what pubkey clients check for rsa:
    // its answer gives pkg's key-file entry (the signature and one NUL) too.
    let pkg = Archive::read(&data("pkg-repo/production-fingerprints/data.pkg")).unwrap();
    let sig = &pkg.find("data.sig").next().unwrap().data;
    let cert = &pkg.find("data.pub").next().unwrap().data;
    let answer = [b"SIGNATURE\n".as_slice(), sig, b"\nCERT\n", cert, b"END\n"].concat();
    let (_s, repo) = copy_sample("pkg-repo/unsigned");
    sign_archive(&repo.join("data.pkg"), "data", TrustMode::Pubkey, &Command(answer)).unwrap();
    let ours = Archive::read(&repo.join("data.pkg")).unwrap();
    let theirs = Archive::read(&data("pkg-repo/production-pubkey/data.pkg")).unwrap();
    assert_eq!(ours.entries[0].data, theirs.entries[0].data);
}
