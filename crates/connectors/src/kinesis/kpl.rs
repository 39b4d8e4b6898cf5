//! KPL aggregated records: many user records packed into one Kinesis record by the Kinesis
//! Producer Library. Layout: the magic bytes `F3 89 9A C2`, a protobuf `AggregatedRecord`, and
//! the MD5 digest of the protobuf bytes.
//!
//! ```text
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! ```
//!
//! As in the KCL, a record that has the magic bytes but a wrong digest or an unreadable body is
//! delivered as one ordinary record.

use md5::{Digest, Md5};

/// The four bytes that start every aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;

/// One user record inside an aggregated record; its sub-sequence number is its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord<'a> {
    /// The user record's own partition key.
    pub partition_key: &'a str,
    /// The payload.
    pub data: &'a [u8],
}

/// Splits `data` into its user records if it is a valid aggregated record, or returns `None`
/// for an ordinary record.
pub fn deaggregate(data: &[u8]) -> Option<Vec<UserRecord<'_>>> {
    if data.len() < MAGIC.len() + DIGEST_LEN || data[..MAGIC.len()] != MAGIC {
        return None;
    }
    let body = &data[MAGIC.len()..data.len() - DIGEST_LEN];
    let digest = &data[data.len() - DIGEST_LEN..];
    if Md5::digest(body).as_slice() != digest {
        return None;
    }
    parse_aggregate(body)
}

/// Packs `(partition key, data)` records into one aggregated record (what the KPL writes);
/// used by `laketide produce --aggregate` and tests.
pub fn aggregate(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut keys: Vec<&str> = Vec::new();
    let mut body = Vec::new();
    let mut encoded_records = Vec::new();
    for (key, data) in records {
        let index = match keys.iter().position(|k| k == key) {
            Some(i) => i,
            None => {
                keys.push(key);
                keys.len() - 1
            }
        };
        let mut record = Vec::with_capacity(data.len() + 8);
        put_varint(&mut record, 1 << 3); // field 1, varint
        put_varint(&mut record, index as u64);
        put_bytes_field(&mut record, 3, data);
        encoded_records.push(record);
    }
    for key in &keys {
        put_bytes_field(&mut body, 1, key.as_bytes());
    }
    for record in &encoded_records {
        put_bytes_field(&mut body, 3, record);
    }
    let mut out = Vec::with_capacity(MAGIC.len() + body.len() + DIGEST_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&body);
    out.extend_from_slice(Md5::digest(&body).as_slice());
    out
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A protobuf field: its number and value.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Reads protobuf fields from a buffer; `None` on malformed input.
struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.buf.split_first()?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    /// The next field, `Some(None)` at the end, `None` if malformed.
    fn next_field(&mut self) -> Option<Option<(u64, Value<'a>)>> {
        if self.buf.is_empty() {
            return Some(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            _ => return None,
        };
        Some(Some((key >> 3, value)))
    }
}

fn parse_aggregate(body: &[u8]) -> Option<Vec<UserRecord<'_>>> {
    let mut keys = Vec::new();
    let mut raw_records = Vec::new();
    let mut fields = Fields { buf: body };
    while let Some((number, value)) = fields.next_field()? {
        match (number, value) {
            (1, Value::Bytes(key)) => keys.push(std::str::from_utf8(key).ok()?),
            (3, Value::Bytes(record)) => raw_records.push(record),
            _ => {}
        }
    }
    let mut records = Vec::with_capacity(raw_records.len());
    for raw in raw_records {
        let mut key_index = None;
        let mut data = None;
        let mut fields = Fields { buf: raw };
        while let Some((number, value)) = fields.next_field()? {
            match (number, value) {
                (1, Value::Varint(i)) => key_index = Some(usize::try_from(i).ok()?),
                (3, Value::Bytes(d)) => data = Some(d),
                _ => {}
            }
        }
        records.push(UserRecord {
            partition_key: keys.get(key_index?)?,
            data: data?,
        });
    }
    Some(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_records_round_trip() {
        let big = vec![b'x'; 300];
        let input: Vec<(&str, &[u8])> = vec![
            ("user-1", b"{\"a\":1}"),
            ("user-2", b"{\"a\":2}"),
            ("user-1", &big),
            ("user-3", b""),
        ];
        let packed = aggregate(&input);
        let out = deaggregate(&packed).expect("a valid aggregate");
        assert_eq!(out.len(), 4);
        for (got, (key, data)) in out.iter().zip(&input) {
            assert_eq!(got.partition_key, *key);
            assert_eq!(got.data, *data);
        }
    }

    #[test]
    fn ordinary_and_damaged_records_are_not_aggregates() {
        assert!(deaggregate(b"{\"plain\":true}").is_none());
        let mut packed = aggregate(&[("k", b"v")]);
        let last = packed.len() - 1;
        packed[last] ^= 1;
        assert!(deaggregate(&packed).is_none(), "wrong digest");
        let mut truncated = MAGIC.to_vec();
        truncated.extend_from_slice(&[0x1a, 0x10, 0x08]);
        let digest = Md5::digest(&truncated[4..]);
        truncated.extend_from_slice(digest.as_slice());
        assert!(deaggregate(&truncated).is_none(), "malformed body");
    }
}
