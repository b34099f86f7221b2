//! The short names of easel's proto enums, the same for every side: `SAMPLER_DPMPP_2M` is
//! `dpmpp_2m` to ComfyUI, to REST clients and on the command line, `JOB_STATUS_RUNNING` is
//! `running` in filters and metric labels.

use crate::jobs::v1::{JobStatus, Sampler, Scheduler};

/// A proto enum whose values are named `PREFIX_NAME` and known to people (and ComfyUI) by the
/// lowercase `name`. Value 0 is `PREFIX_UNSPECIFIED`, which no name parses to.
pub trait ShortName: Copy + PartialEq + Sized + 'static {
    /// The prefix of every value's proto name, with its underscore (`SAMPLER_`).
    const PREFIX: &'static str;

    /// The proto name (`SAMPLER_DPMPP_2M`).
    fn proto_name(self) -> &'static str;

    /// The value of a proto name.
    fn from_proto_name(name: &str) -> Option<Self>;

    /// The value of a wire number.
    fn from_number(value: i32) -> Option<Self>;

    /// The lowercase name without the prefix (`dpmpp_2m`): ComfyUI's spelling of samplers
    /// and schedulers, and the label of a status.
    fn short_name(self) -> String {
        let name = self.proto_name();
        name.strip_prefix(Self::PREFIX)
            .unwrap_or(name)
            .to_ascii_lowercase()
    }

    /// Parses a short name or a proto name, in any case (`dpmpp_2m`, `DPMPP_2M`,
    /// `SAMPLER_DPMPP_2M`); never the unspecified value.
    fn parse(value: &str) -> Option<Self> {
        let upper = value.to_ascii_uppercase();
        let full = if upper.starts_with(Self::PREFIX) {
            upper
        } else {
            format!("{}{upper}", Self::PREFIX)
        };
        Self::from_proto_name(&full).filter(|parsed| Self::from_number(0) != Some(*parsed))
    }

    /// The short names of every specified value, in the proto's order (for messages that list
    /// what is accepted).
    fn short_names() -> Vec<String> {
        (1..)
            .map_while(Self::from_number)
            .map(Self::short_name)
            .collect()
    }
}

macro_rules! short_name {
    ($enum:ty, $prefix:literal) => {
        impl ShortName for $enum {
            const PREFIX: &'static str = $prefix;

            fn proto_name(self) -> &'static str {
                self.as_str_name()
            }

            fn from_proto_name(name: &str) -> Option<Self> {
                <$enum>::from_str_name(name)
            }

            fn from_number(value: i32) -> Option<Self> {
                <$enum>::try_from(value).ok()
            }
        }
    };
}

short_name!(Sampler, "SAMPLER_");
short_name!(Scheduler, "SCHEDULER_");
short_name!(JobStatus, "JOB_STATUS_");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_comfyuis_spelling() {
        assert_eq!(Sampler::Dpmpp2m.short_name(), "dpmpp_2m");
        assert_eq!(Scheduler::Karras.short_name(), "karras");
        assert_eq!(JobStatus::Running.short_name(), "running");
    }

    #[test]
    fn names_parse_by_short_or_proto_name_in_any_case() {
        assert_eq!(Sampler::parse("dpmpp_2m"), Some(Sampler::Dpmpp2m));
        assert_eq!(Sampler::parse("SAMPLER_EULER"), Some(Sampler::Euler));
        assert_eq!(Scheduler::parse("Karras"), Some(Scheduler::Karras));
        assert_eq!(
            JobStatus::parse("JOB_STATUS_FAILED"),
            Some(JobStatus::Failed)
        );
        assert_eq!(JobStatus::parse("running"), Some(JobStatus::Running));
    }

    #[test]
    fn unspecified_and_unknown_names_do_not_parse() {
        assert_eq!(Sampler::parse("unspecified"), None);
        assert_eq!(Scheduler::parse("SCHEDULER_UNSPECIFIED"), None);
        assert_eq!(JobStatus::parse("nope"), None);
        assert_eq!(Sampler::parse(""), None);
    }

    #[test]
    fn every_specified_value_is_listed_once_and_parses_back() {
        let names = Sampler::short_names();
        assert_eq!(names.first().map(String::as_str), Some("euler"));
        for name in &names {
            assert_eq!(
                Sampler::parse(name).map(Sampler::short_name).as_ref(),
                Some(name)
            );
        }
        assert_eq!(
            JobStatus::short_names(),
            [
                "pending",
                "running",
                "succeeded",
                "failed",
                "cancelled",
                "expired"
            ]
        );
    }
}
