//! Lets the learner find libtorch at run time without `LD_LIBRARY_PATH`, and
//! links CUDA whenever the libtorch it builds against has it.
//!
//! torch-sys (`links = "tch"`) tells its direct dependents where libtorch's libraries are
//! (`DEP_TCH_LIBTORCH_LIB`); we record that folder as an rpath of the
//! learner's binaries. libtorch's own libraries carry rpaths to their CUDA
//! runtime neighbours, so nothing else is needed.
//!
//! CUDA: when that folder holds `libtorch_cuda.so` (PyPI's Linux wheel of
//! torch does), `libtorch_cuda` is kept in the link, so `--device auto` uses a
//! GPU wherever there is one and falls back to the CPU elsewhere. Rust links
//! with `--as-needed`, which would otherwise drop it (nothing references its
//! symbols directly) and leave `tch::Cuda::is_available()` false even on a
//! GPU. `FLOTILLA_CUDA=0` at build time leaves it out (a smaller, CPU-only
//! binary: the container images built by deploy/build-images.sh); the `cuda`
//! feature requires it (and wins over `FLOTILLA_CUDA=0`) and fails the build
//! without a CUDA libtorch. The
//! choice is visible to the code as `cfg(flotilla_cuda)`.
//!
//! Link arguments apply to this package's own tests and benches only, so both
//! facts are also passed on (`links = "flotilla_learner"`) to the crate that
//! builds the `learner` binary: `DEP_FLOTILLA_LEARNER_LIBTORCH_LIB` and
//! `DEP_FLOTILLA_LEARNER_CUDA` (see learner/cluster/build.rs).

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=FLOTILLA_CUDA");
    println!("cargo:rustc-check-cfg=cfg(flotilla_cuda)");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").ok();
    if let Some(lib) = &lib {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:libtorch_lib={lib}");
    }
    let has_cuda = lib
        .as_deref()
        .is_some_and(|l| Path::new(l).join("libtorch_cuda.so").exists());
    let required = std::env::var_os("CARGO_FEATURE_CUDA").is_some();
    let opted_out = std::env::var("FLOTILLA_CUDA").as_deref() == Ok("0");
    if required && !has_cuda {
        panic!(
            "the `cuda` feature needs a CUDA libtorch, and {} has no libtorch_cuda.so",
            lib.as_deref().unwrap_or("libtorch's lib folder")
        );
    }
    if required || (has_cuda && !opted_out) {
        println!("cargo:cuda=1");
        println!("cargo:rustc-cfg=flotilla_cuda");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
