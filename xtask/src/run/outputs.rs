//! A stage's recorded outputs as state.json holds them: their JSON text, parsed only by
//! whoever reads them, into the type it wants. The outputs of a sign of 35,000 packages
//! are 15 MB of JSON; held as a `serde_json::Value` they took several times that in
//! memory, and about as long again to parse and to drop, on every command that loaded
//! the run, whether it read them or not.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The JSON text of a stage's outputs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Outputs(Box<RawValue>);

impl Outputs {
    /// The outputs `value` serializes to.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Outputs> {
        serde_json::value::to_raw_value(value).map(Outputs)
    }

    /// `null`: the outputs of a stage that records none.
    pub fn null() -> Outputs {
        Outputs(RawValue::NULL.to_owned())
    }

    /// The outputs read as `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.0.get())
    }

    /// The outputs as a tree of values, for a reader that wants one.
    pub fn value(&self) -> serde_json::Value {
        self.parse().unwrap_or(serde_json::Value::Null)
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for Outputs {
    fn eq(&self, other: &Outputs) -> bool {
        self.text() == other.text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_keep_their_text_and_parse_on_demand() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct O {
            version: String,
            copied: usize,
        }
        let o = Outputs::of(&O { version: "v".into(), copied: 3 }).unwrap();
        assert_eq!(o.text(), r#"{"version":"v","copied":3}"#);
        assert_eq!(o.parse::<O>().unwrap(), O { version: "v".into(), copied: 3 });
        assert_eq!(o.value()["copied"], 3);
        // Inside a record, written and read back: the same text.
        let record = serde_json::to_string_pretty(&vec![o.clone()]).unwrap();
        let back: Vec<Outputs> = serde_json::from_str(&record).unwrap();
        assert_eq!(back, [o]);
        assert_eq!(Outputs::null().value(), serde_json::Value::Null);
    }
}
