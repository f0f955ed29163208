//! The signers sign uses: the release key (natively, [`KeySigner`]) and `signing.command`
//! (pkg's signing_command protocol, run through `proc`).

use anyhow::{Context, Result, bail};
use pkgrepo::sign::{KeySigner, Signed, Signer};
use pkgrepo::signature::Message;
use pkgrepo::signing_command;

use crate::proc::CmdLine;
use crate::run::Log;
use crate::stage::Cx;

/// Signs by running `signing.command` with pkg's signing_command protocol.
pub(crate) struct CommandSigner<'a> {
    pub cmd: CmdLine,
    pub log: &'a Log,
}

impl Signer for CommandSigner<'_> {
    /// pkg's protocol gives the command the hex SHA-256 whatever the layout;
    /// `sign_archive` checks that the answer verifies for the layout.
    fn sign(&self, message: &Message, _layout: pkgrepo::TrustMode) -> Result<Signed, pkgrepo::BoxError> {
        Ok(self.run(message.hex())?)
    }
}

impl CommandSigner<'_> {
    fn run(&self, hex_digest: &str) -> Result<Signed> {
        let out = self.cmd.output_with_input(self.log, &signing_command::request(hex_digest))?;
        if !out.success() {
            bail!(
                "the signing command `{}` {}:\n{}",
                self.cmd,
                out.describe_status(),
                crate::proc::tail_lines(&out.stderr, 10)
            );
        }
        signing_command::parse_response(&out.stdout).with_context(|| format!("the signing command `{}`", self.cmd))
    }
}

/// The signing key, read as signing reads it: a file of mode 0600 or stricter that this
/// process can read, a key of a type pkg signs with, the private half of signing.pubkey
/// (what clients are given). Errors name the files, never the key.
pub(crate) fn key_signer(cx: &Cx) -> Result<KeySigner> {
    let signing = &cx.config().signing;
    let key_path = cx.resolve(&signing.key);
    let pub_path = cx.resolve(&signing.pubkey);
    let secret =
        pkgrepo::key::read_private_key(&key_path).map_err(|e| cx.loaded.error_at("signing.key", format!("{e:#}")))?;
    let cert = std::fs::read(&pub_path)
        .map_err(|e| cx.loaded.error_at("signing.pubkey", format!("cannot read the public key {pub_path}: {e}")))?;
    Ok(KeySigner::new(&secret, &key_path, cert, &pub_path)?)
}
