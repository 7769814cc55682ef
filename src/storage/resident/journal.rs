//! The journal's files: what was written since the image, as checksummed records.
//!
//! A file is `journal-<number, 20 digits>.jrn`, a run of records
//! `[payload length: u32 LE][crc32 of the payload: u32 LE][payload]`; a payload is whole
//! write batches, `[writes: u32 LE]` then per write `[1 put | 2 delete][key length: u32 LE][key]`
//! and, for a put, `[value length: u32 LE][value]`. A record is atomic: recovery applies all of
//! it or none, so a crash never leaves part of a batch.
//!
//! A file is never appended to after recovery, and the writer fsyncs a file before it starts
//! the next: so only the newest file can end in a torn record (a crash mid-write). Recovery
//! cuts it there. A bad record in any older file is corruption, and the node refuses to start.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::super::fs::{Fs, FsFile};
use super::super::{Write, WriteBatch};
use super::map::Map;

const PREFIX: &str = "journal-";
const SUFFIX: &str = ".jrn";
const HEADER_BYTES: usize = 8;
const PUT: u8 = 1;
const DELETE: u8 = 2;
/// Largest payload read back: a corrupt length must not make recovery allocate gigabytes. A
/// record holds the batches sealed together (see `Policy::record_bytes`), at most one batch
/// over that; a batch is at most a few MiB (the largest value is an idempotency chunk).
pub const RECORD_BYTES_MAX: usize = 256 << 20;

pub fn file_name(number: u64) -> String {
    format!("{PREFIX}{number:020}{SUFFIX}")
}

/// The journal files in `dir`, by number.
pub fn list(fs: &dyn Fs, dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files: Vec<(u64, PathBuf)> = fs
        .list(dir)?
        .into_iter()
        .filter_map(|name| {
            let number = name
                .strip_prefix(PREFIX)?
                .strip_suffix(SUFFIX)?
                .parse()
                .ok()?;
            Some((number, dir.join(name)))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Appends `batch` to a payload being built (see the module docs); `writes` counts them.
pub fn encode_batch(payload: &mut Vec<u8>, writes: &mut u32, batch: &WriteBatch) {
    if payload.is_empty() {
        payload.extend_from_slice(&0u32.to_le_bytes());
    }
    for write in &batch.writes {
        match write {
            Write::Put(key, value) => {
                payload.push(PUT);
                payload.extend_from_slice(&(key.len() as u32).to_le_bytes());
                payload.extend_from_slice(key);
                payload.extend_from_slice(&(value.len() as u32).to_le_bytes());
                payload.extend_from_slice(value);
            }
            Write::Delete(key) => {
                payload.push(DELETE);
                payload.extend_from_slice(&(key.len() as u32).to_le_bytes());
                payload.extend_from_slice(key);
            }
        }
    }
    *writes += batch.writes.len() as u32;
    payload[..4].copy_from_slice(&writes.to_le_bytes());
}

/// A record's bytes: header and payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER_BYTES + payload.len());
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    record.extend_from_slice(payload);
    record
}

/// Applies a payload's writes to `map`; `None` if it does not decode (it passed its checksum,
/// so only a bug writes such a thing).
fn apply_payload(map: &mut Map, payload: &[u8]) -> Option<()> {
    let mut at = 0usize;
    let mut take = |len: usize| -> Option<&[u8]> {
        let bytes = payload.get(at..at.checked_add(len)?)?;
        at += len;
        Some(bytes)
    };
    let u32_at = |bytes: &[u8]| u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize;
    let writes = u32_at(take(4)?);
    for _ in 0..writes {
        let kind = take(1)?[0];
        let key_len = u32_at(take(4)?);
        let key = take(key_len)?;
        match kind {
            PUT => {
                let value_len = u32_at(take(4)?);
                // `take` borrows mutably: copy the key out first.
                let key = key.to_vec();
                let value = take(value_len)?;
                map.put(&key, value);
            }
            DELETE => map.delete(key),
            _ => return None,
        }
    }
    (at == payload.len()).then_some(())
}

/// What replaying one file found.
pub struct Replayed {
    /// Records applied.
    pub records: u64,
    /// Where a torn tail was cut, if the file had one.
    pub cut_at: Option<u64>,
    /// Bytes of the file's whole records (its size, once a torn tail is cut).
    pub bytes: u64,
}

/// Applies every record of the file at `path` to `map`, in order. In the newest file
/// (`newest`), a record that is cut short or fails its checksum ends the journal: the file is
/// cut there (what follows was never made durable, so never relied on). Anywhere else it is
/// corruption.
pub fn replay(fs: &dyn Fs, path: &Path, newest: bool, map: &mut Map) -> io::Result<Replayed> {
    let file: Arc<dyn FsFile> = fs.open(path, false)?;
    let size = file.size()?;
    let mut offset = 0u64;
    let mut records = 0;
    let corrupt = |offset: u64, what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "state journal {} is corrupt at offset {offset}: {what}",
                path.display()
            ),
        )
    };
    while offset < size {
        let torn = |what: &str| -> io::Result<Replayed> {
            if !newest {
                return Err(corrupt(offset, what));
            }
            file.set_len(offset)?;
            file.sync()?;
            Ok(Replayed {
                records,
                cut_at: Some(offset),
                bytes: offset,
            })
        };
        if size - offset < HEADER_BYTES as u64 {
            return torn("a record header cut short");
        }
        let mut header = [0u8; HEADER_BYTES];
        file.read_exact_at(offset, &mut header)?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len == 0 || len > RECORD_BYTES_MAX || (size - offset - HEADER_BYTES as u64) < len as u64
        {
            return torn("a record cut short");
        }
        let mut payload = vec![0u8; len];
        file.read_exact_at(offset + HEADER_BYTES as u64, &mut payload)?;
        if crc32fast::hash(&payload) != crc {
            return torn("a record failing its checksum");
        }
        apply_payload(map, &payload)
            .ok_or_else(|| corrupt(offset, "a record that does not decode"))?;
        records += 1;
        offset += (HEADER_BYTES + len) as u64;
    }
    Ok(Replayed {
        records,
        cut_at: None,
        bytes: offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::SimFs;

    fn batch(writes: Vec<Write>) -> WriteBatch {
        WriteBatch { writes }
    }

    #[test]
    fn payloads_round_trip_puts_and_deletes_in_order() {
        let mut payload = Vec::new();
        let mut writes = 0;
        encode_batch(
            &mut payload,
            &mut writes,
            &batch(vec![
                Write::Put(b"a".to_vec(), b"1".to_vec()),
                Write::Put(b"b".to_vec(), vec![]),
            ]),
        );
        encode_batch(
            &mut payload,
            &mut writes,
            &batch(vec![
                Write::Delete(b"a".to_vec()),
                Write::Put(b"c".to_vec(), b"3".to_vec()),
            ]),
        );
        assert_eq!(writes, 4);
        let mut map = Map::default();
        map.put(b"a", b"old");
        apply_payload(&mut map, &payload).unwrap();
        assert_eq!(map.get(b"a"), None);
        assert_eq!(map.get(b"b"), Some(&b""[..]));
        assert_eq!(map.get(b"c"), Some(&b"3"[..]));
        assert!(apply_payload(&mut map, &payload[..payload.len() - 1]).is_none());
    }

    fn record_of(key: &str) -> Vec<u8> {
        let mut payload = Vec::new();
        encode_batch(
            &mut payload,
            &mut 0,
            &batch(vec![Write::Put(key.as_bytes().to_vec(), b"v".to_vec())]),
        );
        frame(&payload)
    }

    #[test]
    fn a_torn_tail_of_the_newest_file_is_cut_and_elsewhere_is_corruption() {
        let fs = SimFs::new();
        let dir = Path::new("/j");
        fs.create_dir_all(dir).unwrap();
        let path = dir.join(file_name(1));
        let file = fs.open(&path, true).unwrap();
        let first = record_of("a");
        let second = record_of("b");
        file.write_all_at(0, &first).unwrap();
        // The second record, cut short by a crash.
        file.write_all_at(first.len() as u64, &second[..second.len() - 1])
            .unwrap();

        let mut map = Map::default();
        let error = replay(&fs, &path, false, &mut map).err().unwrap();
        assert!(error.to_string().contains("corrupt at offset"), "{error}");

        let mut map = Map::default();
        let replayed = replay(&fs, &path, true, &mut map).unwrap();
        assert_eq!(replayed.records, 1);
        assert_eq!(replayed.cut_at, Some(first.len() as u64));
        assert_eq!(map.len(), 1);
        assert_eq!(file.size().unwrap(), first.len() as u64);

        // A flipped byte inside a record fails its checksum.
        file.write_all_at(first.len() as u64, &second).unwrap();
        file.write_all_at(first.len() as u64 + 9, b"X").unwrap();
        let mut map = Map::default();
        let replayed = replay(&fs, &path, true, &mut map).unwrap();
        assert_eq!((replayed.records, map.get(b"b")), (1, None));
    }
}
