//! The escape-sequence filter: terminal escape sequences and NUL bytes dropped from a
//! console, byte by byte, and the cursor position request a login answers noticed.

/// The escape-sequence filter's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Start,
    /// After ESC and an intermediate byte (`ESC ( B`).
    Intermediate,
    /// Inside a control sequence (`ESC [ ... final`).
    Csi,
}

/// Drops terminal escape sequences and NUL bytes from a console, byte by byte, and
/// notices the one query a login answers: `ESC [ 6 n`, the cursor position request
/// resizewin sends (usr.bin/resizewin/resizewin.c).
#[derive(Debug, Clone)]
pub struct Escapes {
    state: Escape,
    /// Inside a control sequence: 0 nothing yet, 1 the parameter `6` alone, 2 other.
    params: u8,
    /// A cursor position request arrived since [`Escapes::take_query`].
    query: bool,
}

impl Default for Escapes {
    fn default() -> Self {
        Escapes { state: Escape::None, params: 0, query: false }
    }
}

impl Escapes {
    /// Whether plain text passes through unchanged in the current state.
    pub fn in_text(&self) -> bool {
        self.state == Escape::None
    }

    /// The byte as text, or `None` for a byte that is not text.
    pub fn byte(&mut self, b: u8) -> Option<u8> {
        const ESC: u8 = 0x1b;
        match self.state {
            Escape::None => match b {
                ESC => {
                    self.state = Escape::Start;
                    None
                }
                0 => None,
                _ => Some(b),
            },
            Escape::Start => {
                self.state = match b {
                    b'[' => {
                        self.params = 0;
                        Escape::Csi
                    }
                    0x20..=0x2f => Escape::Intermediate,
                    _ => Escape::None,
                };
                None
            }
            Escape::Intermediate => {
                self.state = Escape::None;
                None
            }
            Escape::Csi => match b {
                0x20..=0x3f => {
                    self.params = if b == b'6' && self.params == 0 { 1 } else { 2 };
                    None
                }
                0x40..=0x7e => {
                    if b == b'n' && self.params == 1 {
                        self.query = true;
                    }
                    self.state = Escape::None;
                    None
                }
                // Not a control sequence after all: the byte is text.
                _ => {
                    self.state = Escape::None;
                    self.byte(b)
                }
            },
        }
    }

    /// Whether a cursor position request arrived since the last call.
    pub fn take_query(&mut self) -> bool {
        std::mem::take(&mut self.query)
    }
}
