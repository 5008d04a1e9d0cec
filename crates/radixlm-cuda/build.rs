//! Compiles every `kernels/*.cu` to PTX with nvcc; src/ptx.rs embeds the results with `include_str!`.
//!
//! PTX (not cubin) so the driver JITs it for the exact card at load time; the target is `sm_90a`
//! (H100/H200, Hopper-specific instructions allowed), overridable with RADIXLM_CUDA_ARCH (e.g. `sm_80`).
//! nvcc comes from $NVCC, else $CUDA_HOME/bin/nvcc, else PATH; scripts/install-cuda-toolkit.sh installs
//! the pinned CUDA 13.0 nvcc (newer nvcc writes PTX that driver 580 cannot load).
//!
//! `--use_fast_math` only for files listed in FAST_MATH: their math is exp/rsqrt/division on values that
//! stay in range, where the approximate intrinsics are within a few f32 ulp (far below bf16's 2^-8).
//! rope.cu is compiled without it: `sincosf(pos * inv_freq)` takes arguments up to ~1e5 rad, where
//! fast-math's `__sinf`/`__cosf` lose all accuracy.

use std::path::{Path, PathBuf};
use std::process::Command;

const FAST_MATH: &[&str] = &[
    "activation",
    "attention_decode",
    "attention_prefill",
    "embedding",
    "rmsnorm",
];

fn main() {
    let kernels = Path::new("kernels");
    println!("cargo:rerun-if-changed=kernels");
    for var in ["NVCC", "CUDA_HOME", "PATH", "RADIXLM_CUDA_ARCH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let arch = std::env::var("RADIXLM_CUDA_ARCH").unwrap_or_else(|_| "sm_90a".into());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rustc-env=RADIXLM_CUDA_ARCH_BUILT={arch}");
    let nvcc = find_nvcc();
    check_version(&nvcc);

    let mut sources: Vec<PathBuf> = std::fs::read_dir(kernels)
        .expect("read kernels/")
        .map(|e| e.unwrap().path())
        .collect();
    sources.sort();
    for path in &sources {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    for src in sources
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
    {
        let stem = src.file_stem().unwrap().to_str().unwrap();
        let ptx = out_dir.join(format!("{stem}.ptx"));
        let mut cmd = Command::new(&nvcc);
        cmd.arg(format!("-arch={arch}"))
            .args(["-ptx", "-O3", "-std=c++17", "-lineinfo"])
            .arg("-I")
            .arg(kernels)
            .arg(src)
            .arg("-o")
            .arg(&ptx);
        if FAST_MATH.contains(&stem) {
            cmd.arg("--use_fast_math");
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", nvcc.display()));
        if !status.success() {
            panic!("nvcc failed on {} ({status})", src.display());
        }
    }
}

/// Newer nvcc than 13.0 writes PTX (ISA 9.1+) that driver 580, the GPU machine's, refuses to load.
fn check_version(nvcc: &Path) {
    let out = Command::new(nvcc).arg("--version").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !text.contains("release 13.0") {
        let line = text
            .lines()
            .find(|l| l.contains("release"))
            .unwrap_or("unknown version");
        println!(
            "cargo:warning={} is not CUDA 13.0 ({line}); its PTX may not load on driver 580. \
             scripts/install-cuda-toolkit.sh installs the pinned 13.0.",
            nvcc.display()
        );
    }
}

fn find_nvcc() -> PathBuf {
    let candidates = std::env::var_os("NVCC")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::var_os("CUDA_HOME").map(|h| PathBuf::from(h).join("bin/nvcc")))
        .chain(std::env::var_os("PATH").into_iter().flat_map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nvcc"))
                .collect::<Vec<_>>()
        }));
    for c in candidates {
        if c.is_file() {
            return c;
        }
    }
    panic!(
        "\n\nradixlm-cuda needs nvcc (CUDA 13.0.x) to compile its kernels, and none was found \
         ($NVCC, $CUDA_HOME/bin/nvcc, PATH).\nInstall the pinned toolkit from PyPI and put it on PATH:\n\n    \
         eval \"$(scripts/install-cuda-toolkit.sh)\"\n\n"
    );
}
