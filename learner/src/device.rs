//! Choosing the libtorch device.

/// Where training runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when a GPU is visible, else CPU.
    Auto,
    Cpu,
    Cuda,
}

/// Errors resolving a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "--device cuda was requested but CUDA is not available (cuda devices: {count}; {})",
        cuda_support()
    )]
    CudaUnavailable { count: i64 },
}

/// Whether this build can use CUDA at all, in words.
pub fn cuda_support() -> &'static str {
    if cfg!(flotilla_cuda) {
        "this learner is built with CUDA support"
    } else {
        "this learner is built without CUDA support (its libtorch has no libtorch_cuda, or it was built with FLOTILLA_CUDA=0)"
    }
}

impl DeviceChoice {
    /// Why `resolve` chose `device`, for the start-up log.
    pub fn reason(self, device: tch::Device) -> String {
        match (self, device.is_cuda()) {
            (DeviceChoice::Cpu, _) => "--device cpu".into(),
            (DeviceChoice::Cuda, _) => "--device cuda".into(),
            (DeviceChoice::Auto, true) => format!(
                "--device auto: {} CUDA device(s) visible, using the first",
                tch::Cuda::device_count()
            ),
            (DeviceChoice::Auto, false) if cfg!(flotilla_cuda) => {
                "--device auto: no CUDA device visible".into()
            }
            (DeviceChoice::Auto, false) => format!("--device auto: {}", cuda_support()),
        }
    }

    /// Resolves the choice against what this process can see.
    pub fn resolve(self) -> Result<tch::Device, DeviceError> {
        match self {
            DeviceChoice::Cpu => Ok(tch::Device::Cpu),
            DeviceChoice::Auto => Ok(tch::Device::cuda_if_available()),
            DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(tch::Device::Cuda(0)),
            DeviceChoice::Cuda => Err(DeviceError::CudaUnavailable {
                count: tch::Cuda::device_count(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_always_resolves_and_computes() {
        let d = DeviceChoice::Cpu.resolve().unwrap();
        let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]).to_device(d);
        assert_eq!(t.sum(tch::Kind::Float).double_value(&[]), 6.0);
    }

    /// `auto` is CUDA exactly when a device is counted, and says why.
    #[test]
    fn auto_follows_the_device_count_and_says_why() {
        let d = DeviceChoice::Auto.resolve().unwrap();
        let count = tch::Cuda::device_count();
        assert_eq!(d.is_cuda(), count > 0);
        let why = DeviceChoice::Auto.reason(d);
        if count > 0 {
            assert!(why.contains(&format!("{count} CUDA device(s)")), "{why}");
        } else {
            assert!(
                why.contains("no CUDA device") || why.contains("without CUDA"),
                "{why}"
            );
            let e = DeviceChoice::Cuda.resolve().unwrap_err().to_string();
            assert!(
                e.contains("--device cuda") && e.contains("cuda devices: 0"),
                "{e}"
            );
        }
    }
}
