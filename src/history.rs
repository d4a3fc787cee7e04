//! A run's history: one record per epoch, as Keras's `History` keeps it, stored in checkpoints
//! and in history.json. Non-finite values are written as the strings "NaN", "inf", "-inf" (JSON
//! has no numbers for them) and read back from those strings or from null.

use crate::atomic_file::write_atomically;
use crate::system_info::peak_rss_bytes;
use anyhow::Result;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::Path;

/// One epoch's results, as Keras's History records them (plus the time it took).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    #[serde(with = "any_f64")]
    pub loss: f64,
    #[serde(with = "any_f64")]
    pub accuracy: f64,
    #[serde(with = "any_f64")]
    pub val_loss: f64,
    #[serde(with = "any_f64")]
    pub val_accuracy: f64,
    #[serde(with = "any_f64")]
    pub seconds: f64,
    /// The rate of the epoch's last step (Keras's `learning_rate` in History); None in
    /// checkpoints from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
}

/// An f64 that may be NaN or infinite, in JSON.
mod any_f64 {
    use super::*;

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        super::Number(*v).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Number(f64),
            Text(String),
            Null(()),
        }
        match Stored::deserialize(d)? {
            Stored::Number(v) => Ok(v),
            Stored::Null(()) => Ok(f64::NAN),
            Stored::Text(t) => match t.to_ascii_lowercase().as_str() {
                "nan" => Ok(f64::NAN),
                "inf" | "infinity" => Ok(f64::INFINITY),
                "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
                _ => Err(serde::de::Error::custom(format!("'{t}' is not a number"))),
            },
        }
    }
}

/// Serialises as a JSON number, or as "NaN" / "inf" / "-inf".
struct Number(f64);

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            v if v.is_finite() => s.serialize_f64(v),
            v if v.is_nan() => s.serialize_str("NaN"),
            v if v > 0.0 => s.serialize_str("inf"),
            _ => s.serialize_str("-inf"),
        }
    }
}

/// history.json: Keras's `History.history` (a list per metric, `learning_rate` included) plus
/// the epoch numbers, seconds per epoch, the device, the peak memory so far and, with
/// `--early-stopping`, the epoch that stopped the run (0: none) and the epoch whose weights
/// were restored.
pub fn write_history(dir: &Path, history: &[EpochRecord], device: &str, dataset: &str, early_stopping: Option<(usize, usize)>) -> Result<()> {
    let list = |f: fn(&EpochRecord) -> f64| history.iter().map(|r| Number(f(r))).collect::<Vec<_>>();
    let mut json = serde_json::json!({
        "epoch": history.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        "loss": serde_json::to_value(list(|r| r.loss))?,
        "accuracy": serde_json::to_value(list(|r| r.accuracy))?,
        "val_loss": serde_json::to_value(list(|r| r.val_loss))?,
        "val_accuracy": serde_json::to_value(list(|r| r.val_accuracy))?,
        "seconds": serde_json::to_value(list(|r| r.seconds))?,
        "learning_rate": serde_json::to_value(history.iter().map(|r| r.learning_rate.map(Number)).collect::<Vec<_>>())?,
        "device": device,
        "dataset": dataset,
        "peak_rss_bytes": peak_rss_bytes(),
    });
    if let Some((stopped, restored)) = early_stopping {
        json["early_stopping"] = serde_json::json!({ "stopped_epoch": stopped, "restored_epoch": restored });
    }
    write_atomically(&dir.join("history.json"), serde_json::to_string_pretty(&json)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_round_trip_and_null_loads_as_nan() {
        let record = EpochRecord {
            epoch: 1,
            loss: f64::NAN,
            accuracy: 0.5,
            val_loss: f64::INFINITY,
            val_accuracy: f64::NEG_INFINITY,
            seconds: 1.0,
            learning_rate: None,
        };
        let text = serde_json::to_string(&[&record]).unwrap();
        assert!(text.contains(r#""loss":"NaN""#) && text.contains(r#""val_loss":"inf""#), "{text}");
        let back: Vec<EpochRecord> = serde_json::from_str(&text).unwrap();
        assert!(back[0].loss.is_nan() && back[0].val_loss == f64::INFINITY && back[0].val_accuracy == f64::NEG_INFINITY && back[0].accuracy == 0.5);
        // What earlier versions wrote for a NaN loss.
        let old: EpochRecord = serde_json::from_str(r#"{"epoch":2,"loss":null,"accuracy":0.1,"val_loss":null,"val_accuracy":0.1,"seconds":3}"#).unwrap();
        assert!(old.loss.is_nan() && old.val_loss.is_nan() && old.seconds == 3.0);
        assert!(serde_json::from_str::<EpochRecord>(r#"{"epoch":2,"loss":"lots","accuracy":0,"val_loss":0,"val_accuracy":0,"seconds":0}"#).is_err());
    }
}
