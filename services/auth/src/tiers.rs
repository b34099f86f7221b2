//! Tiers (free, pro, enterprise) and their limits, from `EASEL_TIER_<TIER>_<LIMIT>` with
//! defaults.

use easel_proto::account::v1::{Tier, TierLimits};
use easel_runtime::config::Env;

/// Every tier a user can have, in order.
pub const TIERS: [Tier; 3] = [Tier::Free, Tier::Pro, Tier::Enterprise];

/// The limits of every tier.
#[derive(Clone, Debug, PartialEq)]
pub struct Tiers {
    /// Free.
    pub free: TierLimits,
    /// Pro.
    pub pro: TierLimits,
    /// Enterprise.
    pub enterprise: TierLimits,
}

/// The name of a tier in variables and logs (`FREE`, `PRO`, `ENTERPRISE`).
pub fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Unspecified | Tier::Free => "FREE",
        Tier::Pro => "PRO",
        Tier::Enterprise => "ENTERPRISE",
    }
}

/// The built-in limits of a tier.
pub fn default_limits(tier: Tier) -> TierLimits {
    let (rpm, burst, concurrent, per_day, side, steps, batch, priority, retention) = match tier {
        Tier::Unspecified | Tier::Free => (60, 20, 2, 100, 1024_u64, 50, 1, 1, 7),
        Tier::Pro => (600, 100, 8, 5_000, 2048, 100, 4, 2, 30),
        Tier::Enterprise => (6_000, 1_000, 32, 100_000, 4096, 150, 8, 3, 365),
    };
    TierLimits {
        tier: if tier == Tier::Unspecified {
            Tier::Free as i32
        } else {
            tier as i32
        },
        requests_per_minute: rpm,
        burst,
        concurrent_jobs: concurrent,
        jobs_per_day: per_day,
        max_pixels: side * side,
        max_steps: steps,
        max_batch_size: batch,
        queue_priority: priority,
        artifact_retention_days: retention,
    }
}

fn read_limits(env: &mut Env, tier: Tier) -> TierLimits {
    let defaults = default_limits(tier);
    let name = tier_name(tier);
    let mut number = |limit: &str, default: u32, min: u32, max: u32| {
        env.number_in(&format!("EASEL_TIER_{name}_{limit}"), default, min, max)
    };
    let requests_per_minute = number(
        "REQUESTS_PER_MINUTE",
        defaults.requests_per_minute,
        1,
        6_000_000,
    );
    let burst = number("BURST", defaults.burst, 1, 1_000_000);
    let concurrent_jobs = number("CONCURRENT_JOBS", defaults.concurrent_jobs, 1, 100_000);
    let jobs_per_day = number("JOBS_PER_DAY", defaults.jobs_per_day, 1, 100_000_000);
    let max_steps = number("MAX_STEPS", defaults.max_steps, 1, 10_000);
    let max_batch_size = number("MAX_BATCH_SIZE", defaults.max_batch_size, 1, 64);
    let queue_priority = number("QUEUE_PRIORITY", defaults.queue_priority, 0, 3);
    let artifact_retention_days = number(
        "ARTIFACT_RETENTION_DAYS",
        defaults.artifact_retention_days,
        1,
        3_650,
    );
    let max_pixels = env.number_in(
        &format!("EASEL_TIER_{name}_MAX_PIXELS"),
        defaults.max_pixels,
        64 * 64,
        16_384 * 16_384,
    );
    TierLimits {
        tier: defaults.tier,
        requests_per_minute,
        burst,
        concurrent_jobs,
        jobs_per_day,
        max_pixels,
        max_steps,
        max_batch_size,
        queue_priority,
        artifact_retention_days,
    }
}

impl Tiers {
    /// Reads every tier's limits; problems are collected in `env`.
    pub fn from_env(env: &mut Env) -> Tiers {
        Tiers {
            free: read_limits(env, Tier::Free),
            pro: read_limits(env, Tier::Pro),
            enterprise: read_limits(env, Tier::Enterprise),
        }
    }

    /// The limits of `tier` (an unspecified tier is free).
    pub fn limits(&self, tier: Tier) -> &TierLimits {
        match tier {
            Tier::Unspecified | Tier::Free => &self.free,
            Tier::Pro => &self.pro,
            Tier::Enterprise => &self.enterprise,
        }
    }
}

impl Default for Tiers {
    fn default() -> Self {
        Tiers {
            free: default_limits(Tier::Free),
            pro: default_limits(Tier::Pro),
            enterprise: default_limits(Tier::Enterprise),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_grow_with_the_tier_and_name_their_tier() {
        let tiers = Tiers::default();
        for tier in TIERS {
            assert_eq!(tiers.limits(tier).tier, tier as i32);
        }
        assert!(tiers.free.requests_per_minute < tiers.pro.requests_per_minute);
        assert!(tiers.pro.max_pixels < tiers.enterprise.max_pixels);
        assert!(tiers.free.queue_priority < tiers.enterprise.queue_priority);
        assert_eq!(tiers.limits(Tier::Unspecified), &tiers.free);
    }

    #[test]
    fn variables_override_and_bad_values_are_reported() {
        let mut env = Env::from_pairs([
            ("EASEL_TIER_PRO_REQUESTS_PER_MINUTE", "1200"),
            ("EASEL_TIER_FREE_MAX_PIXELS", "262144"),
            ("EASEL_TIER_ENTERPRISE_BURST", "0"),
            ("EASEL_TIER_FREE_QUEUE_PRIORITY", "9"),
            ("EASEL_TIER_PRO_MAX_STEPS", "many"),
        ]);
        let tiers = Tiers::from_env(&mut env);
        assert_eq!(tiers.pro.requests_per_minute, 1200);
        assert_eq!(tiers.free.max_pixels, 262_144);
        let problems: Vec<_> = env
            .finish()
            .unwrap_err()
            .problems
            .into_iter()
            .map(|p| p.variable)
            .collect();
        assert_eq!(
            problems,
            [
                "EASEL_TIER_FREE_QUEUE_PRIORITY",
                "EASEL_TIER_PRO_MAX_STEPS",
                "EASEL_TIER_ENTERPRISE_BURST",
            ]
        );
    }
}
