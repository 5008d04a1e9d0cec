//! Hugging Face safetensors weights (`model.safetensors`, or shards listed in
//! `model.safetensors.index.json`) for untrusted files.
//!
//! Each shard is memory-mapped and its header validated by the `safetensors` crate (header cap, UTF-8,
//! JSON, offsets contiguous and covering the data, checked shape × dtype sizes). On top of that: shard
//! names in the index must stay inside the model directory and exist, a tensor name may appear in one
//! shard only, and only F32 / F16 / BF16 tensors are accepted. Every problem is `ERR_INVALID_MODEL`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use candle_core::{Device, Tensor};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::error::{Error, ErrorCode, Result};

const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";
const MAX_INDEX_BYTES: u64 = 64 << 20;

fn bad(msg: impl Into<String>) -> Error {
    Error::invalid_model(msg)
}

struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range in the shard's map, checked against its length.
    start: usize,
    end: usize,
}

/// The tensors of a model directory; data stays in the maps until `get` converts it.
pub struct SafetensorsWeights {
    shards: Vec<(PathBuf, Mmap)>,
    tensors: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for SafetensorsWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shards: Vec<_> = self.shards.iter().map(|(p, _)| p).collect();
        f.debug_struct("SafetensorsWeights").field("shards", &shards).field("tensors", &self.tensors.len()).finish()
    }
}

fn describe(e: SafeTensorError) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => "file too small to hold a header".into(),
        SafeTensorError::HeaderTooLarge => "header too large (cap 100,000,000 bytes)".into(),
        SafeTensorError::InvalidHeaderLength => "invalid header length (past end of file)".into(),
        SafeTensorError::MetadataIncompleteBuffer => {
            "data size does not match the header (incomplete or trailing bytes)".into()
        }
        e => e.to_string(),
    }
}

/// A shard name from the index as a normalised path relative to the model directory (no `..`).
fn shard_rel(name: &str) -> Result<PathBuf> {
    let mut rel = PathBuf::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            _ => return Err(bad(format!("{INDEX}: shard {name:?} is outside the model directory"))),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(bad(format!("{INDEX}: shard {name:?} is outside the model directory")));
    }
    Ok(rel)
}

/// The index's weight_map: tensor name -> shard file name.
fn read_index(path: &Path) -> Result<BTreeMap<String, String>> {
    let ibad = |m: String| bad(format!("{}: {m}", path.display()));
    let mut text = String::new();
    File::open(path)
        .map_err(|e| ibad(e.to_string()))?
        .take(MAX_INDEX_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| ibad(format!("unreadable index: {e}")))?;
    if text.len() as u64 > MAX_INDEX_BYTES {
        return Err(ibad(format!("index larger than {MAX_INDEX_BYTES} bytes")));
    }
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ibad(format!("index is not valid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ibad("index has no weight_map object".into()))?;
    if map.is_empty() {
        return Err(ibad("index weight_map is empty".into()));
    }
    map.iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) => Ok((k.clone(), s.to_string())),
            None => Err(ibad(format!("weight_map entry {k} is not a string"))),
        })
        .collect()
}

impl SafetensorsWeights {
    /// Opens `dir/model.safetensors.index.json` (preferred) or `dir/model.safetensors`.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            let msg = format!("model directory {} not found", dir.display());
            return Err(Error::new(ErrorCode::ModelNotFound, msg));
        }
        let index_path = dir.join(INDEX);
        let weight_map = if index_path.is_file() { Some(read_index(&index_path)?) } else { None };
        let files: BTreeSet<PathBuf> = match &weight_map {
            Some(m) => m.values().map(|f| shard_rel(f)).collect::<Result<_>>()?,
            None if dir.join(SINGLE).is_file() => BTreeSet::from([PathBuf::from(SINGLE)]),
            None => return Err(bad(format!("no {SINGLE} or {INDEX} in {}", dir.display()))),
        };
        let mut w = SafetensorsWeights { shards: Vec::with_capacity(files.len()), tensors: BTreeMap::new() };
        for rel in files {
            w.add_shard(dir.join(&rel), &rel)?;
        }
        for (tensor, file) in weight_map.iter().flatten() {
            let found = w.tensors.get(tensor).map(|e| &w.shards[e.shard].0);
            if found != Some(&dir.join(shard_rel(file)?)) {
                return Err(bad(format!("{INDEX} lists tensor {tensor} in shard {file}, which does not contain it")));
            }
        }
        Ok(w)
    }

    fn add_shard(&mut self, path: PathBuf, rel: &Path) -> Result<()> {
        let sbad = |m: String| bad(format!("safetensors file {}: {m}", path.display()));
        // Checked before opening: opening a FIFO would block.
        if std::fs::metadata(&path).is_ok_and(|m| !m.is_file()) {
            return Err(sbad("not a regular file".into()));
        }
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => bad(format!("missing shard {} ({})", rel.display(), path.display())),
            _ => sbad(format!("cannot open: {e}")),
        })?;
        // SAFETY: the map is only read. Files must not be truncated while the model is loaded (a
        // read past the new end would fault); every byte range used is checked against its length.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| sbad(format!("cannot map: {e}")))?;
        let (header_len, meta) = SafeTensors::read_metadata(&map).map_err(|e| sbad(describe(e)))?;
        let base = 8 + header_len;
        let shard = self.shards.len();
        for (tname, info) in meta.tensors() {
            if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                return Err(sbad(format!(
                    "tensor {tname} has unsupported dtype {:?} (F32, F16, BF16 only)",
                    info.dtype
                )));
            }
            let (s, e) = info.data_offsets;
            let range = base.checked_add(s).zip(base.checked_add(e)).filter(|&(s, e)| s <= e && e <= map.len());
            let (start, end) = range.ok_or_else(|| sbad(format!("tensor {tname}: offsets past end of file")))?;
            if let Some(prev) = self.tensors.get(&tname) {
                let other = self.shards[prev.shard].0.display();
                return Err(sbad(format!("duplicate tensor {tname} (also in {other})")));
            }
            self.tensors.insert(tname, Entry { shard, dtype: info.dtype, shape: info.shape.clone(), start, end });
        }
        self.shards.push((path, map));
        Ok(())
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|e| e.shape.clone())
    }

    /// A tensor's stored bytes and metadata.
    fn raw(&self, name: &str) -> Result<(&Entry, &[u8])> {
        let e = self.tensors.get(name).ok_or_else(|| bad(format!("missing tensor {name}")))?;
        let (path, map) = &self.shards[e.shard];
        let bytes = map
            .get(e.start..e.end)
            .ok_or_else(|| bad(format!("safetensors file {}: tensor {name} out of bounds", path.display())))?;
        Ok((e, bytes))
    }

    /// A tensor as bf16 values with its shape: stored bf16 is copied as is (the GPU backend loads a
    /// bf16 checkpoint without a round trip through f32), f32/f16 are rounded once.
    pub fn get_bf16(&self, name: &str) -> Result<(Vec<bf16>, Vec<usize>)> {
        let (e, bytes) = self.raw(name)?;
        let data: Vec<bf16> = match e.dtype {
            Dtype::BF16 => bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]])).collect(),
            Dtype::F32 => bytes.chunks_exact(4).map(|c| bf16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|c| bf16::from_f32(f16::from_le_bytes([c[0], c[1]]).to_f32())).collect(),
            d => return Err(bad(format!("tensor {name}: unsupported dtype {d:?}"))),
        };
        Ok((data, e.shape.clone()))
    }

    /// A tensor converted to f32 on `device`.
    pub fn get(&self, name: &str, device: &Device) -> Result<Tensor> {
        let (e, bytes) = self.raw(name)?;
        let data: Vec<f32> = match e.dtype {
            Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            d => return Err(bad(format!("tensor {name}: unsupported dtype {d:?}"))),
        };
        Tensor::from_vec(data, e.shape.as_slice(), device)
            .map_err(|err| Error::from(err).context(format!("tensor {name}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory holding `files`, removed when dropped.
    struct Dir(PathBuf);
    impl Dir {
        fn new(files: &[(&str, Vec<u8>)]) -> Dir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let d = std::env::temp_dir().join(format!("radixlm-st-test-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            for (name, bytes) in files {
                std::fs::write(d.join(name), bytes).unwrap();
            }
            Dir(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn st(header: &[u8], data: &[u8]) -> Vec<u8> {
        [&(header.len() as u64).to_le_bytes()[..], header, data].concat()
    }

    /// F32 "a" [2, 2], F16 "b" [3], BF16 "c" [1, 2].
    fn valid() -> Vec<u8> {
        let h = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},
            "b":{"dtype":"F16","shape":[3],"data_offsets":[16,22]},"c":{"dtype":"BF16","shape":[1,2],"data_offsets":[22,26]}}"#;
        let mut data: Vec<u8> = [1f32, 2., 3., 4.].iter().flat_map(|x| x.to_le_bytes()).collect();
        data.extend([0.5f32, -1., 2.].iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()));
        data.extend([3f32, -0.25].iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()));
        st(h.as_bytes(), &data)
    }

    fn f32_file(name: &str, vals: &[f32]) -> Vec<u8> {
        let n = vals.len();
        let h = format!(r#"{{"{name}":{{"dtype":"F32","shape":[{n}],"data_offsets":[0,{}]}}}}"#, 4 * n);
        st(h.as_bytes(), &vals.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
    }

    fn index(entries: &[(&str, &str)]) -> Vec<u8> {
        let m: serde_json::Map<_, _> = entries.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
        serde_json::json!({"metadata": {"total_size": 0}, "weight_map": m}).to_string().into_bytes()
    }

    fn expect_err(files: &[(&str, Vec<u8>)], kw: &str) {
        let d = Dir::new(files);
        match SafetensorsWeights::open(&d.0) {
            Ok(_) => panic!("corrupt model opened (expected error containing {kw:?})"),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::InvalidModel, "{e}");
                assert!(e.message.contains(kw), "message {:?} lacks {kw:?}", e.message);
            }
        }
    }

    fn single(header: &str, data: &[u8], kw: &str) {
        expect_err(&[(SINGLE, st(header.as_bytes(), data))], kw);
    }

    fn vec_of(w: &SafetensorsWeights, name: &str) -> Vec<f32> {
        w.get(name, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn single_file_loads() {
        let d = Dir::new(&[(SINGLE, valid())]);
        let w = SafetensorsWeights::open(&d.0).unwrap();
        assert_eq!(w.names().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(w.has("a") && !w.has("z"));
        assert_eq!(w.shape("a"), Some(vec![2, 2]));
        assert_eq!(w.shape("z"), None);
        let a = w.get("a", &Device::Cpu).unwrap();
        assert_eq!((a.dims(), a.dtype()), (&[2usize, 2][..], candle_core::DType::F32));
        assert_eq!(vec_of(&w, "a"), [1., 2., 3., 4.]);
        assert_eq!(vec_of(&w, "b"), [0.5, -1., 2.]);
        assert_eq!(vec_of(&w, "c"), [3., -0.25]);
        let e = w.get("z", &Device::Cpu).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidModel);
        assert!(e.message.contains("missing tensor z"), "{e}");
    }

    #[test]
    fn sharded_loads() {
        let d = Dir::new(&[
            (INDEX, index(&[("x", "m-1.safetensors"), ("y", "m-2.safetensors"), ("z", "./m-2.safetensors")])),
            ("m-1.safetensors", f32_file("x", &[1., 2.])),
            ("m-2.safetensors", st(br#"{"y":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"z":{"dtype":"F16","shape":[1],"data_offsets":[4,6]}}"#,
                &[&5f32.to_le_bytes()[..], &f16::from_f32(6.).to_le_bytes()].concat())),
        ]);
        let w = SafetensorsWeights::open(&d.0).unwrap();
        assert_eq!(w.names().collect::<Vec<_>>(), ["x", "y", "z"]);
        assert_eq!(vec_of(&w, "x"), [1., 2.]);
        assert_eq!(vec_of(&w, "y"), [5.]);
        assert_eq!(vec_of(&w, "z"), [6.]);
    }

    #[test]
    fn every_truncation_fails() {
        let b = valid();
        for n in 0..b.len() {
            let d = Dir::new(&[(SINGLE, b[..n].to_vec())]);
            let e = SafetensorsWeights::open(&d.0).err().unwrap_or_else(|| panic!("prefix of {n} bytes loaded"));
            assert_eq!(e.code, ErrorCode::InvalidModel, "prefix {n}: {e}");
        }
    }

    #[test]
    fn missing_dir_and_empty_dir() {
        let e = SafetensorsWeights::open(Path::new("/nonexistent/radixlm-model")).unwrap_err();
        assert_eq!(e.code, ErrorCode::ModelNotFound);
        expect_err(&[], "no model.safetensors");
    }

    #[test]
    fn header_length_past_file() {
        expect_err(&[(SINGLE, [&1000u64.to_le_bytes()[..], b"{}"].concat())], "header length");
    }

    #[test]
    fn header_too_large() {
        for n in [100_000_001u64, u64::MAX] {
            expect_err(&[(SINGLE, [&n.to_le_bytes()[..], b"{}"].concat())], "header too large");
        }
    }

    #[test]
    fn file_too_small() {
        expect_err(&[(SINGLE, vec![1, 2, 3])], "too small");
    }

    #[test]
    fn header_not_utf8() {
        expect_err(&[(SINGLE, st(&[b'{', 0xff, 0xfe, b'}'], &[]))], "UTF-8");
    }

    #[test]
    fn header_not_json() {
        single("not json at all", &[], "JSON");
        single(r#"{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#, &[0], "JSON");
    }

    #[test]
    fn overlapping_offsets() {
        single(
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            &[0; 16],
            "invalid offset",
        );
        let ten: Vec<String> =
            (0..10).map(|i| format!(r#""t{i}":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#)).collect();
        single(&format!("{{{}}}", ten.join(",")), &[0; 4], "invalid offset");
    }

    #[test]
    fn duplicate_name_in_header() {
        let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        let d = Dir::new(&[(SINGLE, st(h.as_bytes(), &[0; 8]))]);
        let e = SafetensorsWeights::open(&d.0).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidModel, "{e}");
        assert!(e.message.contains("invalid offset"), "{e}");
    }

    #[test]
    fn shard_not_a_regular_file() {
        let d = Dir::new(&[(INDEX, index(&[("x", "sub")]))]);
        std::fs::create_dir(d.0.join("sub")).unwrap();
        let e = SafetensorsWeights::open(&d.0).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidModel);
        assert!(e.message.contains("not a regular file"), "{e}");
    }

    #[test]
    fn offsets_beyond_buffer() {
        single(r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, &[0; 8], "data size does not match");
        single(r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, &[0; 20], "trailing");
    }

    #[test]
    fn shape_dtype_mismatch() {
        single(r#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,8]}}"#, &[0; 8], "invalid shape");
    }

    #[test]
    fn shape_overflow() {
        single(r#"{"a":{"dtype":"F32","shape":[2,9223372036854775808],"data_offsets":[0,8]}}"#, &[0; 8], "overflow");
    }

    #[test]
    fn unsupported_dtype() {
        single(r#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#, &[0; 8], "unsupported dtype I64");
        single(r#"{"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}"#, &[0; 2], "unsupported dtype F8_E4M3");
    }

    #[test]
    fn index_path_traversal() {
        for shard in ["../x.safetensors", "/tmp/x.safetensors", "sub/../../x.safetensors", "", "."] {
            expect_err(
                &[(INDEX, index(&[("x", shard)])), ("x.safetensors", f32_file("x", &[1.]))],
                "outside the model directory",
            );
        }
    }

    #[test]
    fn index_missing_shard() {
        expect_err(&[(INDEX, index(&[("x", "gone.safetensors")]))], "missing shard gone.safetensors");
    }

    #[test]
    fn duplicate_tensor_across_shards() {
        let files = [
            (INDEX, index(&[("x", "m-1.safetensors"), ("y", "m-2.safetensors")])),
            ("m-1.safetensors", f32_file("x", &[1.])),
            ("m-2.safetensors", st(br#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, &[0; 8])),
        ];
        expect_err(&files, "duplicate tensor x");
    }

    #[test]
    fn index_lists_tensor_not_in_shard() {
        expect_err(
            &[(INDEX, index(&[("w", "m.safetensors")])), ("m.safetensors", f32_file("x", &[1.]))],
            "does not contain",
        );
    }

    #[test]
    fn bad_index() {
        let shard = ("m.safetensors", f32_file("x", &[1.]));
        expect_err(&[(INDEX, b"{not json".to_vec()), shard.clone()], "not valid JSON");
        expect_err(&[(INDEX, br#"{"metadata":{}}"#.to_vec()), shard.clone()], "no weight_map");
        expect_err(&[(INDEX, br#"{"weight_map":{}}"#.to_vec()), shard.clone()], "empty");
        expect_err(&[(INDEX, br#"{"weight_map":{"x":3}}"#.to_vec()), shard], "not a string");
    }
}
