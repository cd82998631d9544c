//! A protobuf reader and writer at the wire level, for editing a stored
//! message without decoding it into a model that would drop what it does
//! not know (api.md "How slimgate treats policies"). A [`Field`] keeps the
//! exact bytes it was read from, so a caller can copy it through untouched.

/// Deepest nesting of groups (wire types 3 and 4) skipped inside an unknown
/// field; prost's default recursion limit.
pub const MAX_GROUP_DEPTH: usize = 100;

/// Why bytes are not a well-formed protobuf message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub &'static str);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// One field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    /// A length-delimited body (string, bytes, message, packed list).
    Bytes(&'a [u8]),
    Fixed32(u32),
    /// A group, unread: only its bytes (in [`Field::raw`]) are kept.
    Group,
}

/// One field as read: number, value, and the exact bytes (tag included).
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub number: u32,
    pub value: Value<'a>,
    pub raw: &'a [u8],
}

impl<'a> Field<'a> {
    /// The body of a length-delimited field.
    pub fn bytes(&self) -> Result<&'a [u8], WireError> {
        match self.value {
            Value::Bytes(b) => Ok(b),
            _ => Err(WireError("invalid wire type for a length-delimited field")),
        }
    }

    /// A string field's value.
    pub fn string(&self) -> Result<String, WireError> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_owned)
            .map_err(|_| WireError("invalid string value: data is not UTF-8 encoded"))
    }

    /// A varint field's value.
    pub fn varint(&self) -> Result<u64, WireError> {
        match self.value {
            Value::Varint(v) => Ok(v),
            _ => Err(WireError("invalid wire type for a varint field")),
        }
    }
}

/// Reads the fields of one message body, in order.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut out = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(WireError("truncated varint"));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(WireError("varint overflows 64 bits"));
            }
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(WireError("varint overflows 64 bits"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(WireError("field runs past the end of the message"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn tag(&mut self) -> Result<(u32, u8), WireError> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| WireError("field number too large"))?;
        if number == 0 || number > (1 << 29) - 1 {
            return Err(WireError("invalid field number"));
        }
        Ok((number, (key & 7) as u8))
    }

    /// Skips a group's fields up to its end tag.
    fn skip_group(&mut self, number: u32, depth: usize) -> Result<(), WireError> {
        if depth > MAX_GROUP_DEPTH {
            return Err(WireError("groups nested too deeply"));
        }
        loop {
            if self.pos >= self.buf.len() {
                return Err(WireError("unterminated group"));
            }
            let (n, wt) = self.tag()?;
            match wt {
                4 if n == number => return Ok(()),
                4 => return Err(WireError("mismatched group end")),
                3 => self.skip_group(n, depth + 1)?,
                _ => {
                    self.value(wt)?;
                }
            }
        }
    }

    fn value(&mut self, wire_type: u8) -> Result<Value<'a>, WireError> {
        Ok(match wire_type {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().unwrap_or([0; 8]))),
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| WireError("field runs past the end of the message"))?;
                Value::Bytes(self.take(len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().unwrap_or([0; 4]))),
            _ => return Err(WireError("invalid wire type")),
        })
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Field<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let start = self.pos;
        let field = (|| {
            let (number, wt) = self.tag()?;
            let value = if wt == 3 {
                self.skip_group(number, 1)?;
                Value::Group
            } else {
                self.value(wt)?
            };
            Ok(Field { number, value, raw: &self.buf[start..self.pos] })
        })();
        if field.is_err() {
            self.pos = self.buf.len(); // stop after the first error
        }
        Some(field)
    }
}

/// Every field of a message body, or the first error.
pub fn fields(body: &[u8]) -> Result<Vec<Field<'_>>, WireError> {
    Reader::new(body).collect()
}

/// The values of a `repeated uint32` field occurrence, packed or not.
pub fn uint32s(field: &Field<'_>, out: &mut Vec<u32>) -> Result<(), WireError> {
    match field.value {
        Value::Varint(v) => out.push(v as u32),
        Value::Bytes(b) => {
            let mut r = Reader::new(b);
            while r.pos < b.len() {
                out.push(r.varint()? as u32);
            }
        }
        _ => return Err(WireError("invalid wire type for a varint field")),
    }
    Ok(())
}

/// Appends a varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited field.
pub fn put_bytes(out: &mut Vec<u8>, number: u32, body: &[u8]) {
    put_varint(out, u64::from(number) << 3 | 2);
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// Appends a string field unless it is empty (proto3 default).
pub fn put_string(out: &mut Vec<u8>, number: u32, s: &str) {
    if !s.is_empty() {
        put_bytes(out, number, s.as_bytes());
    }
}

/// Appends a `uint32` field unless it is 0.
pub fn put_uint32(out: &mut Vec<u8>, number: u32, v: u32) {
    if v != 0 {
        put_varint(out, u64::from(number) << 3);
        put_varint(out, u64::from(v));
    }
}

/// Appends a packed `repeated uint32` field unless it is empty.
pub fn put_packed(out: &mut Vec<u8>, number: u32, vs: &[u32]) {
    if vs.is_empty() {
        return;
    }
    let mut body = Vec::with_capacity(vs.len() * 2);
    for &v in vs {
        put_varint(&mut body, u64::from(v));
    }
    put_bytes(out, number, &body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_wire_type_and_keeps_raw_bytes() {
        // 1: varint 150; 2: "hi"; 3: fixed64; 4: fixed32; 5: group{1: varint 1}
        let msg = [
            0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i', 0x19, 1, 0, 0, 0, 0, 0, 0, 0, 0x25, 2, 0, 0,
            0, 0x2b, 0x08, 0x01, 0x2c,
        ];
        let f = fields(&msg).unwrap();
        assert_eq!(f.len(), 5);
        assert_eq!(f[0].varint().unwrap(), 150);
        assert_eq!(f[0].raw, &msg[..3]);
        assert_eq!(f[1].string().unwrap(), "hi");
        assert_eq!(f[2].value, Value::Fixed64(1));
        assert_eq!(f[3].value, Value::Fixed32(2));
        assert_eq!(f[4].value, Value::Group);
        assert_eq!(f[4].raw, &msg[21..]);
        let joined: Vec<u8> = f.iter().flat_map(|f| f.raw.to_vec()).collect();
        assert_eq!(joined, msg);
    }

    #[test]
    fn refuses_malformed_input() {
        for bad in [
            &[0x08][..],         // truncated varint
            &[0x12, 0x05, b'a'], // length past the end
            &[0x0f],             // wire type 7
            &[0x00],             // field 0
            &[0x2b, 0x08],       // unterminated group
            &[0x2b, 0x34],       // mismatched group end
            &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        ] {
            assert!(fields(bad).is_err(), "{bad:?}");
        }
        let deep: Vec<u8> = std::iter::repeat_n(0x0b, MAX_GROUP_DEPTH + 1).collect();
        assert_eq!(fields(&deep).unwrap_err(), WireError("groups nested too deeply"));
    }

    #[test]
    fn packed_and_unpacked_ports_and_writers() {
        let mut out = Vec::new();
        put_packed(&mut out, 9, &[80, 443]);
        put_uint32(&mut out, 9, 8080);
        put_uint32(&mut out, 2, 0);
        put_string(&mut out, 1, "");
        let mut ports = Vec::new();
        for f in fields(&out).unwrap() {
            uint32s(&f, &mut ports).unwrap();
        }
        assert_eq!(ports, [80, 443, 8080]);
        assert_eq!(out, [0x4a, 0x03, 80, 0xbb, 0x03, 0x48, 0x90, 0x3f]);
    }
}
