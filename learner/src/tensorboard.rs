//! TensorBoard event files: the run's scalars as TensorBoard, CleanRL and
//! Stable-Baselines3 users read them (`tensorboard --logdir runs`).
//!
//! An event file is a sequence of TFRecords, each an `Event` protobuf:
//!
//! ```text
//! u64 length (little-endian) · u32 masked CRC-32C of those 8 bytes ·
//! length bytes of data · u32 masked CRC-32C of the data
//! ```
//!
//! where a masked CRC is `((crc >> 15) | (crc << 17)) + 0xa282ead8` (mod
//! 2³²). The first event names the format (`file_version: "brain.Event:2"`);
//! each further one holds a `Summary` of `(tag, simple_value)` pairs at a
//! step. The messages are declared here with prost (three messages, four
//! fields of TensorFlow's `event.proto` and `summary.proto`), not generated:
//! no published crate writes these files and is maintained, and the format
//! has not changed since 2016.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use flotilla_common::metrics::unix_now;
use prost::Message;

/// The `Event` message, with the fields Flotilla writes.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    /// A member of a oneof in TensorFlow: present even when 0.
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// CRC-32C of `bytes`, masked as TFRecord frames store it.
pub fn masked_crc(bytes: &[u8]) -> u32 {
    let c = CASTAGNOLI.checksum(bytes);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord around `data`.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// The events of a TFRecord file, each frame's checksums verified; an error
/// names the first bad frame. A truncated last frame (a crash mid-write) is
/// dropped, as TensorBoard drops it.
pub fn read_events(bytes: &[u8]) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    let mut at = 0;
    while at + 12 <= bytes.len() {
        let len_bytes = &bytes[at..at + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"));
        if crc != masked_crc(len_bytes) {
            return Err(format!("record at byte {at}: length checksum mismatch"));
        }
        let Some(end) = (at + 12).checked_add(len).filter(|e| e + 4 <= bytes.len()) else {
            break;
        };
        let data = &bytes[at + 12..end];
        let crc = u32::from_le_bytes(bytes[end..end + 4].try_into().expect("4 bytes"));
        if crc != masked_crc(data) {
            return Err(format!("record at byte {at}: data checksum mismatch"));
        }
        events.push(Event::decode(data).map_err(|e| format!("record at byte {at}: {e}"))?);
        at = end + 4;
    }
    Ok(events)
}

/// Appends events to one new event file in a directory.
pub struct EventWriter {
    file: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates `dir` if needed and a new event file in it,
    /// `events.out.tfevents.<unix seconds>.<host>.<pid>` (TensorBoard finds
    /// files by the `tfevents` in their name; a resumed run adds a file).
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .unwrap_or_else(|| "flotilla".into());
        let now = unix_now();
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}",
            now as u64,
            std::process::id()
        ));
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        let mut w = EventWriter {
            file: BufWriter::new(file),
            path,
        };
        w.write(&Event {
            wall_time: now,
            step: 0,
            file_version: Some("brain.Event:2".into()),
            summary: None,
        })?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the finite `values` as scalars at `step` and flushes, so a
    /// running TensorBoard sees them at once and a crash keeps them.
    pub fn scalars(&mut self, step: u64, values: &[(&str, Option<f64>)]) -> std::io::Result<()> {
        let value = values
            .iter()
            .filter_map(|&(tag, v)| {
                v.filter(|v| v.is_finite()).map(|v| SummaryValue {
                    tag: tag.to_owned(),
                    simple_value: Some(v as f32),
                })
            })
            .collect();
        self.write(&Event {
            wall_time: unix_now(),
            step: i64::try_from(step).unwrap_or(i64::MAX),
            file_version: None,
            summary: Some(Summary { value }),
        })
    }

    fn write(&mut self, event: &Event) -> std::io::Result<()> {
        self.file.write_all(&record(&event.encode_to_vec()))?;
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-32C's published check value (the CRC of "123456789") and the
    /// mask worked by hand: 0xE3069283 rotated right by 15 is 0x2507C60D;
    /// plus 0xA282EAD8 is 0xC78AB0E5 (mod 2³²).
    #[test]
    fn the_checksum_is_crc32c_masked_as_tfrecords_mask_it() {
        assert_eq!(CASTAGNOLI.checksum(b"123456789"), 0xE306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xC78A_B0E5);
    }

    /// A scalar event byte by byte: the protobuf written out by hand from
    /// the field numbers and wire types of event.proto and summary.proto.
    #[test]
    fn a_scalar_event_encodes_as_event_proto_says() {
        let e = Event {
            wall_time: 1.5,
            step: 300,
            file_version: None,
            summary: Some(Summary {
                value: vec![SummaryValue {
                    tag: "a".into(),
                    simple_value: Some(0.0),
                }],
            }),
        };
        let mut want = vec![0x09]; // field 1, 64-bit
        want.extend_from_slice(&1.5f64.to_le_bytes());
        want.extend_from_slice(&[0x10, 0xAC, 0x02]); // field 2, varint 300
                                                     // field 5, length 10: Summary { field 1, length 8: Value {
                                                     //   field 1 "a", field 2 (32-bit) 0.0 } }
        want.extend_from_slice(&[0x2A, 10, 0x0A, 8, 0x0A, 1, b'a', 0x15, 0, 0, 0, 0]);
        assert_eq!(e.encode_to_vec(), want);
    }

    #[test]
    fn written_events_read_back_and_a_torn_tail_is_dropped() {
        let dir = flotilla_common::testing::TempDir::new("tb-writer");
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(
            10,
            &[("x", Some(1.0)), ("skip", None), ("nan", Some(f64::NAN))],
        )
        .unwrap();
        w.scalars(20, &[("x", Some(-2.5))]).unwrap();
        let path = w.path().to_owned();
        drop(w);
        assert!(path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("events.out.tfevents."));
        let mut bytes = std::fs::read(&path).unwrap();
        let events = read_events(&bytes).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        let values: Vec<(i64, String, f32)> = events[1..]
            .iter()
            .flat_map(|e| {
                e.summary
                    .as_ref()
                    .unwrap()
                    .value
                    .iter()
                    .map(move |v| (e.step, v.tag.clone(), v.simple_value.unwrap()))
            })
            .collect();
        assert_eq!(
            values,
            [(10, "x".to_owned(), 1.0), (20, "x".to_owned(), -2.5)]
        );
        // A crash mid-record: the complete ones still read.
        bytes.truncate(bytes.len() - 3);
        assert_eq!(read_events(&bytes).unwrap().len(), 2);
        // A flipped bit is caught.
        bytes[14] ^= 1;
        assert!(read_events(&bytes).unwrap_err().contains("checksum"));
    }
}
