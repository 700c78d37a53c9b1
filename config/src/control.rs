//! The `[control]` section of the configuration: the predictive loop, its history, the agents'
//! endpoint, health checks and the autoscale hook. Every field has a default; an absent section
//! leaves the loop off.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Most shards a session can have (the dataplane's shard-set size).
pub const MAX_SHARDS: u8 = shardline_common::consts::MAX_SHARDS as u8;

/// Longest period detected (steps): a week of 5-minute steps. It bounds the detection's cost
/// (O(series × period)) and the seasonal models' memory.
pub const MAX_PERIOD: usize = 2016;

/// Most downsampling tiers a history store keeps.
pub const MAX_TIERS: usize = 4;

/// Most probes in a row `health_fall` and `health_rise` may ask for.
pub const MAX_HEALTH_RUN: u32 = 10;

/// What the daemon does with a history file it cannot read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnCorrupt {
    /// Move it aside to `<file>.corrupt` and start empty, with a warning.
    #[default]
    Recover,
    /// Refuse to start.
    Refuse,
}

/// `control.period`: how the seasonal models get their season length.
///
/// In TOML, `"auto"` (default) or a number of ticks (`0`: no season). Serialized the same way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Period {
    /// Detected on each session's history by the loop, and redone as the history grows.
    #[default]
    Auto,
    /// This many ticks for every session; 0 for none.
    Fixed(usize),
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => s.serialize_str("auto"),
            Self::Fixed(p) => s.serialize_u64(*p as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Period;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"auto\" or a season length in ticks (0: none)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Period, E> {
                match v {
                    "auto" => Ok(Period::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Period, E> {
                usize::try_from(v)
                    .map(Period::Fixed)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Period, E> {
                u64::try_from(v)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// How the loop sizes a session's shard set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Controller {
    /// From the upper forecast over the horizon, with headroom, dwell and hysteresis
    /// (default).
    #[default]
    Predictive,
    /// The Kubernetes HPA rule on the observed rate: `ceil(observed / (capacity × 0.8))`,
    /// 10 % tolerance, 5-minute scale-down stabilisation. For comparison and as a fallback.
    Reactive,
}

/// `[control]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// `predictive` (default) or `reactive`: how shard counts are decided.
    #[serde(default)]
    pub controller: Controller,
    /// Tick length, ms (default 1000).
    #[serde(default = "d_tick_ms")]
    pub tick_ms: u64,
    /// Forecast horizon of shard decisions, in ticks (default 3).
    #[serde(default = "d_horizon")]
    pub horizon: usize,
    /// Season length in ticks for the seasonal models: `"auto"` (default) detects it per
    /// session, a number fixes it (0: none).
    #[serde(default)]
    pub period: Period,
    /// Load (packets per second) one shard carries at full use (default 1000).
    #[serde(default = "d_capacity")]
    pub per_shard_capacity: f64,
    /// Bytes per second one shard carries at full use (its share of a backend's network);
    /// unset (default): shard counts follow packets alone. Set, a session gets the larger of
    /// the shard counts its packets and its bytes need.
    pub per_shard_bytes: Option<f64>,
    /// Spare capacity on the session's expected load, added to the upper bound over the lead
    /// window (default 0.25: a steady load is sized at 1.25 × itself, as the HPA rule's 0.8
    /// target sizes it).
    #[serde(default = "d_headroom")]
    pub headroom: f64,
    /// Extra margin a scale-in must leave (default 0.1).
    #[serde(default = "d_hysteresis")]
    pub hysteresis: f64,
    /// Least seconds after a change before a scale-in (default 10); scale-out never waits.
    #[serde(default = "d_dwell")]
    pub min_dwell_secs: f64,
    /// Seconds the forecast must stay low before a scale-in (default 60).
    #[serde(default = "d_scale_in")]
    pub scale_in_delay_secs: f64,
    /// Seconds a session with a detected season looks ahead on a scale-in instead of waiting
    /// `scale_in_delay_secs` (default 0: off, every session waits): it scales in at once to
    /// what the bound, raised by the rise the season's shape forecasts within that window,
    /// still needs. See docs/replay.md.
    #[serde(default)]
    pub scale_in_lookahead_secs: f64,
    /// CPU core the loop's thread is pinned to (default: the last core).
    pub core: Option<usize>,
    /// Address of the agents' endpoint (`/v1/agents`), e.g. `0.0.0.0:7070`.
    pub listen: Option<SocketAddr>,
    /// Directory of the agents' bearer tokens: one file per backend, `ID.token` (one token a
    /// line; any line is accepted, for rotation). Read on every agent request, so a new
    /// backend's file needs no restart. An agent may report and register only for the backend
    /// its token is for.
    pub agent_token_dir: Option<PathBuf>,
    /// Accept agents without tokens (default false). With neither this nor
    /// `agent_token_dir`, the agents' endpoint refuses every request.
    #[serde(default)]
    pub insecure_agents: bool,
    /// Health-check interval, ms (default 1000).
    #[serde(default = "d_health_ms")]
    pub health_interval_ms: u64,
    /// Failed probes in a row that take a healthy backend down (default 3); probes run every
    /// `health_interval_ms / health_fall`, so a dead backend is still out within an interval.
    #[serde(default = "d_fall")]
    pub health_fall: u32,
    /// Passing probes in a row that bring a down backend back (default 2).
    #[serde(default = "d_rise")]
    pub health_rise: u32,
    /// Seconds a drained backend keeps its placed sessions and established flows (default
    /// 30); then it leaves every shard set and its flows are re-decided.
    #[serde(default = "d_drain")]
    pub drain_timeout_secs: f64,
    /// Seconds without traffic after which a session leaves the control loop's memory
    /// (default 600); its placement stays, and traffic brings it back. 0 never forgets.
    #[serde(default = "d_forget")]
    pub forget_after_secs: f64,
    /// History file (redb); none keeps no history.
    pub history_path: Option<PathBuf>,
    /// Downsampling tiers, finest first (default 1 s for an hour, 1 min for a week).
    #[serde(default = "d_tiers")]
    pub history_tiers: Vec<TierConfig>,
    /// `recover` (default: move a corrupt file aside, start empty) or `refuse`.
    #[serde(default)]
    pub history_on_corrupt: OnCorrupt,
    /// The autoscale hook.
    pub hook: Option<HookConfig>,
    /// Priors by session class (`interactive`, `bulk`, …).
    #[serde(default)]
    pub classes: BTreeMap<String, ClassPrior>,
}

/// One downsampling tier.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Bucket width, seconds.
    pub step_secs: u64,
    /// Age after which buckets are deleted, seconds.
    pub keep_secs: u64,
}

/// `[control.hook]`: what to call when healthy backends will not carry the forecast load.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// A program and its arguments; gets the shortfall JSON on stdin and in
    /// `SHARDLINE_SHORTFALL`.
    pub command: Option<Vec<String>>,
    /// An `http://host:port/path` URL; gets the shortfall JSON by POST.
    pub webhook: Option<String>,
    /// How far ahead the fleet's load is forecast for the hook, seconds (default 30).
    #[serde(default = "d_lead")]
    pub lead_secs: f64,
    /// Least seconds between two calls (default 30).
    #[serde(default = "d_lead")]
    pub cooldown_secs: f64,
}

/// A class's prior for a new session.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassPrior {
    /// Expected load (packets per second) before any sample.
    #[serde(default)]
    pub rate: f64,
    /// Shards a new session starts with (default 1).
    #[serde(default = "d_shards")]
    pub shards: u8,
}

fn d_tick_ms() -> u64 {
    1000
}
fn d_horizon() -> usize {
    3
}
fn d_capacity() -> f64 {
    1000.0
}
fn d_headroom() -> f64 {
    0.25
}
fn d_hysteresis() -> f64 {
    0.1
}
fn d_dwell() -> f64 {
    10.0
}
fn d_scale_in() -> f64 {
    60.0
}
fn d_health_ms() -> u64 {
    1000
}
fn d_fall() -> u32 {
    3
}
fn d_rise() -> u32 {
    2
}
fn d_drain() -> f64 {
    30.0
}
fn d_forget() -> f64 {
    600.0
}
fn d_lead() -> f64 {
    30.0
}
fn d_shards() -> u8 {
    1
}
/// The default history tiers: 1 s buckets for an hour, 1 min buckets for a week.
pub fn default_tiers() -> Vec<TierConfig> {
    vec![
        TierConfig {
            step_secs: 1,
            keep_secs: 3600,
        },
        TierConfig {
            step_secs: 60,
            keep_secs: 7 * 24 * 3600,
        },
    ]
}

fn d_tiers() -> Vec<TierConfig> {
    default_tiers()
}

fn invalid(field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: format!("control.{field}"),
        problem: problem.into(),
    }
}

impl Default for ControlConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

impl ControlConfig {
    /// The `[control]` section of the TOML file at `path`, validated: a whole daemon
    /// configuration (only its `[control]` is read; the rest is neither needed nor checked) or
    /// a file holding that section alone, for tools that run the loop without a dataplane
    /// (`shardline replay`). A file without the section is an error, not the defaults: a
    /// misspelt `[control]` would otherwise run the loop with settings nobody chose.
    pub fn load_section(path: &std::path::Path) -> Result<Self, ConfigError> {
        crate::load_with(path, Self::parse_section)
    }

    /// [`Self::load_section`] on TOML text; `origin` names it in errors.
    pub fn parse_section(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let parse = |message: String| ConfigError::Parse {
            path: origin.to_owned(),
            message,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| parse(e.to_string()))?;
        let section = table.remove("control").ok_or_else(|| {
            parse("no [control] section (the loop's settings are read from it)".to_owned())
        })?;
        let control: Self = section
            .try_into()
            .map_err(|e: toml::de::Error| parse(format!("in [control]: {e}")))?;
        control.validate()?;
        Ok(control)
    }

    /// Checks every field's range; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(10..=3_600_000).contains(&self.tick_ms) {
            return Err(invalid("tick_ms", "must be 10 to 3600000"));
        }
        if !(1..=3600).contains(&self.horizon) {
            return Err(invalid("horizon", "must be 1 to 3600 ticks"));
        }
        if matches!(self.period, Period::Fixed(p) if p > MAX_PERIOD) {
            return Err(invalid("period", format!("must be at most {MAX_PERIOD}")));
        }
        if !(self.per_shard_capacity.is_finite() && self.per_shard_capacity > 0.0) {
            return Err(invalid(
                "per_shard_capacity",
                format!(
                    "must be positive and finite, got {}",
                    self.per_shard_capacity
                ),
            ));
        }
        if let Some(bytes) = self.per_shard_bytes {
            if !(bytes.is_finite() && bytes > 0.0) {
                return Err(invalid(
                    "per_shard_bytes",
                    format!("must be positive and finite bytes per second, got {bytes}"),
                ));
            }
        }
        for (name, v) in [("headroom", self.headroom), ("hysteresis", self.hysteresis)] {
            if !(0.0..1.0).contains(&v) {
                return Err(invalid(name, format!("must be within 0..1, got {v}")));
            }
        }
        for (name, v) in [
            ("min_dwell_secs", self.min_dwell_secs),
            ("scale_in_delay_secs", self.scale_in_delay_secs),
            ("scale_in_lookahead_secs", self.scale_in_lookahead_secs),
            ("drain_timeout_secs", self.drain_timeout_secs),
            ("forget_after_secs", self.forget_after_secs),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(name, "must be a non-negative number of seconds"));
            }
        }
        if self.agent_token_dir.is_some() && self.insecure_agents {
            return Err(invalid(
                "insecure_agents",
                "cannot be true with `agent_token_dir` set; choose tokens or none",
            ));
        }
        if self.health_interval_ms < 10 {
            return Err(invalid("health_interval_ms", "must be at least 10"));
        }
        for (name, v) in [
            ("health_fall", self.health_fall),
            ("health_rise", self.health_rise),
        ] {
            if !(1..=MAX_HEALTH_RUN).contains(&v) {
                return Err(invalid(
                    name,
                    format!("must be 1 to {MAX_HEALTH_RUN} probes in a row, got {v}"),
                ));
            }
        }
        if self.history_tiers.is_empty() || self.history_tiers.len() > MAX_TIERS {
            return Err(invalid(
                "history_tiers",
                format!("needs 1 to {MAX_TIERS} tiers"),
            ));
        }
        for (i, t) in self.history_tiers.iter().enumerate() {
            if t.step_secs == 0 || t.keep_secs < t.step_secs {
                return Err(invalid(
                    &format!("history_tiers[{i}]"),
                    "needs step_secs ≥ 1 and keep_secs ≥ step_secs",
                ));
            }
        }
        if let Some(hook) = &self.hook {
            if hook.command.is_none() == hook.webhook.is_none() {
                return Err(invalid("hook", "set exactly one of `command` or `webhook`"));
            }
            if hook.command.as_ref().is_some_and(|c| c.is_empty()) {
                return Err(invalid("hook.command", "needs a program"));
            }
            if let Some(url) = &hook.webhook {
                check_http_url(url).map_err(|problem| invalid("hook.webhook", problem))?;
            }
            for (name, v) in [
                ("hook.lead_secs", hook.lead_secs),
                ("hook.cooldown_secs", hook.cooldown_secs),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(invalid(name, "must be a non-negative number of seconds"));
                }
            }
        }
        for (name, prior) in &self.classes {
            if !(1..=MAX_SHARDS).contains(&prior.shards) {
                return Err(invalid(
                    &format!("classes.{name}.shards"),
                    format!("must be 1 to {MAX_SHARDS}"),
                ));
            }
            if !(prior.rate.is_finite() && prior.rate >= 0.0) {
                return Err(invalid(&format!("classes.{name}.rate"), "must be ≥ 0"));
            }
        }
        Ok(())
    }

    /// The tick length.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }
}

/// Checks that `url` is an `http://` URL with a host: what the daemon's HTTP client (plain
/// HTTP, no TLS) can call.
pub fn check_http_url(url: &str) -> Result<(), String> {
    parse_http_url(url).map(drop)
}

/// Parses an `http://` URL with a host (see [`check_http_url`]).
pub fn parse_http_url(url: &str) -> Result<url::Url, String> {
    // `Url::parse` would also take `http:host`; insist on the form the docs show.
    if !url.starts_with("http://") {
        return Err(format!(
            "{url:?}: expected http://host[:port]/path (https is not supported)"
        ));
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?}: no host"));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `shardline replay --config`: a daemon configuration or the section alone; a file
    /// without the section, a misspelt key and a value out of range are refused by name.
    #[test]
    fn the_control_section_is_read_alone_or_from_a_whole_configuration() {
        let alone = ControlConfig::parse_section("[control]\nheadroom = 0.1\n", "a").unwrap();
        assert_eq!(alone.headroom, 0.1);
        assert_eq!(alone.horizon, ControlConfig::default().horizon);
        let whole = "interface = \"eth0\"\n[[backends]]\nid = 1\n[control]\nhorizon = 5\n";
        assert_eq!(ControlConfig::parse_section(whole, "w").unwrap().horizon, 5);
        for (text, says) in [
            ("[contrl]\nheadroom = 0.1\n", "no [control] section"),
            ("interface = \"eth0\"\n", "no [control] section"),
            ("[control]\nhead_room = 0.1\n", "unknown field `head_room`"),
            ("[control]\nheadroom = 3.0\n", "control.headroom"),
            ("[control\n", "invalid config"),
        ] {
            let e = ControlConfig::parse_section(text, "f.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn defaults_validate_and_errors_name_the_field() {
        let c = ControlConfig::default();
        c.validate().unwrap();
        assert_eq!(c.tick(), Duration::from_secs(1));
        assert_eq!(c.history_tiers, default_tiers());
        let bad: ControlConfig = toml::from_str("headroom = 2.0").unwrap();
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("control.headroom"), "{e}");
        let bad: ControlConfig =
            toml::from_str("[hook]\ncommand = [\"x\"]\nwebhook = \"http://a:1/\"").unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("control.hook"));
        let bad: ControlConfig = toml::from_str("per_shard_bytes = 0.0").unwrap();
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("control.per_shard_bytes"), "{e}");
        let good: ControlConfig = toml::from_str("per_shard_bytes = 1.25e7").unwrap();
        good.validate().unwrap();
        assert_eq!(c.per_shard_bytes, None);
        let bad: ControlConfig = toml::from_str("[classes.bulk]\nshards = 40").unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("control.classes.bulk.shards"));
        assert!(toml::from_str::<ControlConfig>("tick = 5").is_err());
    }

    #[test]
    fn period_is_auto_by_default_or_a_number_and_errors_name_the_key() {
        assert_eq!(ControlConfig::default().period, Period::Auto);
        let parse = |text: &str| {
            toml::from_str::<ControlConfig>(text)
                .map_err(|e| e.to_string())
                .and_then(|c| c.validate().map(|()| c).map_err(|e| e.to_string()))
        };
        assert_eq!(parse("period = \"auto\"").unwrap().period, Period::Auto);
        // Existing configs keep loading: a number fixes it, 0 turns the seasons off.
        assert_eq!(parse("period = 0").unwrap().period, Period::Fixed(0));
        assert_eq!(parse("period = 288").unwrap().period, Period::Fixed(288));
        assert_eq!(
            parse(&format!("period = {MAX_PERIOD}")).unwrap().period,
            Period::Fixed(MAX_PERIOD)
        );
        for bad in [
            "period = \"weekly\"".to_owned(),
            "period = -1".to_owned(),
            "period = 1.5".to_owned(),
            format!("period = {}", MAX_PERIOD + 1),
        ] {
            let e = parse(&bad).unwrap_err();
            assert!(e.contains("period"), "{bad}: {e}");
        }
        let e = parse("period = \"weekly\"").unwrap_err();
        assert!(e.contains("\"auto\" or a season length"), "{e}");
        // Written back as read.
        for period in [Period::Auto, Period::Fixed(0), Period::Fixed(24)] {
            let c = ControlConfig {
                period,
                ..ControlConfig::default()
            };
            let back: ControlConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
            assert_eq!(back.period, period);
        }
    }

    #[test]
    fn webhooks_are_http_urls_with_a_host() {
        for good in [
            "http://10.0.0.5:9000/scale",
            "http://example",
            "http://[::1]:7/",
        ] {
            check_http_url(good).unwrap();
        }
        for bad in [
            "https://x/",
            "http:x",
            "http://",
            "http://:80/",
            "http://h:port/",
            "x",
        ] {
            assert!(check_http_url(bad).is_err(), "{bad}");
        }
    }
}
