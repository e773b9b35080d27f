//! Moves a data directory written by `s3s-fs` 0.14.1 (this server's storage before) into the
//! layout of [`crate::disk`], once, on start.
//!
//! `s3s-fs` kept an object as the file `DATA/BUCKET/KEY`, and in the data directory itself:
//! `.bucket-B.object-K.internal.json` (ETag and checksums; `B` and `K` in unpadded URL-safe
//! base64), `.bucket-B.object-K.metadata.json` (Content-Type and the other headers, user
//! metadata), and for a multipart upload in progress `.upload-ID.json`,
//! `.bucket-B.object-K.upload-ID.metadata.json` and `.upload_id-ID.part-N`.
//!
//! A bucket's folder without [`BUCKET_MARK`] is in that layout. Each of its files becomes an
//! object: its record is written first, then the file is renamed into place, then its sidecars
//! go, so a crash at any point leaves the file where a second run finds it again. The mark is
//! written last. Folders were no objects in `s3s-fs` (listings skipped them) and are not
//! migrated.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use s3s::crypto::{Checksum as _, Md5};

use crate::disk::{
    hex, io_at, key_hash, seconds, unique, DiskError, PartRecord, UploadRecord, BUCKET_MARK,
    OBJECTS, OWN,
};
use crate::record::{Attributes, Checksums, Record};

/// What a migration moved.
#[derive(Debug, Default)]
struct Moved {
    buckets: usize,
    objects: usize,
    uploads: usize,
}

/// Migrates every bucket of `root` still in the `s3s-fs` layout, its uploads in progress, and
/// removes what is left of that layout.
pub(crate) fn migrate(root: &Path) -> Result<(), DiskError> {
    let mut moved = Moved::default();
    for entry in std::fs::read_dir(root).map_err(io_at(root))? {
        let entry = entry.map_err(io_at(root))?;
        let Some(bucket) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let dir = entry.path();
        if !s3s::path::check_bucket_name(&bucket) || !dir.is_dir() || dir.join(BUCKET_MARK).exists()
        {
            continue;
        }
        moved.objects += migrate_bucket(root, &bucket)?;
        std::fs::write(dir.join(BUCKET_MARK), b"1\n").map_err(io_at(&dir))?;
        moved.buckets += 1;
    }
    moved.uploads = migrate_uploads(root)?;
    let leftovers = remove_leftovers(root)?;
    if moved.buckets > 0 || moved.uploads > 0 || leftovers > 0 {
        tracing::info!(
            data_dir = %root.display(),
            buckets = moved.buckets,
            objects = moved.objects,
            uploads = moved.uploads,
            leftover_files_removed = leftovers,
            "migrated a data directory written by s3s-fs 0.14.1 (objects, their ETags, checksums, \
             content types and metadata, and multipart uploads in progress) to this server's layout"
        );
    }
    Ok(())
}

fn stem(bucket: &str, key: &str) -> String {
    format!(
        ".bucket-{}.object-{}",
        URL_SAFE_NO_PAD.encode(bucket),
        URL_SAFE_NO_PAD.encode(key)
    )
}

/// Moves every file of the bucket's folder; returns how many. Emptied folders are removed.
fn migrate_bucket(root: &Path, bucket: &str) -> Result<usize, DiskError> {
    let dir = root.join(bucket);
    let mut files = Vec::new();
    let mut folders = Vec::new();
    walk(&dir, &mut files, &mut folders)?;
    let mut moved = 0;
    for file in files {
        let Some(key) = key_of(&dir, &file) else {
            tracing::warn!(path = %file.display(), "not a key of UTF-8; left where it is");
            continue;
        };
        migrate_object(root, bucket, &key, &file)?;
        moved += 1;
    }
    // Deepest first, so each folder is empty when its turn comes; a folder still holding a
    // file that was not migrated stays.
    folders.sort_by_key(|f| std::cmp::Reverse(f.components().count()));
    for folder in folders {
        let _ = std::fs::remove_dir(folder);
    }
    Ok(moved)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, folders: &mut Vec<PathBuf>) -> Result<(), DiskError> {
    for entry in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io_at(&path))?;
        if entry.file_name() == OBJECTS {
            continue;
        }
        if kind.is_dir() {
            walk(&path, files, folders)?;
            folders.push(path);
        } else if kind.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

fn key_of(bucket_dir: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(bucket_dir).ok()?;
    let segments: Option<Vec<&str>> = relative
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect();
    Some(segments?.join("/"))
}

fn migrate_object(root: &Path, bucket: &str, key: &str, file: &Path) -> Result<(), DiskError> {
    let stem = stem(bucket, key);
    let internal_path = root.join(format!("{stem}.internal.json"));
    let metadata_path = root.join(format!("{stem}.metadata.json"));
    let internal: serde_json::Map<String, serde_json::Value> =
        read_json(&internal_path).unwrap_or_default();
    let e_tag = match internal.get("e_tag").and_then(|v| v.as_str()) {
        Some(e_tag) => e_tag.to_owned(),
        // As s3s-fs answered an object it had no ETag for: the MD5 of its bytes.
        None => md5_of(file).map_err(io_at(file))?,
    };
    let checksums: Checksums =
        serde_json::from_value(serde_json::Value::Object(internal)).unwrap_or_default();
    let attributes = read_attributes(&metadata_path).unwrap_or_default();
    let metadata = std::fs::metadata(file).map_err(io_at(file))?;
    let hash = key_hash(key);
    let folder = root.join(bucket).join(OBJECTS).join(&hash[..2]);
    std::fs::create_dir_all(&folder).map_err(io_at(&folder))?;
    let mut record = Record {
        key: key.to_owned(),
        data: format!("{hash}.{}.data", unique()),
        size: metadata.len(),
        e_tag,
        checksums,
        attributes,
        modified_secs: 0,
        modified_nanos: 0,
    };
    record.set_last_modified(metadata.modified().unwrap_or_else(|_| SystemTime::now()));
    let record_path = folder.join(format!("{hash}.json"));
    write_atomic(
        root,
        &record_path,
        &serde_json::to_vec(&record)
            .map_err(io::Error::from)
            .map_err(io_at(&record_path))?,
    )?;
    let data = folder.join(&record.data);
    std::fs::rename(file, &data).map_err(io_at(file))?;
    for sidecar in [internal_path, metadata_path] {
        remove_if_present(&sidecar)?;
    }
    Ok(())
}

/// `s3s-fs` wrote the attributes, or before them the user metadata alone.
fn read_attributes(path: &Path) -> Option<Attributes> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice::<Attributes>(&bytes)
        .ok()
        .or_else(|| {
            serde_json::from_slice(&bytes)
                .ok()
                .map(|user_metadata| Attributes {
                    user_metadata: Some(user_metadata),
                    ..Default::default()
                })
        })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn md5_of(path: &Path) -> io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut md5 = Md5::new();
    let mut buf = vec![0; 1024 * 1024];
    loop {
        let read = file.read(&mut buf)?;
        if read == 0 {
            return Ok(hex(&md5.finalize()));
        }
        md5.update(&buf[..read]);
    }
}

fn write_atomic(root: &Path, path: &Path, bytes: &[u8]) -> Result<(), DiskError> {
    let tmp = root.join(OWN).join("tmp").join(unique());
    let write = || -> io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        io::Write::write_all(&mut file, bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(io_at(path))
}

fn remove_if_present(path: &Path) -> Result<(), DiskError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_at(path)(error)),
    }
}

/// Names in the data directory itself.
fn root_names(root: &Path) -> Result<Vec<String>, DiskError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io_at(root))? {
        let entry = entry.map_err(io_at(root))?;
        if let Some(name) = entry.file_name().to_str() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                names.push(name.to_owned());
            }
        }
    }
    Ok(names)
}

/// Moves every multipart upload in progress, under its own ID; returns how many.
fn migrate_uploads(root: &Path) -> Result<usize, DiskError> {
    let names = root_names(root)?;
    let mut moved = 0;
    for name in &names {
        let Some(id) = name
            .strip_prefix(".upload-")
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let Some((bucket, key, metadata)) = upload_target(&names, id) else {
            tracing::warn!(upload_id = %id, "a multipart upload whose key is unknown; dropped");
            continue;
        };
        let attributes = read_attributes(&root.join(&metadata)).unwrap_or_default();
        let initiated = std::fs::metadata(root.join(name))
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        let dir = root.join(OWN).join("uploads").join(id);
        std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let part_prefix = format!(".upload_id-{id}.part-");
        for part in &names {
            let Some(number) = part
                .strip_prefix(&part_prefix)
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let path = root.join(part);
            let size = std::fs::metadata(&path).map_err(io_at(&path))?.len();
            let record = PartRecord {
                number,
                data: format!("part-{number}.{}.data", unique()),
                size,
                e_tag: md5_of(&path).map_err(io_at(&path))?,
                modified_secs: seconds(SystemTime::now()),
            };
            std::fs::rename(&path, dir.join(&record.data)).map_err(io_at(&path))?;
            let json = serde_json::to_vec(&record)
                .map_err(io::Error::from)
                .map_err(io_at(&dir))?;
            write_atomic(root, &dir.join(format!("part-{number}.json")), &json)?;
        }
        let upload = UploadRecord {
            bucket,
            key,
            attributes,
            initiated_secs: seconds(initiated),
        };
        let json = serde_json::to_vec(&upload)
            .map_err(io::Error::from)
            .map_err(io_at(&dir))?;
        write_atomic(root, &dir.join("upload.json"), &json)?;
        remove_if_present(&root.join(&metadata))?;
        remove_if_present(&root.join(name))?;
        moved += 1;
    }
    Ok(moved)
}

/// The bucket, key and metadata file name of upload `id`.
fn upload_target(names: &[String], id: &str) -> Option<(String, String, String)> {
    let suffix = format!(".upload-{id}.metadata.json");
    names.iter().find_map(|name| {
        let rest = name.strip_prefix(".bucket-")?.strip_suffix(&suffix)?;
        let (bucket, key) = rest.split_once(".object-")?;
        let decode = |s: &str| String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok();
        Some((decode(bucket)?, decode(key)?, name.clone()))
    })
}

/// Removes the files of the `s3s-fs` layout no object or upload needs any more: sidecars of
/// deleted objects, part ETags the previous version of this server kept, scratch files.
fn remove_leftovers(root: &Path) -> Result<usize, DiskError> {
    let mut removed = 0;
    for name in root_names(root)? {
        let old = (name.starts_with(".bucket-") && name.ends_with(".json"))
            || name.starts_with(".upload_id-")
            || (name.starts_with(".upload-") && name.ends_with(".json"))
            || name.starts_with(".serve-part-etag-")
            || (name.starts_with(".tmp.") && name.ends_with(".internal.part"));
        if old {
            remove_if_present(&root.join(name))?;
            removed += 1;
        }
    }
    Ok(removed)
}
