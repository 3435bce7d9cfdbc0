//! The run's fingerprint (a hash folded over every processed event) and the optional trace file
//! of events worth plotting (segments stored, parent changes, faults).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// FNV-1a folded over 64-bit words: same seed, same events, same hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceHash(u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

impl Default for TraceHash {
    fn default() -> Self {
        Self(FNV_OFFSET)
    }
}

impl TraceHash {
    pub fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(FNV_PRIME);
    }

    pub fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.word(u64::from(x));
        }
    }

    pub fn value(&self) -> u64 {
        self.0
    }
}

/// One line of the trace file.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceRecord<'a> {
    /// Simulated time, seconds.
    pub t: f64,
    pub node: &'a str,
    pub kind: &'static str,
    pub seq: Option<u64>,
    /// Store time minus publish time, ms (segments).
    pub delay_ms: Option<f64>,
    /// Another node's name, or a reason.
    pub detail: &'a str,
}

/// Trace file format, chosen by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceFormat {
    JsonLines,
    Csv,
}

/// Writes trace records; the first I/O error is kept and reported by [`TraceWriter::finish`].
pub struct TraceWriter {
    out: BufWriter<File>,
    format: TraceFormat,
    error: Option<std::io::Error>,
    pub lines: u64,
}

impl TraceWriter {
    /// `*.csv` writes CSV, anything else JSON lines.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let format = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
            TraceFormat::Csv
        } else {
            TraceFormat::JsonLines
        };
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        if format == TraceFormat::Csv {
            writeln!(out, "t_s,node,kind,seq,delay_ms,detail")?;
        }
        Ok(Self { out, format, error: None, lines: 0 })
    }

    pub fn record(&mut self, r: &TraceRecord<'_>) {
        if self.error.is_some() {
            return;
        }
        let res = match self.format {
            TraceFormat::Csv => writeln!(
                self.out,
                "{:.6},{},{},{},{},{}",
                r.t,
                r.node,
                r.kind,
                r.seq.map(|s| s.to_string()).unwrap_or_default(),
                r.delay_ms.map(|d| format!("{d:.3}")).unwrap_or_default(),
                csv_field(r.detail)
            ),
            TraceFormat::JsonLines => {
                let mut v = serde_json::json!({ "t": r.t, "node": r.node, "kind": r.kind });
                if let Some(s) = r.seq {
                    v["seq"] = s.into();
                }
                if let Some(d) = r.delay_ms {
                    v["delay_ms"] = d.into();
                }
                if !r.detail.is_empty() {
                    v["detail"] = r.detail.into();
                }
                writeln!(self.out, "{v}")
            }
        };
        match res {
            Ok(()) => self.lines += 1,
            Err(e) => self.error = Some(e),
        }
    }

    pub fn finish(mut self) -> std::io::Result<u64> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.flush()?;
        Ok(self.lines)
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_order_and_content() {
        let (mut a, mut b) = (TraceHash::default(), TraceHash::default());
        a.word(1);
        a.word(2);
        b.word(2);
        b.word(1);
        assert_ne!(a, b);
        let mut c = TraceHash::default();
        c.word(1);
        c.word(2);
        assert_eq!(a, c);
    }
}
