//! Percentile summaries of a histogram, and the portable encoding (HdrHistogram V2 + deflate,
//! base64) that lets results from several runs or shards be merged exactly later.

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

/// Latency figures in microseconds. `hdr` is the whole histogram, encoded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hdr: String,
}

/// Percentiles of `h`. `with_hdr` adds the encoded histogram (results only; snapshots skip it).
pub fn summarize(h: &Histogram<u64>, with_hdr: bool) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary {
            hdr: if with_hdr {
                encode_histogram(h)
            } else {
                String::new()
            },
            ..Default::default()
        };
    }
    LatencySummary {
        count: h.len(),
        min: h.min(),
        mean: (h.mean() * 10.0).round() / 10.0,
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        hdr: if with_hdr {
            encode_histogram(h)
        } else {
            String::new()
        },
    }
}

pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut buf)
        .expect("serializing into a Vec cannot fail");
    base64::engine::general_purpose::STANDARD.encode(buf)
}

pub fn decode_histogram(s: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("not an HdrHistogram: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_round_trip() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let s = summarize(&h, true);
        assert_eq!(s.count, 1000);
        assert_eq!(s.min, 1);
        assert_eq!(s.p50, 500);
        assert_eq!(s.p99, 990);
        assert_eq!(s.max, 1000);
        let back = decode_histogram(&s.hdr).unwrap();
        assert_eq!(back.len(), 1000);
        assert_eq!(back.value_at_quantile(0.9), 900);
        assert!(decode_histogram("not-hdr").is_err());
    }

    #[test]
    fn empty_histogram() {
        let h = Histogram::<u64>::new(3).unwrap();
        let s = summarize(&h, false);
        assert_eq!(s.count, 0);
        assert_eq!(s.max, 0);
        assert!(s.hdr.is_empty());
    }
}
