//! GGUF reader (versions 2 and 3, little-endian) for untrusted files.
//!
//! The header is parsed here rather than by candle's `Content::read`, so that every count, length,
//! dimension and offset is checked against fixed limits and the real file size before anything is
//! allocated or read. The result is candle's public `Content`, plus the path and length it came from.
//! Every problem is an `ERR_INVALID_MODEL` error naming it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value, VersionedMagic};
use candle_core::quantized::{ggml_file, GgmlDType, QTensor};
use candle_core::Device;

use crate::error::{Error, ErrorCode, Result};

const MAX_TENSORS: u64 = 1 << 20;
const MAX_KV: u64 = 1 << 20;
const MAX_STRING: u64 = 64 << 20;
/// Array elements in the whole header together (a large vocabulary needs under 1M).
const MAX_META_VALUES: u64 = 1 << 24;
/// Arrays may nest this many levels (1 = a plain array).
const MAX_ARRAY_DEPTH: u32 = 3;
const MAX_DIMS: u32 = 4;
const DEFAULT_ALIGNMENT: u64 = 32;
/// Smallest possible metadata entry: key length + 1-byte key + value type + 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 1 + 4 + 1;
/// Smallest possible tensor info: name length + 1-byte name + n_dims + one dim + type + offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 1 + 4 + 8 + 4 + 8;

fn bad(msg: impl Into<String>) -> Error {
    Error::invalid_model(msg)
}

/// A parsed, validated GGUF file: every tensor lies inside the file, aligned, without overlap.
#[derive(Debug)]
pub struct GgufFile {
    pub content: Content,
    pub path: PathBuf,
    pub file_len: u64,
    file: Mutex<File>,
}

/// Opens and validates a GGUF file; tensor data is read later, one tensor at a time.
pub fn read_gguf(path: &Path) -> Result<GgufFile> {
    // Checked before opening: opening a FIFO would block.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(bad(format!("GGUF path {} is not a regular file", path.display())));
    }
    let file = File::open(path).map_err(|e| {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorCode::ModelNotFound,
            _ => ErrorCode::InvalidModel,
        };
        Error::new(code, format!("cannot open GGUF file {}: {e}", path.display()))
    })?;
    let ctx = |e: Error| e.context(format!("invalid GGUF file {}", path.display()));
    let file_len = file.metadata().map_err(|e| bad(e.to_string())).map_err(ctx)?.len();
    let mut r =
        Reader { inner: BufReader::with_capacity(1 << 16, file), pos: 0, len: file_len, budget: MAX_META_VALUES };
    let content = parse(&mut r).map_err(ctx)?;
    Ok(GgufFile { content, path: path.to_path_buf(), file_len, file: Mutex::new(r.inner.into_inner()) })
}

struct Reader<R> {
    inner: R,
    pos: u64,
    len: u64,
    /// Array elements still allowed (`MAX_META_VALUES` in all).
    budget: u64,
}

impl<R: Read> Reader<R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        let n = buf.len() as u64;
        if n > self.remaining() {
            return Err(bad(format!(
                "truncated: {what} needs {n} bytes at offset {}, only {} left",
                self.pos,
                self.remaining()
            )));
        }
        self.inner.read_exact(buf).map_err(|e| bad(format!("reading {what} at offset {}: {e}", self.pos)))?;
        self.pos += n;
        Ok(())
    }

    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.fill(&mut b, what)?;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    fn string_bytes(&mut self, what: &str) -> Result<Vec<u8>> {
        let n = self.u64(what)?;
        if n > MAX_STRING || n > self.remaining() {
            return Err(bad(format!(
                "{what}: string length {n} exceeds the limit ({MAX_STRING} bytes, {} left in file)",
                self.remaining()
            )));
        }
        let mut v = vec![0u8; n as usize];
        self.fill(&mut v, what)?;
        Ok(v)
    }

    /// A key or tensor name: UTF-8, trailing NULs dropped (some writers add one), not empty.
    fn name(&mut self, what: &str) -> Result<String> {
        let mut b = self.string_bytes(what)?;
        while b.last() == Some(&0) {
            b.pop();
        }
        if b.is_empty() {
            return Err(bad(format!("empty {what}")));
        }
        String::from_utf8(b).map_err(|_| bad(format!("{what} is not valid UTF-8")))
    }
}

/// Bytes one element of a value type takes on disk at least; `None` for an unknown type.
fn min_size(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}

fn value<R: Read>(r: &mut Reader<R>, ty: u32, depth: u32, key: &str) -> Result<Value> {
    Ok(match ty {
        0 => Value::U8(r.arr::<1>(key)?[0]),
        1 => Value::I8(i8::from_le_bytes(r.arr(key)?)),
        2 => Value::U16(u16::from_le_bytes(r.arr(key)?)),
        3 => Value::I16(i16::from_le_bytes(r.arr(key)?)),
        4 => Value::U32(r.u32(key)?),
        5 => Value::I32(i32::from_le_bytes(r.arr(key)?)),
        6 => Value::F32(f32::from_le_bytes(r.arr(key)?)),
        7 => match r.arr::<1>(key)?[0] {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            b => return Err(bad(format!("metadata {key}: invalid bool byte {b}"))),
        },
        8 => {
            let b = r.string_bytes(key)?;
            // Values stay lossy: some vocabularies hold invalid UTF-8 pieces.
            Value::String(String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
        }
        9 => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(bad(format!("metadata {key}: arrays nested deeper than {MAX_ARRAY_DEPTH} levels")));
            }
            let elem_ty = r.u32(key)?;
            let min = min_size(elem_ty)
                .ok_or_else(|| bad(format!("metadata {key}: unknown array element value type {elem_ty}")))?;
            let n = r.u64(key)?;
            if n.checked_mul(min).is_none_or(|need| need > r.remaining()) {
                return Err(bad(format!(
                    "metadata {key}: array length {n} needs more than the {} bytes left in the file",
                    r.remaining()
                )));
            }
            if n > r.budget {
                return Err(bad(format!(
                    "metadata {key}: array length {n}: metadata arrays exceed {MAX_META_VALUES} values"
                )));
            }
            r.budget -= n;
            let mut vs = Vec::with_capacity(n as usize);
            for _ in 0..n {
                vs.push(value(r, elem_ty, depth + 1, key)?);
            }
            Value::Array(vs)
        }
        10 => Value::U64(r.u64(key)?),
        11 => Value::I64(i64::from_le_bytes(r.arr(key)?)),
        12 => Value::F64(f64::from_le_bytes(r.arr(key)?)),
        t => return Err(bad(format!("metadata {key}: unknown value type {t}"))),
    })
}

/// GGML type ids (ggml.h) that candle can load.
fn ggml_dtype(id: u32) -> Option<GgmlDType> {
    use GgmlDType::*;
    Some(match id {
        0 => F32,
        1 => F16,
        2 => Q4_0,
        3 => Q4_1,
        6 => Q5_0,
        7 => Q5_1,
        8 => Q8_0,
        9 => Q8_1,
        10 => Q2K,
        11 => Q3K,
        12 => Q4K,
        13 => Q5K,
        14 => Q6K,
        15 => Q8K,
        30 => BF16,
        _ => return None,
    })
}

fn as_int(v: &Value) -> Option<i128> {
    Some(match *v {
        Value::U8(x) => x.into(),
        Value::I8(x) => x.into(),
        Value::U16(x) => x.into(),
        Value::I16(x) => x.into(),
        Value::U32(x) => x.into(),
        Value::I32(x) => x.into(),
        Value::U64(x) => x.into(),
        Value::I64(x) => x.into(),
        _ => return None,
    })
}

fn to_u32(key: &str, v: &Value) -> Result<u32> {
    let n = match *v {
        Value::F32(f) if f.fract() == 0.0 => Some(f as i128),
        Value::F64(f) if f.fract() == 0.0 => Some(f as i128),
        _ => as_int(v),
    };
    let n = n.ok_or_else(|| GgufFile::wrong_type(key, "an integer", v))?;
    u32::try_from(n).map_err(|_| bad(format!("GGUF metadata {key}: {n} out of range for u32")))
}

/// Bytes of tensor data for a shape (candle order) and type; `None` on overflow or partial blocks.
fn data_size(dims: &[usize], dtype: GgmlDType) -> Option<u64> {
    let elems = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))?;
    let block = dtype.block_size() as u64;
    (elems % block == 0).then_some(())?;
    (elems / block).checked_mul(dtype.type_size() as u64)
}

fn parse<R: Read>(r: &mut Reader<R>) -> Result<Content> {
    let magic: [u8; 4] = r.arr("magic")?;
    if &magic != b"GGUF" {
        return Err(bad(format!("bad magic {magic:02x?}, expected \"GGUF\"")));
    }
    let magic = match r.u32("version")? {
        2 => VersionedMagic::GgufV2,
        3 => VersionedMagic::GgufV3,
        v if matches!(v.swap_bytes(), 2 | 3) => return Err(bad("big-endian GGUF files are not supported")),
        v => return Err(bad(format!("unsupported GGUF version {v} (only 2 and 3)"))),
    };
    let n_tensors = r.u64("tensor count")?;
    let n_kv = r.u64("metadata kv count")?;
    if n_tensors > MAX_TENSORS {
        return Err(bad(format!("tensor count {n_tensors} exceeds the limit {MAX_TENSORS}")));
    }
    if n_kv > MAX_KV {
        return Err(bad(format!("metadata kv count {n_kv} exceeds the limit {MAX_KV}")));
    }
    let need = n_kv * MIN_KV_BYTES + n_tensors * MIN_TENSOR_INFO_BYTES;
    if need > r.remaining() {
        return Err(bad(format!(
            "tensor count {n_tensors} and metadata kv count {n_kv} need at least {need} bytes, only {} left",
            r.remaining()
        )));
    }

    let mut metadata = HashMap::with_capacity(n_kv as usize);
    for _ in 0..n_kv {
        let key = r.name("metadata key")?;
        if metadata.contains_key(&key) {
            return Err(bad(format!("duplicate metadata key {key}")));
        }
        let ty = r.u32("metadata value type")?;
        let v = value(r, ty, 0, &key)?;
        metadata.insert(key, v);
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match as_int(v) {
            Some(a) if a > 0 && a <= u32::MAX as i128 && (a as u64).is_power_of_two() => a as u64,
            Some(a) => return Err(bad(format!("general.alignment {a} is not a non-zero power of two"))),
            None => return Err(bad(format!("general.alignment must be an integer, got {:?}", v.value_type()))),
        },
    };

    let mut tensor_infos = HashMap::with_capacity(n_tensors as usize);
    let mut spans = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = r.name("tensor name")?;
        let tbad = |m: String| bad(format!("tensor {name}: {m}"));
        let n_dims = r.u32("tensor n_dims")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(tbad(format!("n_dims {n_dims} is not in 1..={MAX_DIMS}")));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        let mut elems = 1u64;
        for _ in 0..n_dims {
            let d = r.u64("tensor dimension")?;
            if d == 0 {
                return Err(tbad("dimension 0".into()));
            }
            elems = elems
                .checked_mul(d)
                .filter(|&e| e <= i64::MAX as u64)
                .ok_or_else(|| tbad("element count overflows".into()))?;
            ne.push(usize::try_from(d).map_err(|_| tbad(format!("dimension {d} too large")))?);
        }
        let type_id = r.u32("tensor type")?;
        let dtype = ggml_dtype(type_id).ok_or_else(|| tbad(format!("unknown ggml type {type_id}")))?;
        let offset = r.u64("tensor offset")?;
        let block = dtype.block_size();
        if ne[0] % block != 0 {
            return Err(tbad(format!("row length {} is not a multiple of the {dtype:?} block size {block}", ne[0])));
        }
        ne.reverse(); // GGUF lists the innermost dimension first; candle the outermost.
        let size = data_size(&ne, dtype).ok_or_else(|| tbad("byte size overflows".into()))?;
        if offset % alignment != 0 {
            return Err(tbad(format!("offset {offset} is not aligned to {alignment}")));
        }
        if tensor_infos.contains_key(&name) {
            return Err(bad(format!("duplicate tensor name {name}")));
        }
        spans.push((offset, size, name.clone()));
        tensor_infos.insert(name, TensorInfo { ggml_dtype: dtype, shape: ne.into(), offset });
    }

    let tensor_data_offset =
        r.pos.checked_next_multiple_of(alignment).ok_or_else(|| bad("tensor data offset overflows"))?;
    if !spans.is_empty() && tensor_data_offset > r.len {
        return Err(bad(format!("tensor data starts at {tensor_data_offset}, past end of file ({} bytes)", r.len)));
    }
    let data_len = r.len.saturating_sub(tensor_data_offset);
    spans.sort_unstable();
    let mut prev: Option<(u64, &str)> = None;
    for (off, size, name) in &spans {
        let end = off.checked_add(*size).filter(|&e| e <= data_len).ok_or_else(|| {
            bad(format!(
                "tensor {name}: data [{off}, +{size}) extends past end of file (tensor data section holds {data_len} bytes)"
            ))
        })?;
        if let Some((prev_end, prev_name)) = prev {
            if *off < prev_end {
                return Err(bad(format!("tensors {prev_name} and {name} overlap")));
            }
        }
        prev = Some((end, name));
    }
    Ok(Content { magic, metadata, tensor_infos, tensor_data_offset })
}

impl GgufFile {
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Reads one tensor's data (bounds checked again against the file) into a `QTensor`.
    pub fn tensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        let tbad = |m: String| bad(format!("GGUF file {}: tensor {name}: {m}", self.path.display()));
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| bad(format!("missing tensor {name} in GGUF file {}", self.path.display())))?;
        let dims = info.shape.dims().to_vec();
        let size = data_size(&dims, info.ggml_dtype).ok_or_else(|| tbad("invalid size".into()))?;
        let start = self.content.tensor_data_offset.checked_add(info.offset);
        let start = start
            .filter(|s| s.checked_add(size).is_some_and(|e| e <= self.file_len))
            .ok_or_else(|| tbad("data extends past end of file".into()))?;
        let size = usize::try_from(size).map_err(|_| tbad("too large".into()))?;
        // A u64 buffer keeps the bytes aligned for the block types candle casts them to.
        let mut buf = vec![0u64; size.div_ceil(8)];
        // SAFETY: the u64 buffer is initialised and at least `size` bytes long; u8 has no alignment needs.
        let bytes = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), size) };
        {
            let mut f = self.file.lock().map_err(|_| Error::internal("GGUF file lock poisoned"))?;
            f.seek(SeekFrom::Start(start))
                .and_then(|_| f.read_exact(bytes))
                .map_err(|e| tbad(format!("reading {size} bytes at {start}: {e} (file changed?)")))?;
        }
        ggml_file::qtensor_from_ggml(info.ggml_dtype, bytes, dims, device)
            .map_err(|e| Error::internal(format!("loading tensor {name}: {e}")))
    }

    fn meta(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn wrong_type(key: &str, want: &str, v: &Value) -> Error {
        bad(format!("GGUF metadata {key}: expected {want}, found {:?}", v.value_type()))
    }

    /// An integer value (any integer type, or an integral float) that fits u32.
    pub fn meta_u32(&self, key: &str) -> Result<Option<u32>> {
        self.meta(key).map(|v| to_u32(key, v)).transpose()
    }

    /// An array of integers, each converted as by `meta_u32`.
    pub fn meta_u32_array(&self, key: &str) -> Result<Option<Vec<u32>>> {
        self.meta_array(key, "an array of integers", to_u32)
    }

    /// An array of strings.
    pub fn meta_str_array(&self, key: &str) -> Result<Option<Vec<String>>> {
        self.meta_array(key, "an array of strings", |key, v| match v {
            Value::String(s) => Ok(s.clone()),
            v => Err(Self::wrong_type(key, "a string element", v)),
        })
    }

    fn meta_array<T>(&self, key: &str, want: &str, f: impl Fn(&str, &Value) -> Result<T>) -> Result<Option<Vec<T>>> {
        match self.meta(key) {
            None => Ok(None),
            Some(Value::Array(vs)) => vs.iter().map(|v| f(key, v)).collect::<Result<_>>().map(Some),
            Some(v) => Err(Self::wrong_type(key, want, v)),
        }
    }

    /// Any numeric value, converted to f32.
    pub fn meta_f32(&self, key: &str) -> Result<Option<f32>> {
        let Some(v) = self.meta(key) else { return Ok(None) };
        let f = match *v {
            Value::F32(f) => f,
            Value::F64(f) => f as f32,
            _ => as_int(v).ok_or_else(|| Self::wrong_type(key, "a number", v))? as f32,
        };
        Ok(Some(f))
    }

    pub fn meta_str(&self, key: &str) -> Result<Option<String>> {
        match self.meta(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(Self::wrong_type(key, "a string", v)),
        }
    }

    /// A bool, or an integer 0 / 1.
    pub fn meta_bool(&self, key: &str) -> Result<Option<bool>> {
        let Some(v) = self.meta(key) else { return Ok(None) };
        match (v, as_int(v)) {
            (Value::Bool(b), _) => Ok(Some(*b)),
            (_, Some(0)) => Ok(Some(false)),
            (_, Some(1)) => Ok(Some(true)),
            _ => Err(Self::wrong_type(key, "a bool", v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn s(b: &mut Vec<u8>, x: &str) {
        b.extend((x.len() as u64).to_le_bytes());
        b.extend(x.as_bytes());
    }
    fn kv(key: &str, ty: u32, val: &[u8]) -> Vec<u8> {
        let mut b = vec![];
        s(&mut b, key);
        b.extend(ty.to_le_bytes());
        b.extend(val);
        b
    }
    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }
    fn str_val(x: &str) -> Vec<u8> {
        let mut b = vec![];
        s(&mut b, x);
        b
    }

    struct T {
        name: String,
        ne: Vec<u64>,
        ty: u32,
        off: u64,
    }
    /// A GGUF file under construction; counts default to the real ones.
    struct G {
        magic: [u8; 4],
        version: u32,
        n_tensors: Option<u64>,
        n_kv: Option<u64>,
        kvs: Vec<Vec<u8>>,
        tensors: Vec<T>,
        data: Vec<u8>,
    }

    impl G {
        /// Metadata of several kinds, an F32 [2, 4] tensor and a Q8_0 [2, 32] tensor ending at EOF.
        fn valid() -> G {
            let tokens: Vec<u8> =
                cat(&[&8u32.to_le_bytes(), &3u64.to_le_bytes(), &str_val("<s>"), &str_val("a"), &str_val("b")]);
            let types = cat(&[&5u32.to_le_bytes(), &2u64.to_le_bytes(), &1i32.to_le_bytes(), &(-1i32).to_le_bytes()]);
            let nested = cat(&[
                &9u32.to_le_bytes(),
                &2u64.to_le_bytes(),
                &0u32.to_le_bytes(),
                &1u64.to_le_bytes(),
                &[7u8],
                &0u32.to_le_bytes(),
                &0u64.to_le_bytes(),
            ]);
            let kvs = vec![
                kv("general.architecture", 8, &str_val("llama")),
                kv("llama.context_length", 4, &2048u32.to_le_bytes()),
                kv("llama.rope.freq_base", 6, &10000f32.to_le_bytes()),
                kv("general.flag", 7, &[1]),
                kv("general.count", 10, &7u64.to_le_bytes()),
                kv("general.neg", 5, &(-3i32).to_le_bytes()),
                kv("tokenizer.ggml.tokens", 9, &tokens),
                kv("tokenizer.ggml.token_type", 9, &types),
                kv("test.nested", 9, &nested),
                kv(
                    "test.ids",
                    9,
                    &cat(&[&2u32.to_le_bytes(), &2u64.to_le_bytes(), &3u16.to_le_bytes(), &5u16.to_le_bytes()]),
                ),
            ];
            let mut data: Vec<u8> = (0..8).flat_map(|i| (i as f32).to_le_bytes()).collect();
            for blk in 0..2i8 {
                data.extend(half::f16::from_f32(0.5).to_le_bytes());
                data.extend((0..32i8).map(|i| (i - 16 + blk) as u8));
            }
            let t = |name: &str, ne: &[u64], ty, off| T { name: name.into(), ne: ne.to_vec(), ty, off };
            G {
                magic: *b"GGUF",
                version: 3,
                n_tensors: None,
                n_kv: None,
                kvs,
                tensors: vec![t("w.f32", &[4, 2], 0, 0), t("w.q8", &[32, 2], 8, 32)],
                data,
            }
        }

        fn bytes(&self) -> Vec<u8> {
            let mut b = self.magic.to_vec();
            b.extend(self.version.to_le_bytes());
            b.extend(self.n_tensors.unwrap_or(self.tensors.len() as u64).to_le_bytes());
            b.extend(self.n_kv.unwrap_or(self.kvs.len() as u64).to_le_bytes());
            self.kvs.iter().for_each(|k| b.extend(k));
            for t in &self.tensors {
                s(&mut b, &t.name);
                b.extend((t.ne.len() as u32).to_le_bytes());
                t.ne.iter().for_each(|d| b.extend(d.to_le_bytes()));
                b.extend(t.ty.to_le_bytes());
                b.extend(t.off.to_le_bytes());
            }
            b.resize(b.len().next_multiple_of(32), 0);
            b.extend(&self.data);
            b
        }
    }

    fn load(bytes: &[u8]) -> Result<GgufFile> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("radixlm-gguf-test-{}-{n}.gguf", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        let r = read_gguf(&p);
        let _ = std::fs::remove_file(&p); // an open handle keeps the data readable (unix)
        r
    }

    fn expect_err(bytes: &[u8], kw: &str) {
        match load(bytes) {
            Ok(_) => panic!("corrupt file loaded (expected error containing {kw:?})"),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::InvalidModel, "{e}");
                assert!(e.message.contains(kw), "message {:?} lacks {kw:?}", e.message);
            }
        }
    }

    #[test]
    fn valid_file_loads() {
        for version in [2, 3] {
            let mut g = G::valid();
            g.version = version;
            let f = load(&g.bytes()).unwrap();
            assert_eq!(f.content.tensor_infos.len(), 2);
            assert_eq!(f.content.tensor_data_offset % 32, 0);
            assert_eq!(f.meta_str("general.architecture").unwrap().as_deref(), Some("llama"));
            assert_eq!(f.meta_u32("llama.context_length").unwrap(), Some(2048));
            assert_eq!(f.meta_f32("llama.rope.freq_base").unwrap(), Some(10000.0));
            assert_eq!(f.meta_f32("llama.context_length").unwrap(), Some(2048.0));
            assert_eq!(f.meta_u32("general.count").unwrap(), Some(7));
            assert_eq!(f.meta_bool("general.flag").unwrap(), Some(true));
            assert_eq!(f.meta_u32("absent").unwrap(), None);
            assert_eq!(f.meta_str_array("tokenizer.ggml.tokens").unwrap().unwrap(), ["<s>", "a", "b"]);
            assert_eq!(f.meta_str_array("absent").unwrap(), None);
            assert_eq!(f.meta_u32_array("test.ids").unwrap(), Some(vec![3, 5]));
            assert!(f
                .meta_str_array("general.architecture")
                .unwrap_err()
                .message
                .contains("expected an array of strings"));
            assert!(f
                .meta_str_array("tokenizer.ggml.token_type")
                .unwrap_err()
                .message
                .contains("expected a string element"));
            assert!(f.meta_u32_array("tokenizer.ggml.tokens").unwrap_err().message.contains("expected an integer"));
            // token_type is [1, -1]: the negative element is out of range for u32.
            assert!(f.meta_u32_array("tokenizer.ggml.token_type").unwrap_err().message.contains("out of range"));
            assert_eq!(f.content.metadata["test.nested"].to_vec().unwrap().len(), 2);
            for (key, want) in
                [("general.architecture", "expected an integer"), ("general.flag", "expected an integer")]
            {
                let e = f.meta_u32(key).unwrap_err();
                assert_eq!(e.code, ErrorCode::InvalidModel);
                assert!(e.message.contains(want), "{e}");
            }
            assert!(f.meta_u32("general.neg").unwrap_err().message.contains("out of range"));
            assert!(f.meta_str("general.count").unwrap_err().message.contains("expected a string"));
            assert!(f.meta_bool("general.architecture").unwrap_err().message.contains("expected a bool"));

            assert!(f.has_tensor("w.f32") && !f.has_tensor("nope"));
            let a = f.tensor("w.f32", &Device::Cpu).unwrap().dequantize(&Device::Cpu).unwrap();
            assert_eq!(a.dims(), [2, 4]);
            assert_eq!(
                a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                (0..8).map(|i| i as f32).collect::<Vec<_>>()
            );
            let q = f.tensor("w.q8", &Device::Cpu).unwrap();
            assert_eq!(q.dtype(), GgmlDType::Q8_0);
            let q = q.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(q[0][0], -8.0);
            assert_eq!(q[1][31], 8.0);
            let e = f.tensor("nope", &Device::Cpu).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidModel);
            assert!(e.message.contains("missing tensor nope"), "{e}");
        }
    }

    #[test]
    fn missing_file_is_model_not_found() {
        let e = read_gguf(Path::new("/nonexistent/radixlm/x.gguf")).unwrap_err();
        assert_eq!(e.code, ErrorCode::ModelNotFound);
    }

    #[test]
    fn directory_is_invalid() {
        let e = read_gguf(&std::env::temp_dir()).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidModel);
        assert!(e.message.contains("not a regular file"), "{e}");
    }

    #[test]
    fn every_truncation_fails() {
        let b = G::valid().bytes();
        for n in 0..b.len() {
            let e = load(&b[..n]).err().unwrap_or_else(|| panic!("prefix of {n} bytes loaded"));
            assert_eq!(e.code, ErrorCode::InvalidModel, "prefix {n}: {e}");
        }
        assert!(load(&b).is_ok());
    }

    /// Deeply nested arrays must fail on the depth cap, not overflow the stack.
    #[test]
    fn very_deep_nesting_fails() {
        let mut g = G::valid();
        let level = cat(&[&9u32.to_le_bytes(), &1u64.to_le_bytes()]);
        g.kvs.push(kv("x", 9, &level.repeat(100_000)));
        expect_err(&g.bytes(), "nested deeper");
    }

    macro_rules! corrupt {
        ($($name:ident: |$g:ident| $body:expr => $kw:expr;)*) => {$(
            #[test]
            fn $name() {
                #[allow(unused_mut)]
                let mut $g = G::valid();
                $body;
                expect_err(&$g.bytes(), $kw);
            }
        )*};
    }

    fn u32s(v: u32) -> Vec<u8> {
        v.to_le_bytes().to_vec()
    }

    corrupt! {
        bad_magic: |g| g.magic = *b"GGUX" => "bad magic";
        version_0: |g| g.version = 0 => "unsupported GGUF version 0";
        version_1: |g| g.version = 1 => "unsupported GGUF version 1";
        version_99: |g| g.version = 99 => "unsupported GGUF version 99";
        big_endian: |g| g.version = 3u32.swap_bytes() => "big-endian";
        tensor_count_max: |g| g.n_tensors = Some(u64::MAX) => "tensor count";
        kv_count_max: |g| g.n_kv = Some(u64::MAX) => "kv count";
        counts_beyond_file: |g| g.n_tensors = Some(1000) => "need at least";
        key_length_max: |g| g.kvs.push(cat(&[&u64::MAX.to_le_bytes(), b"abcd", &u32s(4), &u32s(1)])) => "string length";
        string_value_too_long: |g| g.kvs.push(kv("x", 8, &(u64::MAX / 2).to_le_bytes())) => "string length";
        empty_key: |g| g.kvs.push(kv("", 4, &u32s(1))) => "empty metadata key";
        duplicate_key: |g| g.kvs.push(kv("general.architecture", 8, &str_val("x"))) => "duplicate metadata key general.architecture";
        key_not_utf8: |g| g.kvs.push(cat(&[&2u64.to_le_bytes(), &[0xff, 0xfe], &u32s(4), &u32s(1)])) => "UTF-8";
        unknown_value_type: |g| g.kvs.push(kv("x", 13, &[0; 8])) => "unknown value type 13";
        unknown_array_type: |g| g.kvs.push(kv("x", 9, &cat(&[&u32s(99), &1u64.to_le_bytes()]))) => "unknown array element value type 99";
        array_length_max: |g| g.kvs.push(kv("x", 9, &cat(&[&u32s(0), &u64::MAX.to_le_bytes()]))) => "array length";
        array_length_huge: |g| g.kvs.push(kv("x", 9, &cat(&[&u32s(4), &(1u64 << 40).to_le_bytes()]))) => "array length";
        nested_arrays_too_deep: |g| g.kvs.push(kv("x", 9, &cat(&[&u32s(9), &1u64.to_le_bytes()]).repeat(3))) => "nested deeper";
        invalid_bool: |g| g.kvs.push(kv("x", 7, &[2])) => "invalid bool";
        alignment_3: |g| g.kvs.push(kv("general.alignment", 4, &u32s(3))) => "alignment 3";
        alignment_0: |g| g.kvs.push(kv("general.alignment", 4, &u32s(0))) => "alignment 0";
        alignment_not_int: |g| g.kvs.push(kv("general.alignment", 8, &str_val("32"))) => "alignment must be an integer";
        n_dims_5: |g| g.tensors[0].ne = vec![4, 2, 1, 1, 1] => "n_dims 5";
        n_dims_0: |g| g.tensors[0].ne = vec![] => "n_dims 0";
        dim_0: |g| g.tensors[0].ne = vec![4, 0] => "dimension 0";
        shape_overflow: |g| g.tensors[0].ne = vec![1 << 32, 1 << 32, 1 << 32] => "overflow";
        shape_over_i64: |g| g.tensors[0].ne = vec![1 << 32, 1 << 31] => "overflow";
        unknown_ggml_type: |g| g.tensors[0].ty = 99 => "unknown ggml type 99";
        removed_ggml_type: |g| g.tensors[0].ty = 4 => "unknown ggml type 4";
        partial_block: |g| g.tensors[1].ne = vec![16, 4] => "block size";
        misaligned_offset: |g| g.tensors[1].off = 36 => "not aligned";
        data_past_end: |g| g.tensors[1].off = 64 => "past end";
        offset_overflow: |g| g.tensors[1].off = u64::MAX - 31 => "past end";
        short_data: |g| g.data.truncate(90) => "past end";
        overlapping_tensors: |g| g.tensors[1].off = 0 => "overlap";
        duplicate_tensor_name: |g| g.tensors[1].name = "w.f32".into() => "duplicate tensor name w.f32";
        empty_tensor_name: |g| g.tensors[1].name = String::new() => "empty tensor name";
    }

    /// The real model, when present: every tensor parses and loads.
    #[test]
    fn real_model_loads() {
        let p = Path::new("/root/.cache/radixlm/SmolLM2-135M-Instruct.Q4_1.gguf");
        if !p.exists() {
            eprintln!("note: {} absent; real-model GGUF test skipped", p.display());
            return;
        }
        let f = read_gguf(p).unwrap();
        assert_eq!(f.content.tensor_infos.len(), 272);
        assert_eq!(f.meta_str("general.architecture").unwrap().as_deref(), Some("llama"));
        assert_eq!(f.meta_str_array("tokenizer.ggml.tokens").unwrap().unwrap().len(), 49152);
        assert!(f.meta_u32_array("tokenizer.ggml.token_type").unwrap().is_some());
        let q = f.tensor("blk.0.attn_q.weight", &Device::Cpu).unwrap();
        let t = q.dequantize(&Device::Cpu).unwrap();
        assert_eq!(t.rank(), 2);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| x.is_finite()) && v.iter().any(|&x| x != 0.0));
        for name in f.content.tensor_infos.keys() {
            let q = f.tensor(name, &Device::Cpu).unwrap();
            assert_eq!(q.shape(), &f.content.tensor_infos[name].shape);
        }
    }

    /// RoPE scaling as llama.cpp stores it (models/gguf_rope.rs): the rope_freqs tensor, a llama3 type in
    /// metadata, and the scalings radixlm does not implement, which must be errors unless they are no-ops.
    #[test]
    fn rope_scaling_from_gguf() {
        use crate::models::gguf_rope::gguf_rope;
        let with = |kvs: Vec<Vec<u8>>, freqs: bool| {
            let mut g = G::valid();
            g.kvs.extend(kvs);
            if freqs {
                g.tensors[0] = T { name: "rope_freqs.weight".into(), ne: vec![4], ty: 0, off: 0 };
            }
            load(&g.bytes()).unwrap()
        };
        let ty = |v: &str| kv("llama.rope.scaling.type", 8, &str_val(v));
        let factor = |x: f32| kv("llama.rope.scaling.factor", 6, &x.to_le_bytes());

        let (s, f) = gguf_rope(&with(vec![], true), "llama", 8).unwrap();
        assert!(s.is_none());
        assert_eq!(f.unwrap(), [0.0, 1.0, 2.0, 3.0]);
        let e = gguf_rope(&with(vec![], true), "llama", 10).unwrap_err();
        assert!(e.message.contains("rope_freqs.weight has 4 values"), "{e}");

        let (s, f) = gguf_rope(&with(vec![ty("llama3"), factor(8.0)], false), "llama", 8).unwrap();
        let s = s.expect("llama3 from metadata");
        assert_eq!((s.factor, s.original_max_position_embeddings, f.is_none()), (8.0, 8192.0, true));
        // With the tensor too, the tensor is what llama.cpp applies: no second scaling.
        let (s, f) = gguf_rope(&with(vec![ty("llama3"), factor(8.0)], true), "llama", 8).unwrap();
        assert!(s.is_none() && f.is_some());

        for ok in [vec![ty("linear"), factor(1.0)], vec![ty("yarn"), factor(0.0)], vec![ty("none"), factor(4.0)]] {
            assert!(gguf_rope(&with(ok, false), "llama", 8).unwrap().0.is_none());
        }
        for (bad, name) in [
            (vec![ty("yarn"), factor(4.0)], "yarn"),
            (vec![factor(2.0)], "linear"),
            (vec![kv("llama.rope.scale_linear", 6, &2f32.to_le_bytes())], "linear"),
        ] {
            let e = gguf_rope(&with(bad, false), "llama", 8).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidModel);
            assert!(e.message.contains(name), "{e}");
        }
    }
}
