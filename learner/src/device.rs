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
    #[error("--device cuda was requested but CUDA is not available (cuda devices: {count}; build with `--features cuda` against a CUDA libtorch)")]
    CudaUnavailable { count: i64 },
}

impl DeviceChoice {
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

    #[test]
    fn auto_matches_cuda_availability() {
        let d = DeviceChoice::Auto.resolve().unwrap();
        assert_eq!(d.is_cuda(), tch::Cuda::is_available());
    }
}
