//! Lets the learner find libtorch at run time without `LD_LIBRARY_PATH`.
//!
//! torch-sys (`links = "tch"`) tells its direct dependents where libtorch's libraries are
//! (`DEP_TCH_LIBTORCH_LIB`); we record that folder as an rpath of the
//! learner's binaries. libtorch's own libraries carry rpaths to their CUDA
//! runtime neighbours, so nothing else is needed.
//!
//! With the `cuda` feature, `libtorch_cuda` is kept in the link: Rust links with
//! `--as-needed`, which otherwise drops it (nothing references its symbols
//! directly) and leaves `tch::Cuda::is_available()` false even on a GPU.
//!
//! Link arguments apply to this package's own tests and benches only, so both
//! facts are also passed on (`links = "flotilla_learner"`) to the crate that
//! builds the `learner` binary: `DEP_FLOTILLA_LEARNER_LIBTORCH_LIB` and
//! `DEP_FLOTILLA_LEARNER_CUDA` (see learner/cluster/build.rs).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:libtorch_lib={lib}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:cuda=1");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
