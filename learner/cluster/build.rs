//! Lets the `learner` binary find libtorch at run time without
//! `LD_LIBRARY_PATH`, and keeps `libtorch_cuda` in its link when the learner
//! links CUDA.
//!
//! The learner crate (`links = "flotilla_learner"`) passes on where libtorch's
//! libraries are and whether it links CUDA; see learner/build.rs.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_FLOTILLA_LEARNER_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=DEP_FLOTILLA_LEARNER_CUDA");
    if let Ok(lib) = std::env::var("DEP_FLOTILLA_LEARNER_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    if std::env::var("DEP_FLOTILLA_LEARNER_CUDA").as_deref() == Ok("1") {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
