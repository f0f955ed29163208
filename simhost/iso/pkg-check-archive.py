#!/usr/bin/env python3
"""Part of the pkg(8) stand-in (simhost/iso/pkg): checks one catalogue archive's
signature as pkg 2.8.4's client does, printing the client's words on stderr, with an
implementation independent of mother-build's (Python's `cryptography`).

usage: pkg-check-archive.py TAR INNER OUT pubkey KEYFILE
       pkg-check-archive.py TAR INNER OUT fingerprints DIR

TAR is the decompressed archive; INNER is extracted to OUT when the archive is
accepted. Exit 0: accepted; 1: refused (the words are printed).

Behaviour, from docs/reference/pkg-signers.md and pkg-client.md (pkg's libpkg/pkg_repo.c,
pkg_repo_archive_extract_check_archive, pkg_repo_extract_member,
pkg_repo_meta_extract_signature_pubkey/_fingerprints, pkg_repo_parse_sigkeys,
pkg_repo_check_fingerprint, pkg_repo_load_fingerprints; libpkg/pkgsign_ossl.c;
libpkg/pkgsign_ecc.c):
- members: the inner file once (a second copy: `duplicate repository archive entry`);
  signature members 1 byte to 1 MiB (`invalid repository signature entry size`);
  at most 8 .sig/.pub members (`too many repository signature entries`);
- pubkey mode: every `signature` member concatenated; `$PKGSIGN:TYPE$` header or rsa;
  rsa: PKCS#1 v1.5 SHA-256 over the hex SHA-256, one trailing NUL dropped; ecc/eddsa:
  Ed25519 over the raw BLAKE2b-512; ecdsa: ECDSA-SHA256 over the raw BLAKE2b-512;
  DER signatures read from the first object only (trailing bytes ignored);
- fingerprints mode: .sig/.pub by name, the last member of a name wins, the pair's
  type from the last member read; trust files from DIR/trusted and DIR/revoked;
  every type signs the hex; rsa keeps a trailing NUL (and so fails).
"""

import hashlib
import os
import sys
import tarfile

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

MAX_SIG = 1 << 20
MAX_ENTRIES = 8
HEAD = b"$PKGSIGN:"
SIGNERS = ("rsa", "ecc", "eddsa", "ecdsa")
OSSL_DECODER = "error reading public key: error:1E08010C:DECODER routines::unsupported"


def say(*lines):
    for line in lines:
        sys.stderr.write("pkg: %s\n" % line)


def split(entry):
    """pkg_repo_parse_sigkeys: the type from a `$PKGSIGN:TYPE$` header, else rsa."""
    if entry.startswith(HEAD):
        end = entry.find(b"$", len(HEAD))
        if end >= 0:
            return entry[len(HEAD):end].decode("latin-1"), entry[end + 1:]
    return "rsa", entry


# libecc's WEI25519 (ec_params_wei25519.h), and the map to Ed25519 (pkg-signers.md §7).
P = 2**255 - 19
ALPHA_M = 0x2AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAD2451
ALPHA_E = 0x70D9120B9F5FF9442D84F723FC03B0813A5E2C2EB482E57D3391FB5500BA81E7
CURVES = {
    "SECP256K1": ec.SECP256K1(), "SECP384R1": ec.SECP384R1(), "SECP521R1": ec.SECP521R1(),
    "BRAINPOOLP256R1": ec.BrainpoolP256R1(), "BRAINPOOLP384R1": ec.BrainpoolP384R1(),
    "BRAINPOOLP512R1": ec.BrainpoolP512R1(),
}


def der_items(data):
    """The children of pkg's DER key SEQUENCE (short and one-byte long lengths)."""
    def tlv(buf, i):
        tag, n = buf[i], buf[i + 1]
        i += 2
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(buf[i:i + k], "big")
            i += k
        return tag, buf[i:i + n], i + n
    tag, body, _ = tlv(data, 0)
    if tag != 0x30:
        raise ValueError
    items, i = [], 0
    while i < len(body):
        t, v, i = tlv(body, i)
        items.append((t, v))
    return items


def pkg_key(data):
    """pkg's own DER public key: an Ed25519 or an EC public key, else ValueError."""
    items = der_items(data)
    if [t for t, _ in items] != [0x0C, 0x02, 0x0C, 0x0C, 0x01, 0x03] or items[0][1] != b"pkg" \
            or items[2][1] != b"ecc" or items[4][1] == b"\x00" or items[5][1][:2] != b"\x00\x04":
        raise ValueError
    curve, point = items[3][1].decode(), items[5][1][2:]
    if curve == "WEI25519":
        x, v = int.from_bytes(point[:32], "big"), int.from_bytes(point[32:64], "big")
        u = (x - ALPHA_M) % P
        y = (u - 1) * pow(u + 1, -1, P) % P
        xe = ALPHA_E * u * pow(v, -1, P) % P
        raw = bytearray(y.to_bytes(32, "little"))
        raw[31] |= (xe & 1) << 7
        return ed25519.Ed25519PublicKey.from_public_bytes(bytes(raw))
    return ec.EllipticCurvePublicKey.from_encoded_point(CURVES[curve], b"\x04" + point)


def der_signature(sig):
    """ecc_extract_signature: the first DER object, a SEQUENCE of two INTEGERs."""
    items = der_items(sig)
    if len(items) != 2 or any(t != 0x02 for t, _ in items):
        raise ValueError
    return [int.from_bytes(v, "big") for _, v in items]


def verify(signer, key_bytes, sig, inner, fingerprints):
    """One signature, as the signer's verify (or verify_cert) does; words on failure."""
    digest_hex = hashlib.sha256(inner).hexdigest().encode()
    blake = hashlib.blake2b(inner).digest()
    message = digest_hex if fingerprints else blake
    if signer == "rsa":
        try:
            key = serialization.load_pem_public_key(key_bytes)
            assert isinstance(key, rsa.RSAPublicKey)
        except Exception:
            say(OSSL_DECODER)
            if not fingerprints:
                say(OSSL_DECODER)
            return False
        if not fingerprints and sig.endswith(b"\x00"):
            sig = sig[:-1]
        try:
            key.verify(sig, digest_hex, padding.PKCS1v15(), hashes.SHA256())
            return True
        except InvalidSignature:
            if fingerprints:
                say("signature verification failure")
            else:
                say("%s: signature verification failure" % key_bytes.decode(errors="replace"))
            return False
    try:
        try:
            key = pkg_key(key_bytes)
        except Exception:
            key = serialization.load_der_public_key(key_bytes)
        if signer in ("ecc", "eddsa") and not isinstance(key, ed25519.Ed25519PublicKey):
            raise ValueError
        if signer == "ecdsa" and not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError
    except Exception:
        say("failed to parse key")
        if not fingerprints:
            say("ecc signature verification failure")
        return False
    try:
        r, s = der_signature(sig)
    except Exception:
        say("failed to decode signature")
        return False
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(r.to_bytes(32, "big") + s.to_bytes(32, "big"), message)
        else:
            key.verify(utils.encode_dss_signature(r, s), hashlib.sha256(message).digest(),
                       ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        return True
    except (InvalidSignature, ValueError, OverflowError):
        say("failed to verify signature")
        if not fingerprints:
            say("ecc signature verification failure")
        return False


def load_fingerprints(directory, must):
    """pkg_repo_load_fingerprints_from_path: UCL files with function and fingerprint.
    With -r ROOT the directory is opened under ROOT, or on the host when it is missing
    there, but its files are read under ROOT only (pkg-client.md row 31, §9)."""
    found = []
    root = os.environ.get("PKG_STANDIN_ROOT", "")
    try:
        try:
            names = os.listdir(root + directory)
        except OSError:
            names = os.listdir(directory)
    except OSError:
        if must:
            say("Error opening the trusted directory %s" % (root + directory), "Error loading trusted certificates")
            raise SystemExit(1)
        return found
    for name in names:
        path = root + os.path.join(directory, name)
        try:
            text = open(path, encoding="utf-8", errors="replace").read()
        except OSError as e:
            say("cannot load fingerprints from %s: %s" % (path, e.strerror))
            continue
        fields = {}
        for line in text.splitlines():
            if ":" in line or "=" in line:
                k, _, v = line.replace("=", ":", 1).partition(":")
                fields[k.strip().lower()] = v.strip().rstrip(";,").strip().strip('"')
        if "function" in fields and "fingerprint" in fields:
            if fields["function"].lower() != "sha256":
                say("Unsupported hashing function: %s" % fields["function"])
                continue
            found.append(fields["fingerprint"])
    if must and not found:
        say("No trusted certificates")
        raise SystemExit(1)
    return found


def main():
    tar_path, inner_name, out, mode, anchor = sys.argv[1:6]
    members, inner = [], []
    with tarfile.open(tar_path, "r:") as tar:
        for m in tar:
            if not m.isfile():
                continue
            data = tar.extractfile(m).read()
            if m.name == inner_name:
                inner.append(data)
                if len(inner) > 1:
                    say("duplicate repository archive entry: %s" % inner_name)
                    inner = None
                    break
            elif (mode == "pubkey" and m.name == "signature") or \
                    (mode == "fingerprints" and (m.name.endswith(".sig") or m.name.endswith(".pub"))):
                if not 1 <= len(data) <= MAX_SIG:
                    say("invalid repository signature entry size")
                    return 1
                members.append((m.name, data))
                if mode == "fingerprints" and len(members) > MAX_ENTRIES:
                    say("too many repository signature entries", "No signature found")
                    return 1
    if mode == "pubkey":
        if not inner:
            say("No signature found in the repository.  Can not validate against %s key." % anchor)
            return 1
        signer, sig = split(b"".join(d for _, d in members))
        if signer not in SIGNERS:
            say("'%s' signer not found" % signer)
            return 1
        try:
            key_bytes = open(anchor, "rb").read()
        except OSError:
            say("openat(%s): No such file or directory" % anchor)
            sys.stderr.write("free(): invalid pointer\n")
            os.abort()
        if not verify(signer, key_bytes, sig, inner[0], False):
            say("Invalid signature, removing repository.")
            return 1
    else:
        if not members or not inner:
            say("No signature found")
            return 1
        trusted = load_fingerprints(os.path.join(anchor, "trusted"), True)
        revoked = load_fingerprints(os.path.join(anchor, "revoked"), False)
        pairs = {}
        for name, data in members:
            signer, payload = split(data)
            pair = pairs.setdefault(name[:-4], {})
            pair[name[-3:]] = payload
            pair["type"] = signer
        checked = []
        for stem, pair in pairs.items():
            if "pub" not in pair:
                say("No key with name %s has been found" % stem)
                return 1
            if "sig" not in pair:
                say("No signature with name %s has been found" % stem)
                return 1
            fp = hashlib.sha256(pair["pub"]).hexdigest()
            if fp in revoked:
                say("At least one of the certificates has been revoked")
                return 1
            checked.append((pair, fp in trusted))
        if not any(t for _, t in checked):
            say("No trusted public keys found")
            return 1
        ok = False
        for pair, is_trusted in checked:
            if pair["type"] not in SIGNERS:
                say("'%s' signer not found" % pair["type"])
                return 1
            if verify(pair["type"], pair["pub"], pair["sig"], inner[0], True) and is_trusted:
                ok = True
                break
        if not ok:
            say("No trusted certificate has been used to sign the repository")
            return 1
    with open(os.path.join(out, inner_name), "wb") as f:
        f.write(inner[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
