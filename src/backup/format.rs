//! The backup file: a small self-describing frame around the state machine's key/value pairs,
//! written and read as a stream, with a SHA-256 over everything.
//!
//! ## Layout (integers little-endian)
//! | bytes | field |
//! |-------|-------|
//! | 8     | magic `"SRBACKUP"` |
//! | 4     | format version ([`FORMAT_VERSION`]) |
//! | 16    | cluster id (0: a cluster founded before identities, which has none) |
//! | 8     | log index of the state (the snapshot point) |
//! | 8     | term of that entry |
//! | 8     | log time at that index, ms since the Unix epoch |
//! | 8     | item count |
//! | ...   | the items: `[key length u32][value length u32][key][value]`, item count times |
//! | 4     | end mark `u32::MAX` |
//! | 32    | SHA-256 of every byte before it |
//!
//! The items are the state machine's `S` range exactly as a snapshot holds it
//! (`storage::keys`): records, reservations and their indexes, the idempotency log, the event
//! feed and its position, the log-time clock. The format version names that layout too: a
//! stockraft whose state layout changes writes a new version and refuses a version it does not
//! know, instead of loading a state it would misread.
//!
//! ## Reading is bounded
//! A reader holds one item at a time. Every length is checked against [`ITEM_BYTES_MAX`] before
//! anything is allocated for it, so a corrupt or hostile length is an error, not a 4 GiB
//! allocation. A reader never trusts the content before it has checked the digest: callers read
//! the whole file once ([`verify`]) before acting on any of it.
//!
//! ## Errors
//! [`FormatError`] names what is wrong (not a backup, an empty file, an unknown version, cut
//! short at byte N, a checksum mismatch, an impossible length, trailing bytes) so that an
//! operator refused by `restore` knows whether the file was cut, damaged or is something else.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use crate::identity::ClusterId;
use crate::storage::KeyValue;

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"SRBACKUP";
/// The version this stockraft writes and the only one it reads: format 5 of the state machine
/// (`storage::snapshots` names the same layout `STKSNAP4`).
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the fixed header: magic, version, cluster id, index, term, log time, item count.
pub const HEADER_BYTES: usize = 8 + 4 + 16 + 8 + 8 + 8 + 8;
/// Bytes of a SHA-256 digest.
pub const DIGEST_BYTES: usize = 32;
/// The key length that marks the end of the items.
const END_MARK: u32 = u32::MAX;
/// The largest key or value a reader accepts: a stored value's own limit (a snapshot's too).
pub const ITEM_BYTES_MAX: usize = crate::storage::DISK_DECODE_LIMIT_BYTES;
/// Bytes read or written per call underneath (a reader's and a writer's buffer).
pub const IO_BUFFER_BYTES: usize = 256 << 10;

/// What the head of a backup says: which cluster, which point of its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub cluster: Option<ClusterId>,
    pub log_index: u64,
    pub log_term: u64,
    pub log_time_ms: u64,
    pub item_count: u64,
}

/// Why a file is not a usable backup.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("the file is empty: not a backup")]
    Empty,
    #[error("not a stockraft backup (the file does not start with {:?})", std::str::from_utf8(MAGIC).unwrap_or("?"))]
    NotABackup,
    #[error(
        "unknown backup format version {found} (this stockraft reads version {})",
        FORMAT_VERSION
    )]
    UnknownVersion { found: u32 },
    #[error("truncated: the file ends at byte {at}, inside {inside}")]
    Truncated { at: u64, inside: &'static str },
    #[error(
        "corrupt: {what} of {length} bytes at byte {at} is over the limit of {}",
        ITEM_BYTES_MAX
    )]
    ImpossibleLength {
        what: &'static str,
        length: u64,
        at: u64,
    },
    #[error("corrupt: the header announces {announced} items, the file holds more")]
    TooManyItems { announced: u64 },
    #[error("corrupt: the header announces {announced} items, the file holds {found}")]
    TooFewItems { announced: u64, found: u64 },
    #[error("checksum mismatch: the file says SHA-256 {stored}, its content hashes to {computed} (damaged or altered)")]
    ChecksumMismatch { stored: String, computed: String },
    #[error("corrupt: bytes after the checksum (from byte {at})")]
    TrailingBytes { at: u64 },
    #[error("reading the backup: {0}")]
    Io(#[from] io::Error),
}

/// Writes a backup to `W` as a stream: header, items, end mark, digest.
pub struct BackupWriter<W: Write> {
    sink: io::BufWriter<W>,
    hasher: Sha256,
    announced: u64,
    written: u64,
    bytes: u64,
}

impl<W: Write> BackupWriter<W> {
    /// Starts a backup with `header` (whose item count the items must then match).
    pub fn new(sink: W, header: &Header) -> io::Result<Self> {
        let mut writer = Self {
            sink: io::BufWriter::with_capacity(IO_BUFFER_BYTES, sink),
            hasher: Sha256::new(),
            announced: header.item_count,
            written: 0,
            bytes: 0,
        };
        writer.put(&encode_header(header))?;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        self.sink.write_all(bytes)
    }

    /// Adds one item.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        assert!(key.len() <= ITEM_BYTES_MAX, "a key over the item limit");
        assert!(value.len() <= ITEM_BYTES_MAX, "a value over the item limit");
        if self.written == self.announced {
            return Err(io::Error::other(format!(
                "backup: more items than the {} announced",
                self.announced
            )));
        }
        self.put(&(key.len() as u32).to_le_bytes())?;
        self.put(&(value.len() as u32).to_le_bytes())?;
        self.put(key)?;
        self.put(value)?;
        self.written += 1;
        Ok(())
    }

    /// Writes the end mark and the digest, flushes, and returns the sink, the digest and the
    /// file's size.
    pub fn finish(mut self) -> io::Result<(W, [u8; DIGEST_BYTES], u64)> {
        if self.written != self.announced {
            return Err(io::Error::other(format!(
                "backup: {} items written, {} announced",
                self.written, self.announced
            )));
        }
        self.put(&END_MARK.to_le_bytes())?;
        let digest: [u8; DIGEST_BYTES] = self.hasher.clone().finalize().into();
        self.sink.write_all(&digest)?;
        let size = self.bytes + DIGEST_BYTES as u64;
        let sink = self.sink.into_inner().map_err(|error| error.into_error())?;
        Ok((sink, digest, size))
    }
}

fn encode_header(header: &Header) -> [u8; HEADER_BYTES] {
    let mut bytes = [0u8; HEADER_BYTES];
    let cluster = header.cluster.map_or(0, |id| id.0);
    let fields: [&[u8]; 7] = [
        MAGIC,
        &FORMAT_VERSION.to_le_bytes(),
        &cluster.to_le_bytes(),
        &header.log_index.to_le_bytes(),
        &header.log_term.to_le_bytes(),
        &header.log_time_ms.to_le_bytes(),
        &header.item_count.to_le_bytes(),
    ];
    let mut at = 0;
    for field in fields {
        bytes[at..at + field.len()].copy_from_slice(field);
        at += field.len();
    }
    assert_eq!(at, HEADER_BYTES, "the header's fields fill it exactly");
    bytes
}

fn decode_header(bytes: &[u8; HEADER_BYTES]) -> Result<Header, FormatError> {
    if &bytes[..8] != MAGIC {
        return Err(FormatError::NotABackup);
    }
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(FormatError::UnknownVersion { found: version });
    }
    let cluster = u128::from_le_bytes(bytes[12..28].try_into().expect("16 bytes"));
    Ok(Header {
        cluster: (cluster != 0).then_some(ClusterId(cluster)),
        log_index: u64_at(28),
        log_term: u64_at(36),
        log_time_ms: u64_at(44),
        item_count: u64_at(52),
    })
}

/// Reads a backup from `R` as a stream, one item at a time; the last call checks the digest.
pub struct BackupReader<R: Read> {
    source: io::BufReader<R>,
    hasher: Sha256,
    header: Header,
    /// Bytes consumed so far (for the errors' positions).
    at: u64,
    read: u64,
    done: bool,
}

impl<R: Read> BackupReader<R> {
    /// Reads and checks the header (magic, version). Nothing after it is checked yet.
    pub fn open(source: R) -> Result<Self, FormatError> {
        let mut source = io::BufReader::with_capacity(IO_BUFFER_BYTES, source);
        let mut head = [0u8; HEADER_BYTES];
        let got = read_full(&mut source, &mut head)?;
        if got == 0 {
            return Err(FormatError::Empty);
        }
        // A short file that is not even a backup's magic is "not a backup", not "truncated".
        if got < MAGIC.len() || &head[..MAGIC.len()] != MAGIC {
            return Err(FormatError::NotABackup);
        }
        if got < HEADER_BYTES {
            return Err(FormatError::Truncated {
                at: got as u64,
                inside: "the header",
            });
        }
        let header = decode_header(&head)?;
        let mut hasher = Sha256::new();
        hasher.update(head);
        Ok(Self {
            source,
            hasher,
            header,
            at: HEADER_BYTES as u64,
            read: 0,
            done: false,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Fills `buffer` (hashed), or fails naming what the file ended inside.
    fn take(&mut self, buffer: &mut [u8], inside: &'static str) -> Result<(), FormatError> {
        let got = read_full(&mut self.source, buffer)?;
        self.at += got as u64;
        if got < buffer.len() {
            return Err(FormatError::Truncated {
                at: self.at,
                inside,
            });
        }
        self.hasher.update(&buffer[..]);
        Ok(())
    }

    fn take_u32(&mut self, inside: &'static str) -> Result<u32, FormatError> {
        let mut bytes = [0u8; 4];
        self.take(&mut bytes, inside)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn take_item_part(&mut self, length: u32, what: &'static str) -> Result<Vec<u8>, FormatError> {
        if length as usize > ITEM_BYTES_MAX {
            return Err(FormatError::ImpossibleLength {
                what,
                length: u64::from(length),
                at: self.at,
            });
        }
        let mut bytes = vec![0u8; length as usize];
        self.take(&mut bytes, what)?;
        Ok(bytes)
    }

    /// The next key and value; `None` once the end mark and the digest have checked out (and
    /// nothing follows them).
    pub fn next_item(&mut self) -> Result<Option<KeyValue>, FormatError> {
        if self.done {
            return Ok(None);
        }
        let key_length = self.take_u32("an item's lengths")?;
        if key_length == END_MARK {
            self.check_end()?;
            self.done = true;
            return Ok(None);
        }
        if self.read == self.header.item_count {
            return Err(FormatError::TooManyItems {
                announced: self.header.item_count,
            });
        }
        let value_length = self.take_u32("an item's lengths")?;
        let key = self.take_item_part(key_length, "a key")?;
        let value = self.take_item_part(value_length, "a value")?;
        self.read += 1;
        Ok(Some((key, value)))
    }

    /// After the end mark: the count, the digest, and nothing after it.
    fn check_end(&mut self) -> Result<(), FormatError> {
        let computed: [u8; DIGEST_BYTES] = self.hasher.clone().finalize().into();
        let mut stored = [0u8; DIGEST_BYTES];
        let got = read_full(&mut self.source, &mut stored)?;
        self.at += got as u64;
        if got < DIGEST_BYTES {
            return Err(FormatError::Truncated {
                at: self.at,
                inside: "the checksum",
            });
        }
        if stored != computed {
            return Err(FormatError::ChecksumMismatch {
                stored: hex(&stored),
                computed: hex(&computed),
            });
        }
        if self.read != self.header.item_count {
            return Err(FormatError::TooFewItems {
                announced: self.header.item_count,
                found: self.read,
            });
        }
        let mut extra = [0u8; 1];
        if read_full(&mut self.source, &mut extra)? != 0 {
            return Err(FormatError::TrailingBytes { at: self.at });
        }
        Ok(())
    }
}

/// Reads until `buffer` is full or the source ends; returns the bytes read.
fn read_full(source: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match source.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// A digest as lowercase hex.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Reads a whole backup, checking every byte; calls `each` on every item (after it was read,
/// before the digest is known: act on the items only once this returned `Ok`).
pub fn verify<R: Read>(
    source: R,
    mut each: impl FnMut(&[u8], &[u8]),
) -> Result<Header, FormatError> {
    let mut reader = BackupReader::open(source)?;
    while let Some((key, value)) = reader.next_item()? {
        each(&key, &value);
    }
    Ok(*reader.header())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(item_count: u64) -> Header {
        Header {
            cluster: Some(ClusterId(0x1234_5678_9abc_def0_1122_3344_5566_7788)),
            log_index: 4_242,
            log_term: 7,
            log_time_ms: 1_765_000_000_000,
            item_count,
        }
    }

    fn items(count: u64) -> Vec<KeyValue> {
        (0..count)
            .map(|i| {
                let key = format!("Sr{i:06}").into_bytes();
                let value = vec![(i % 251) as u8; (i * 37 % 4_000) as usize];
                (key, value)
            })
            .collect()
    }

    fn backup(count: u64) -> Vec<u8> {
        let mut writer = BackupWriter::new(Vec::new(), &header(count)).unwrap();
        for (key, value) in items(count) {
            writer.push(&key, &value).unwrap();
        }
        let (bytes, _, size) = writer.finish().unwrap();
        assert_eq!(size, bytes.len() as u64);
        bytes
    }

    fn read_all(bytes: &[u8]) -> Result<(Header, Vec<KeyValue>), FormatError> {
        let mut found = Vec::new();
        let header = verify(bytes, |key, value| {
            found.push((key.to_vec(), value.to_vec()))
        })?;
        Ok((header, found))
    }

    #[test]
    fn a_backup_round_trips_larger_than_the_buffers() {
        let bytes = backup(500);
        assert!(bytes.len() > 2 * IO_BUFFER_BYTES, "{} bytes", bytes.len());
        let (read_header, found) = read_all(&bytes).unwrap();
        assert_eq!(read_header, header(500));
        assert_eq!(found, items(500));
    }

    #[test]
    fn an_empty_backup_round_trips() {
        let (read_header, found) = read_all(&backup(0)).unwrap();
        assert_eq!(read_header.item_count, 0);
        assert!(found.is_empty());
    }

    #[test]
    fn a_cluster_without_an_id_round_trips_as_none() {
        let bytes = {
            let none = Header {
                cluster: None,
                ..header(0)
            };
            BackupWriter::new(Vec::new(), &none)
                .unwrap()
                .finish()
                .unwrap()
                .0
        };
        assert_eq!(read_all(&bytes).unwrap().0.cluster, None);
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let bytes = backup(20);
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(
                read_all(&damaged).is_err(),
                "a flipped byte {at} was accepted"
            );
        }
    }

    #[test]
    fn a_flipped_byte_in_a_value_is_a_checksum_mismatch() {
        let mut damaged = backup(20);
        damaged[HEADER_BYTES + 200] ^= 1;
        let error = read_all(&damaged).unwrap_err();
        assert!(
            matches!(error, FormatError::ChecksumMismatch { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("checksum mismatch"), "{error}");
    }

    #[test]
    fn a_file_truncated_anywhere_is_refused_as_truncated() {
        let bytes = backup(50);
        let points = [
            9,
            HEADER_BYTES - 1,
            HEADER_BYTES,
            HEADER_BYTES + 3,
            HEADER_BYTES + 9,
            bytes.len() / 2,
            bytes.len() - DIGEST_BYTES - 4,
            bytes.len() - DIGEST_BYTES,
            bytes.len() - 1,
        ];
        for cut in points {
            let error = read_all(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(error, FormatError::Truncated { .. }),
                "cut at {cut}: {error}"
            );
            assert!(error.to_string().contains("truncated"), "{error}");
        }
    }

    #[test]
    fn an_unknown_version_is_refused_naming_it() {
        let mut bytes = backup(3);
        bytes[8..12].copy_from_slice(&9u32.to_le_bytes());
        let error = read_all(&bytes).unwrap_err();
        assert!(
            matches!(error, FormatError::UnknownVersion { found: 9 }),
            "{error}"
        );
        assert!(error.to_string().contains("version 9"), "{error}");
    }

    #[test]
    fn an_empty_file_and_other_files_are_not_backups() {
        assert!(matches!(read_all(b"").unwrap_err(), FormatError::Empty));
        for other in [
            &b"{\"hello\": 1}"[..],
            b"STKSNAP4\0\0\0\0",
            b"SR",
            &[0u8; 200],
        ] {
            let error = read_all(other).unwrap_err();
            assert!(matches!(error, FormatError::NotABackup), "{error}");
        }
    }

    #[test]
    fn bytes_after_the_checksum_are_refused() {
        let mut bytes = backup(3);
        bytes.push(0);
        assert!(matches!(
            read_all(&bytes).unwrap_err(),
            FormatError::TrailingBytes { .. }
        ));
    }

    /// A file whose frame is intact (a correct digest) but which lies about its content: a
    /// length bomb, or more or fewer items than its header announces.
    fn forged(header: &Header, body: &[u8]) -> Vec<u8> {
        let mut bytes = encode_header(header).to_vec();
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(&END_MARK.to_le_bytes());
        let digest: [u8; DIGEST_BYTES] = Sha256::digest(&bytes).into();
        bytes.extend_from_slice(&digest);
        bytes
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_allocating() {
        let mut body = 4u32.to_le_bytes().to_vec();
        body.extend_from_slice(&(u32::MAX - 1).to_le_bytes());
        body.extend_from_slice(b"Sr01");
        let error = read_all(&forged(&header(1), &body)).unwrap_err();
        assert!(
            matches!(
                error,
                FormatError::ImpossibleLength {
                    what: "a value",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn an_item_count_that_disagrees_with_the_items_is_refused() {
        let mut one_item = 1u32.to_le_bytes().to_vec();
        one_item.extend_from_slice(&0u32.to_le_bytes());
        one_item.push(b'S');
        assert!(matches!(
            read_all(&forged(&header(2), &one_item)).unwrap_err(),
            FormatError::TooFewItems {
                announced: 2,
                found: 1
            }
        ));
        assert!(matches!(
            read_all(&forged(&header(0), &one_item)).unwrap_err(),
            FormatError::TooManyItems { announced: 0 }
        ));
    }

    #[test]
    fn a_writer_refuses_more_or_fewer_items_than_announced() {
        let mut writer = BackupWriter::new(Vec::new(), &header(1)).unwrap();
        writer.push(b"a", b"b").unwrap();
        assert!(writer.push(b"c", b"d").is_err());
        let writer = BackupWriter::new(Vec::new(), &header(2)).unwrap();
        assert!(writer.finish().is_err());
    }
}
