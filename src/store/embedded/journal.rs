//! The callback log's files: numbered segments of checksummed frames, appended in arrival order.
//!
//! A segment is `log/<number>.seg`. It grows in zero-filled steps of [`GROW_BYTES`] (written and
//! synced once), so that the `fdatasync` of a group commit flushes data pages only, never the
//! file's size or extents; it is closed at [`SEGMENT_BYTES`] and the next number opened. A frame
//! is `len: u32 | check: u32 | body`, little-endian, `check` the low half of the body's XXH3. A
//! scan stops at the first frame that is zero, short or fails its check: the end of what was
//! written (a frame torn by a power cut was never acknowledged, since its sync had not returned).
//!
//! Bodies: [`Frame::Event`] (an outbox entry, and the de-duplication mark it carries) and
//! [`Frame::Ack`] (outbox entries delivered or dead-lettered).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use crate::store::StoreError;

/// A segment is closed at this size and the next one begun.
pub(super) const SEGMENT_BYTES: u64 = 64 << 20;
/// A segment grows by this much zero-filled space at a time.
pub(super) const GROW_BYTES: u64 = 1 << 20;
/// Header of a frame: length and check.
pub(super) const HEADER: usize = 8;
/// Largest body accepted by a scan; anything larger is the end of the written data.
const MAX_BODY: u32 = 16 << 20;

const EVENT: u8 = 1;
const ACK: u8 = 2;
/// [`Frame::Event`] flag: the frame carries a de-duplication mark (a replayed dead letter or an
/// entry migrated from an older store does not: its mark lives elsewhere).
const MARKED: u8 = 1;

/// A decoded frame body; `Event` borrows the scan buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Frame<'a> {
    Event(EventFrame<'a>),
    Ack(Vec<u64>),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(super) struct EventFrame<'a> {
    pub seq: u64,
    /// Unix ms when it was recorded.
    pub enqueued_ms: u64,
    /// The event's CreateTime (unix s), the first half of its de-duplication key.
    pub at: u64,
    pub marked: bool,
    pub id: &'a str,
    pub account: &'a str,
    /// The encoded `pb::Event`.
    pub event: &'a [u8],
}

impl EventFrame<'_> {
    /// Where `event` starts inside the frame's body.
    pub fn event_offset_in_body(&self) -> usize {
        1 + 8 + 8 + 8 + 1 + 2 + self.id.len() + 2 + self.account.len()
    }
}

/// Appends one event frame to `buf`; returns the offset of the event bytes inside `buf`.
pub(super) fn put_event(buf: &mut Vec<u8>, frame: &EventFrame<'_>) -> usize {
    let start = begin(buf);
    buf.push(EVENT);
    buf.extend_from_slice(&frame.seq.to_le_bytes());
    buf.extend_from_slice(&frame.enqueued_ms.to_le_bytes());
    buf.extend_from_slice(&frame.at.to_le_bytes());
    buf.push(if frame.marked { MARKED } else { 0 });
    put_str(buf, frame.id);
    put_str(buf, frame.account);
    let event_at = buf.len();
    buf.extend_from_slice(frame.event);
    finish(buf, start);
    event_at
}

/// Appends one ack frame to `buf`.
pub(super) fn put_ack(buf: &mut Vec<u8>, seqs: &[u64]) {
    let start = begin(buf);
    buf.push(ACK);
    for seq in seqs {
        buf.extend_from_slice(&seq.to_le_bytes());
    }
    finish(buf, start);
}

fn begin(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    start
}

fn finish(buf: &mut [u8], start: usize) {
    let body = &buf[start + HEADER..];
    let len = body.len() as u32;
    let check = xxh3_64(body) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&check.to_le_bytes());
}

/// Ids and account ids are short; anything longer than a u16 is cut (ids are validated far
/// below that at the edge).
fn put_str(buf: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    buf.extend_from_slice(&(end as u16).to_le_bytes());
    buf.extend_from_slice(&s.as_bytes()[..end]);
}

/// Decodes a frame body; `None` when it is not a frame this version writes.
pub(super) fn decode(body: &[u8]) -> Option<Frame<'_>> {
    let (&kind, rest) = body.split_first()?;
    match kind {
        EVENT => {
            let mut r = Reader(rest);
            let seq = r.u64()?;
            let enqueued_ms = r.u64()?;
            let at = r.u64()?;
            let flags = r.u8()?;
            let id = r.str()?;
            let account = r.str()?;
            Some(Frame::Event(EventFrame {
                seq,
                enqueued_ms,
                at,
                marked: flags & MARKED != 0,
                id,
                account,
                event: r.0,
            }))
        }
        ACK if rest.len() % 8 == 0 => Some(Frame::Ack(
            rest.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        )),
        _ => None,
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<&'a str> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        std::str::from_utf8(self.take(len)?).ok()
    }
}

/// The log directory inside the store's directory.
pub(super) fn dir(store_dir: &Path) -> PathBuf {
    store_dir.join("log")
}

pub(super) fn segment_path(dir: &Path, number: u32) -> PathBuf {
    dir.join(format!("{number:010}.seg"))
}

/// The segment numbers present, oldest first.
pub(super) fn segments(dir: &Path) -> Result<Vec<u32>, StoreError> {
    let mut numbers = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| io("cannot list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io("cannot list", dir, e))?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        numbers.push(number);
    }
    numbers.sort_unstable();
    Ok(numbers)
}

pub(super) fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {what} {}: {e}", path.display()))
}

/// Opens a segment for reading and writing, creating it (empty) if absent.
pub(super) fn open_segment(dir: &Path, number: u32) -> Result<File, StoreError> {
    let path = segment_path(dir, number);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io("cannot open", &path, e))
}

/// Reads the frames of a segment from `from` up to `to` (or its written end), in 1 MiB reads:
/// calls `each(offset_of_body, body)` for every valid frame in order until it answers false,
/// and returns the offset just past the last frame it accepted.
pub(super) fn scan(
    path: &Path,
    from: u64,
    to: Option<u64>,
    mut each: impl FnMut(u64, &[u8]) -> Result<bool, StoreError>,
) -> Result<u64, StoreError> {
    const CHUNK: usize = 1 << 20;
    let file = File::open(path).map_err(|e| io("cannot open", path, e))?;
    let size = file
        .metadata()
        .map_err(|e| io("cannot read", path, e))?
        .len();
    let limit = to.map_or(size, |to| to.min(size));
    let mut pos = from;
    let mut bytes: Vec<u8> = Vec::new();
    // `bytes` holds the file from `pos` on.
    loop {
        let mut at = 0;
        while let Some(body) = frame_at(&bytes, at) {
            let body_at = pos + (at + HEADER) as u64;
            if body_at + body.len() as u64 > limit || !each(body_at, body)? {
                return Ok(pos + at as u64);
            }
            at += HEADER + body.len();
        }
        // Keep the incomplete rest and read more, unless the file has no more.
        let read_from = pos + bytes.len() as u64;
        if read_from >= limit {
            return Ok(pos + at as u64);
        }
        bytes.drain(..at);
        pos += at as u64;
        let need = frame_len_at(&bytes).unwrap_or(0).max(CHUNK);
        let n = need.min((limit - read_from) as usize);
        let old = bytes.len();
        bytes.resize(old + n, 0);
        file.read_exact_at(&mut bytes[old..], read_from)
            .map_err(|e| io("cannot read", path, e))?;
        if frame_at(&bytes, 0).is_none() && frame_len_at(&bytes).is_none_or(|l| l <= bytes.len()) {
            // Not a frame even with enough bytes: the end of what was written.
            return Ok(pos);
        }
    }
}

/// The whole length of the frame that starts `bytes`, from its header, when it is plausible.
fn frame_len_at(bytes: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
    (len != 0 && len <= MAX_BODY).then_some(HEADER + len as usize)
}

/// The body of the valid frame at `at`, if there is one.
fn frame_at(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let header = bytes.get(at..at + HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?);
    let check = u32::from_le_bytes(header[4..].try_into().ok()?);
    if len == 0 || len > MAX_BODY {
        return None;
    }
    let body = bytes.get(at + HEADER..at + HEADER + len as usize)?;
    (xxh3_64(body) as u32 == check).then_some(body)
}

/// Reads `len` bytes at `offset` (an event inside a frame).
pub(super) fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0; len];
    file.read_exact_at(&mut bytes, offset)?;
    Ok(bytes)
}

/// Extends `file` from `len` to `new_len` with zeros (written, not a hole, so later appends
/// allocate nothing).
pub(super) fn grow(file: &File, len: u64, new_len: u64) -> std::io::Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut at = len;
    while at < new_len {
        let n = (new_len - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(seq: u64, id: &'a str) -> EventFrame<'a> {
        EventFrame {
            seq,
            enqueued_ms: 1_700_000_000_123,
            at: 1_700_000_000,
            marked: seq.is_multiple_of(2),
            id,
            account: "acme",
            event: b"\x0a\x03abc",
        }
    }

    #[test]
    fn frames_round_trip_and_a_scan_stops_at_a_torn_or_zero_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.seg");
        let mut buf = Vec::new();
        let first_event_at = put_event(&mut buf, &event(1, "a"));
        put_ack(&mut buf, &[1, 7]);
        put_event(&mut buf, &event(2, "é"));
        let whole = buf.len();
        // A fourth frame torn in the middle, then zeros.
        put_event(&mut buf, &event(3, "c"));
        buf.truncate(whole + 12);
        buf.extend_from_slice(&[0; 100]);
        std::fs::write(&path, &buf).unwrap();

        let mut seen = Vec::new();
        let end = scan(&path, 0, None, |_, body| {
            seen.push(format!("{:?}", decode(body).unwrap()));
            Ok(true)
        })
        .unwrap();
        assert_eq!(
            end, whole as u64,
            "the scan ends where the torn frame begins"
        );
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0], format!("{:?}", Frame::Event(event(1, "a"))));
        assert_eq!(seen[1], format!("{:?}", Frame::Ack(vec![1, 7])));
        assert_eq!(seen[2], format!("{:?}", Frame::Event(event(2, "é"))));
        assert_eq!(&buf[first_event_at..first_event_at + 5], b"\x0a\x03abc");
        let body_at = HEADER;
        let Some(Frame::Event(e)) = decode(&buf[body_at..first_event_at + 5]) else {
            panic!("not an event")
        };
        assert_eq!(body_at + e.event_offset_in_body(), first_event_at);
    }

    #[test]
    fn a_flipped_bit_ends_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.seg");
        let mut buf = Vec::new();
        put_event(&mut buf, &event(1, "a"));
        let first = buf.len();
        put_event(&mut buf, &event(2, "b"));
        buf[first + HEADER + 3] ^= 0x10;
        std::fs::write(&path, &buf).unwrap();
        let mut n = 0;
        let end = scan(&path, 0, None, |_, _| {
            n += 1;
            Ok(true)
        })
        .unwrap();
        assert_eq!((n, end), (1, first as u64));
    }
}
