//! What storage, requests and compute cost: the `[prices]` table of the config, and what an
//! object of a given size is billed for a month in each storage class.
//!
//! The defaults are AWS's us-east-1 list prices; a deployment in another region, or with a
//! negotiated rate, writes its own. Prices change no output, so they are not part of the
//! config's hash.

use std::fmt;

/// Bytes in the GB that S3 and Lambda bill by (2^30).
pub const BILLED_GB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The least size Standard-IA, One Zone-IA and Glacier Instant Retrieval bill an object as, and
/// the size under which Intelligent-Tiering does not tier an object (it stays in, and is
/// billed at, the frequent access tier).
pub const MIN_BILLABLE_IA: u64 = 128 * 1024;

/// What Glacier Flexible Retrieval and Deep Archive add to every object: 32 KiB of index at
/// the class's own rate, and 8 KiB of name and metadata at S3 Standard's.
pub const ARCHIVE_INDEX_BYTES: u64 = 32 * 1024;
pub const ARCHIVE_METADATA_BYTES: u64 = 8 * 1024;

/// An S3 storage class, as ListObjectsV2 and HeadObject name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StorageClass {
    Standard,
    StandardIa,
    OnezoneIa,
    GlacierIr,
    Glacier,
    DeepArchive,
    IntelligentTiering,
    /// Any other (REDUCED_REDUNDANCY, EXPRESS_ONEZONE, OUTPOSTS, ...): priced as Standard.
    Other,
}

impl StorageClass {
    /// From S3's name for it; an absent class is Standard, as S3 means it.
    pub fn from_s3(name: Option<&str>) -> Self {
        match name.unwrap_or("STANDARD") {
            "STANDARD" => Self::Standard,
            "STANDARD_IA" => Self::StandardIa,
            "ONEZONE_IA" => Self::OnezoneIa,
            "GLACIER_IR" => Self::GlacierIr,
            "GLACIER" => Self::Glacier,
            "DEEP_ARCHIVE" => Self::DeepArchive,
            "INTELLIGENT_TIERING" => Self::IntelligentTiering,
            _ => Self::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Standard => "STANDARD",
            Self::StandardIa => "STANDARD_IA",
            Self::OnezoneIa => "ONEZONE_IA",
            Self::GlacierIr => "GLACIER_IR",
            Self::Glacier => "GLACIER",
            Self::DeepArchive => "DEEP_ARCHIVE",
            Self::IntelligentTiering => "INTELLIGENT_TIERING",
            Self::Other => "OTHER",
        }
    }

    /// Whether a GET of an object in this class fails until it is restored.
    pub fn is_archived(self) -> bool {
        matches!(self, Self::Glacier | Self::DeepArchive)
    }
}

impl fmt::Display for StorageClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `[prices]` table: USD, per GB-month of storage (GB = 2^30 bytes), per 1,000 requests,
/// per GB-second of Lambda compute and per million invocations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    pub standard_gb_month: f64,
    pub standard_ia_gb_month: f64,
    pub onezone_ia_gb_month: f64,
    pub glacier_ir_gb_month: f64,
    pub glacier_gb_month: f64,
    pub deep_archive_gb_month: f64,
    /// The frequent access tier: what an object under 128 KiB is always billed at, and what
    /// a listing can tell of any other (it does not say an object's tier).
    pub intelligent_tiering_gb_month: f64,
    /// PUT, COPY, POST and LIST requests (CreateMultipartUpload, UploadPart and
    /// CompleteMultipartUpload are each one), in S3 Standard.
    pub put_per_1000: f64,
    /// GET (and HEAD) requests, in S3 Standard.
    pub get_per_1000: f64,
    /// Reading from Standard-IA and One Zone-IA, per GB.
    pub ia_retrieval_gb: f64,
    /// Reading from Glacier Instant Retrieval, per GB.
    pub glacier_ir_retrieval_gb: f64,
    /// Lambda on x86_64, per GB-second of configured memory.
    pub lambda_gb_second: f64,
    pub lambda_per_million_requests: f64,
}

impl Default for Prices {
    /// AWS's us-east-1 list prices (aws.amazon.com/s3/pricing, /lambda/pricing), as checked on
    /// 2025-06-01; unchanged since Glacier Flexible Retrieval's cut of November 2021.
    fn default() -> Self {
        Self {
            standard_gb_month: 0.023,
            standard_ia_gb_month: 0.0125,
            onezone_ia_gb_month: 0.01,
            glacier_ir_gb_month: 0.004,
            glacier_gb_month: 0.0036,
            deep_archive_gb_month: 0.00099,
            intelligent_tiering_gb_month: 0.023,
            put_per_1000: 0.005,
            get_per_1000: 0.0004,
            ia_retrieval_gb: 0.01,
            glacier_ir_retrieval_gb: 0.03,
            lambda_gb_second: 0.000_016_666_7,
            lambda_per_million_requests: 0.20,
        }
    }
}

/// The fields of `[prices]`, in the order the config documents them, each with its getter and
/// setter: what the parser checks names against and `check-config` prints.
pub(crate) type PriceField = (&'static str, fn(&Prices) -> f64, fn(&mut Prices, f64));

pub(crate) const PRICE_FIELDS: &[PriceField] = &[
    (
        "standard_gb_month",
        |p| p.standard_gb_month,
        |p, v| p.standard_gb_month = v,
    ),
    (
        "standard_ia_gb_month",
        |p| p.standard_ia_gb_month,
        |p, v| p.standard_ia_gb_month = v,
    ),
    (
        "onezone_ia_gb_month",
        |p| p.onezone_ia_gb_month,
        |p, v| p.onezone_ia_gb_month = v,
    ),
    (
        "glacier_ir_gb_month",
        |p| p.glacier_ir_gb_month,
        |p, v| p.glacier_ir_gb_month = v,
    ),
    (
        "glacier_gb_month",
        |p| p.glacier_gb_month,
        |p, v| p.glacier_gb_month = v,
    ),
    (
        "deep_archive_gb_month",
        |p| p.deep_archive_gb_month,
        |p, v| p.deep_archive_gb_month = v,
    ),
    (
        "intelligent_tiering_gb_month",
        |p| p.intelligent_tiering_gb_month,
        |p, v| p.intelligent_tiering_gb_month = v,
    ),
    (
        "put_per_1000",
        |p| p.put_per_1000,
        |p, v| p.put_per_1000 = v,
    ),
    (
        "get_per_1000",
        |p| p.get_per_1000,
        |p, v| p.get_per_1000 = v,
    ),
    (
        "ia_retrieval_gb",
        |p| p.ia_retrieval_gb,
        |p, v| p.ia_retrieval_gb = v,
    ),
    (
        "glacier_ir_retrieval_gb",
        |p| p.glacier_ir_retrieval_gb,
        |p, v| p.glacier_ir_retrieval_gb = v,
    ),
    (
        "lambda_gb_second",
        |p| p.lambda_gb_second,
        |p, v| p.lambda_gb_second = v,
    ),
    (
        "lambda_per_million_requests",
        |p| p.lambda_per_million_requests,
        |p, v| p.lambda_per_million_requests = v,
    ),
];

impl Prices {
    /// Each field's name and value, in the config's order.
    pub fn fields(&self) -> Vec<(&'static str, f64)> {
        PRICE_FIELDS
            .iter()
            .map(|(name, get, _)| (*name, get(self)))
            .collect()
    }

    /// The rate per GB-month of `class`.
    pub fn gb_month(&self, class: StorageClass) -> f64 {
        match class {
            StorageClass::Standard | StorageClass::Other => self.standard_gb_month,
            StorageClass::StandardIa => self.standard_ia_gb_month,
            StorageClass::OnezoneIa => self.onezone_ia_gb_month,
            StorageClass::GlacierIr => self.glacier_ir_gb_month,
            StorageClass::Glacier => self.glacier_gb_month,
            StorageClass::DeepArchive => self.deep_archive_gb_month,
            StorageClass::IntelligentTiering => self.intelligent_tiering_gb_month,
        }
    }

    /// What one object of `size` bytes in `class` costs a month: its size, raised to the
    /// class's minimum billable size, at the class's rate, plus what the archive classes add
    /// to every object.
    pub fn storage_usd_per_month(&self, size: u64, class: StorageClass) -> f64 {
        let gb = |bytes: u64| bytes as f64 / BILLED_GB;
        match class {
            StorageClass::StandardIa | StorageClass::OnezoneIa | StorageClass::GlacierIr => {
                gb(size.max(MIN_BILLABLE_IA)) * self.gb_month(class)
            }
            StorageClass::Glacier | StorageClass::DeepArchive => {
                gb(size + ARCHIVE_INDEX_BYTES) * self.gb_month(class)
                    + gb(ARCHIVE_METADATA_BYTES) * self.standard_gb_month
            }
            // Under 128 KiB never tiered, so billed at the frequent rate; larger objects' tier
            // is not known from a listing, so the frequent rate is what can be said.
            StorageClass::Standard | StorageClass::Other | StorageClass::IntelligentTiering => {
                gb(size) * self.gb_month(class)
            }
        }
    }

    /// What reading `size` bytes from `class` costs beyond the GET request.
    pub fn retrieval_usd(&self, size: u64, class: StorageClass) -> f64 {
        let rate = match class {
            StorageClass::StandardIa | StorageClass::OnezoneIa => self.ia_retrieval_gb,
            StorageClass::GlacierIr => self.glacier_ir_retrieval_gb,
            _ => 0.0,
        };
        size as f64 / BILLED_GB * rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;
    const GIB: u64 = 1024 * 1024 * 1024;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12_f64.max(b.abs() * 1e-9)
    }

    #[test]
    fn standard_bills_the_bytes_stored() {
        let prices = Prices::default();
        assert!(close(
            prices.storage_usd_per_month(GIB, StorageClass::Standard),
            0.023
        ));
        // 1 KiB: 0.023 / 2^20.
        assert!(close(
            prices.storage_usd_per_month(KIB, StorageClass::Standard),
            0.023 / 1_048_576.0
        ));
    }

    #[test]
    fn infrequent_access_classes_bill_at_least_128_kib() {
        let prices = Prices::default();
        // 10 KiB and 100 KiB both cost what 128 KiB does: 128 / 2^20 GB at 0.0125.
        let floor = 128.0 / 1_048_576.0 * 0.0125;
        for size in [0, 10 * KIB, 100 * KIB, 128 * KIB] {
            assert!(close(
                prices.storage_usd_per_month(size, StorageClass::StandardIa),
                floor
            ));
        }
        assert!(close(
            prices.storage_usd_per_month(256 * KIB, StorageClass::StandardIa),
            2.0 * floor
        ));
        assert!(close(
            prices.storage_usd_per_month(KIB, StorageClass::OnezoneIa),
            128.0 / 1_048_576.0 * 0.01
        ));
        assert!(close(
            prices.storage_usd_per_month(KIB, StorageClass::GlacierIr),
            128.0 / 1_048_576.0 * 0.004
        ));
        // So shrinking a 100 KiB object to 20 KiB there saves nothing.
        assert_eq!(
            prices.storage_usd_per_month(100 * KIB, StorageClass::GlacierIr),
            prices.storage_usd_per_month(20 * KIB, StorageClass::GlacierIr)
        );
    }

    #[test]
    fn archive_classes_add_32_kib_at_their_rate_and_8_kib_at_standards() {
        let prices = Prices::default();
        // 1 GiB in Glacier Flexible Retrieval: (2^30 + 32 KiB) at 0.0036 + 8 KiB at 0.023.
        let expected = (1.0 + 32.0 / 1_048_576.0) * 0.0036 + 8.0 / 1_048_576.0 * 0.023;
        assert!(close(
            prices.storage_usd_per_month(GIB, StorageClass::Glacier),
            expected
        ));
        // An empty object in Deep Archive still costs its 40 KiB.
        let empty = 32.0 / 1_048_576.0 * 0.00099 + 8.0 / 1_048_576.0 * 0.023;
        assert!(close(
            prices.storage_usd_per_month(0, StorageClass::DeepArchive),
            empty
        ));
    }

    #[test]
    fn intelligent_tiering_bills_small_objects_at_the_frequent_rate() {
        let prices = Prices {
            intelligent_tiering_gb_month: 0.02,
            ..Prices::default()
        };
        assert!(close(
            prices.storage_usd_per_month(64 * KIB, StorageClass::IntelligentTiering),
            64.0 / 1_048_576.0 * 0.02
        ));
    }

    #[test]
    fn retrieval_is_charged_for_the_infrequent_classes_only() {
        let prices = Prices::default();
        assert!(close(
            prices.retrieval_usd(GIB, StorageClass::StandardIa),
            0.01
        ));
        assert!(close(
            prices.retrieval_usd(GIB, StorageClass::GlacierIr),
            0.03
        ));
        assert_eq!(prices.retrieval_usd(GIB, StorageClass::Standard), 0.0);
    }

    #[test]
    fn classes_read_as_s3_names_them() {
        assert_eq!(StorageClass::from_s3(None), StorageClass::Standard);
        assert_eq!(
            StorageClass::from_s3(Some("GLACIER_IR")),
            StorageClass::GlacierIr
        );
        assert_eq!(
            StorageClass::from_s3(Some("EXPRESS_ONEZONE")),
            StorageClass::Other
        );
        assert_eq!(StorageClass::DeepArchive.to_string(), "DEEP_ARCHIVE");
    }
}
