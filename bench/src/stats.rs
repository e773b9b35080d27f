//! Medians and units.

/// MB as in MB/s: 10^6 bytes.
pub const MB: f64 = 1e6;
/// GB as in CPU seconds per GB: 10^9 bytes.
pub const GB: f64 = 1e9;
pub const KIB: f64 = 1024.0;
pub const MIB: f64 = 1024.0 * 1024.0;

/// The median; the mean of the middle two for an even count; `None` for no values.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// Input MB per second.
pub fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / MB / seconds
    } else {
        f64::INFINITY
    }
}

/// CPU seconds per GB of input: what compressing costs whatever the number of cores, which
/// is what a Lambda invocation pays for.
pub fn cpu_s_per_gb(cpu_s: f64, input_bytes: u64) -> f64 {
    if input_bytes > 0 {
        cpu_s / (input_bytes as f64 / GB)
    } else {
        f64::INFINITY
    }
}

/// Input size over output size.
pub fn ratio(input: u64, output: u64) -> f64 {
    if output > 0 {
        input as f64 / output as f64
    } else {
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn cpu_seconds_per_gb_count_decimal_gigabytes() {
        assert_eq!(cpu_s_per_gb(3.0, 2_000_000_000), 1.5);
        assert_eq!(cpu_s_per_gb(0.5, 250_000_000), 2.0);
        assert_eq!(cpu_s_per_gb(1.0, 0), f64::INFINITY);
    }
}
