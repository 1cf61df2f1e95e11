//! Criterion benchmarks of interconnect (see `benches/`), and the helper that prints each
//! result as a ratio of a baseline measured in the same run.

pub mod ratios {
    //! Reads criterion's saved estimates and prints ratios against a baseline.

    use std::path::PathBuf;

    /// Mean time per iteration, in nanoseconds, of `group/bench` from the run that just
    /// finished, or `None` if criterion saved nothing (e.g. a filtered run).
    pub fn mean_ns(group: &str, bench: &str) -> Option<f64> {
        let path = criterion_dir()
            .join(group.replace('/', "_"))
            .join(bench)
            .join("new/estimates.json");
        let text = std::fs::read_to_string(path).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["mean"]["point_estimate"].as_f64()
    }

    fn criterion_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("CRITERION_HOME") {
            return PathBuf::from(dir);
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
        target.join("criterion")
    }

    /// Prints, for each group, `baseline time / bench time` for every bench: above 1.0 the
    /// bench is faster than the baseline.
    pub fn print_ratios(groups: &[String], baseline: &str, benches: &[&str]) {
        println!("\nthroughput as a ratio of `{baseline}` (same run; higher is better):");
        for group in groups {
            let Some(base) = mean_ns(group, baseline) else {
                continue;
            };
            let cells: Vec<String> = benches
                .iter()
                .filter_map(|b| mean_ns(group, b).map(|t| format!("{b} {:.2}x", base / t)))
                .collect();
            println!("  {group:<24} {}", cells.join("   "));
        }
    }
}
