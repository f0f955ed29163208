//! What a stage produced, as state.json keeps it: compact JSON text, held as text.
//!
//! A signed repository's outputs list every package (35,000 in a full ports tree);
//! as a `serde_json::Value` tree that is a map and a dozen strings per package, over a
//! hundred megabytes, copied whenever a record is. As text it is one string the size of
//! its JSON, parsed into the stage's own outputs type only where it is read.

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// A stage's outputs: one JSON value as compact text (no whitespace outside strings).
#[derive(Debug, Clone)]
pub struct Outputs(Box<RawValue>);

impl Outputs {
    /// The outputs `value` serializes to.
    pub fn new<T: Serialize>(value: &T) -> Result<Outputs> {
        let text = serde_json::to_string(value).context("cannot serialize a stage's outputs")?;
        Ok(Outputs(RawValue::from_string(text).context("a stage's outputs are not JSON")?))
    }

    /// No outputs: JSON `null`.
    pub fn null() -> Outputs {
        Outputs(RawValue::from_string("null".into()).expect("null is JSON"))
    }

    /// The outputs read as `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.0.get())
    }

    /// The compact JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for Outputs {
    fn eq(&self, other: &Outputs) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Serialize for Outputs {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Outputs {
    /// Any JSON value, made compact (state.json is written indented; a value written
    /// compact reads back as the same text).
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Outputs, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        let compact = compact(raw.get());
        if compact.len() == raw.get().len() {
            return Ok(Outputs(raw));
        }
        RawValue::from_string(compact).map(Outputs).map_err(serde::de::Error::custom)
    }
}

/// `json` (valid JSON) without the whitespace outside its strings.
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indented_json_reads_back_as_the_compact_text_of_the_same_value() {
        let value = serde_json::json!({
            "b": [1, 2.5, {"c": "a \"quoted\" \\ string\twith spaces \n"}],
            "a": null, "e": [], "d": {}, "ü": "ß"
        });
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        let outputs: Outputs = serde_json::from_str(&pretty).unwrap();
        assert_eq!(outputs.as_str(), serde_json::to_string(&value).unwrap());
        assert_eq!(outputs.parse::<serde_json::Value>().unwrap(), value);
        // Written inside an indented document and read back: the same text.
        #[derive(Serialize, Deserialize)]
        struct Doc {
            outputs: Outputs,
        }
        let doc = serde_json::to_string_pretty(&Doc { outputs: outputs.clone() }).unwrap();
        let again: Doc = serde_json::from_str(&doc).unwrap();
        assert_eq!(again.outputs, outputs);
    }

    #[test]
    fn typed_outputs_round_trip_and_null_is_null() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct O {
            repo: String,
            packages: Vec<u32>,
        }
        let o = O { repo: "/r".into(), packages: vec![1, 2] };
        let outputs = Outputs::new(&o).unwrap();
        assert_eq!(outputs.parse::<O>().unwrap(), o);
        assert_eq!(Outputs::null().as_str(), "null");
        assert!(outputs.parse::<Vec<u8>>().is_err());
    }
}
