//! The client commands.

pub mod certs;
pub mod generate;
pub mod jobs;
pub mod keys;
pub mod models;

use easel_proto::jobs::v1::{Sampler, Scheduler};
use easel_proto::names::ShortName;

/// Parses a sampler given as ComfyUI's name (`dpmpp_2m`) or the enum's (`SAMPLER_DPMPP_2M`).
pub fn parse_sampler(value: &str) -> Result<Sampler, String> {
    Sampler::parse(value.trim())
        .ok_or_else(|| format!("unknown sampler {value:?} (e.g. euler, dpmpp_2m)"))
}

/// Parses a scheduler like [`parse_sampler`].
pub fn parse_scheduler(value: &str) -> Result<Scheduler, String> {
    Scheduler::parse(value.trim())
        .ok_or_else(|| format!("unknown scheduler {value:?} (e.g. normal, karras)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samplers_parse_by_comfyui_or_enum_name() {
        assert_eq!(parse_sampler("dpmpp_2m"), Ok(Sampler::Dpmpp2m));
        assert_eq!(parse_sampler("SAMPLER_EULER"), Ok(Sampler::Euler));
        assert!(parse_sampler("unspecified").is_err());
        assert!(parse_sampler("nope").is_err());
        assert_eq!(parse_scheduler("karras"), Ok(Scheduler::Karras));
    }
}
