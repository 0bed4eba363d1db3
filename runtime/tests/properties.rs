//! Property tests over what lockstepd reads from outside and what it writes for the kubelet:
//! the CRI log a container's output becomes, registries.conf, and manifests, indexes and
//! image configs from a registry. Run with `PROPTEST_CASES=N` for a longer search (CI runs
//! the default 256 cases and a bounded longer pass; docs/security.md records the long runs).

use std::time::{Duration, SystemTime};

use lockstep_runtime::image::reference;
use lockstep_runtime::image::registries_conf::RegistriesConf;
use lockstep_runtime::image::registry::manifest::{self, Document};
use lockstep_runtime::monitor::log::{format_entry, LineSplitter, Stream};
use proptest::prelude::*;

/// Output as a container writes it: lines of varied lengths, in chunks cut anywhere.
fn output() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let byte = prop_oneof![4 => any::<u8>(), 1 => Just(b'\n')];
    prop::collection::vec(prop::collection::vec(byte, 0..400), 0..24)
}

proptest! {
    #[test]
    fn the_cri_log_keeps_every_byte_and_no_entry_passes_the_line_cap(chunks in output(), max in 1usize..300) {
        let mut splitter = LineSplitter::new(max);
        let mut entries: Vec<(Vec<u8>, bool)> = Vec::new();
        for chunk in &chunks {
            splitter.push(chunk, &mut |content, partial| entries.push((content.to_vec(), partial)));
        }
        splitter.finish(&mut |content, partial| entries.push((content.to_vec(), partial)));

        // The kubelet joins partial entries and ends a full one with a newline: the stream again.
        let mut joined = Vec::new();
        for (content, partial) in &entries {
            prop_assert!(content.len() <= max, "an entry of {} bytes under a cap of {max}", content.len());
            prop_assert!(!content.contains(&b'\n'));
            joined.extend_from_slice(content);
            if !partial {
                joined.push(b'\n');
            }
        }
        prop_assert_eq!(joined, chunks.concat());
    }

    #[test]
    fn each_cri_log_entry_is_one_line_the_kubelet_can_parse(
        content in prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..200),
        partial in any::<bool>(),
        stderr in any::<bool>(),
        nanos in 0u64..4_000_000_000_000_000_000,
    ) {
        let stream = if stderr { Stream::Stderr } else { Stream::Stdout };
        let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos);
        let entry = format_entry(stream, partial, &content, at);
        prop_assert_eq!(entry.iter().filter(|b| **b == b'\n').count(), 1);
        prop_assert_eq!(entry.last(), Some(&b'\n'));
        // `<RFC3339Nano> <stream> <P|F> <content>`
        let mut fields = entry.splitn(4, |b| *b == b' ');
        let time = std::str::from_utf8(fields.next().unwrap()).unwrap().to_string();
        prop_assert!(time.ends_with('Z') && time.len() == "2026-11-28T09:44:04.030151164Z".len(), "{time}");
        prop_assert_eq!(fields.next().unwrap(), stream.name().as_bytes());
        prop_assert_eq!(fields.next().unwrap(), if partial { b"P" } else { b"F" });
        prop_assert_eq!(&fields.next().unwrap()[..content.len()], &content[..]);
    }

    #[test]
    fn any_registries_conf_is_read_or_refused_and_what_is_read_gives_sources(text in registries_conf_text()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registries.conf");
        std::fs::write(&path, &text).unwrap();
        if let Ok(conf) = RegistriesConf::load(&path) {
            let _ = conf.search_registries();
            for name in ["docker.io/library/busybox:1", "quay.io/a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000", "localhost:5000/x"] {
                let parsed = reference::parse(name).unwrap();
                let _ = conf.sources(&parsed.reference);
            }
        }
    }

    #[test]
    fn any_manifest_answer_is_decoded_or_refused(bytes in manifest_bytes(), content_type in media_type()) {
        match manifest::decode(&content_type, &bytes) {
            Ok(Document::Index(index)) => {
                let _ = manifest::pick(&index, "amd64", None);
                let _ = manifest::pick(&index, "arm", Some("v7"));
            }
            Ok(Document::Manifest(_)) | Err(_) => {}
        }
    }
}

/// registries.conf text: TOML made of the keys lockstepd reads, with values of any shape.
fn registries_conf_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("prefix"),
        Just("location"),
        Just("insecure"),
        Just("blocked"),
        Just("mirror-by-digest-only"),
        Just("short-name-mode"),
        Just("unqualified-search-registries"),
        Just("credential-helpers"),
    ];
    let value = prop_oneof![
        "\"[a-z0-9.:/*@-]{0,30}\"".prop_map(|s| s),
        Just("true".to_string()),
        Just("false".to_string()),
        Just("[\"docker.io\", \"quay.io\"]".to_string()),
        Just("[]".to_string()),
        Just("42".to_string()),
    ];
    let line = (key, value).prop_map(|(k, v)| format!("{k} = {v}"));
    let table = prop_oneof![Just("[[registry]]"), Just("[[registry.mirror]]"), Just("[aliases]"), Just("")];
    prop::collection::vec((table, prop::collection::vec(line, 0..5)), 0..6).prop_map(|blocks| {
        let mut text = String::new();
        for (header, lines) in blocks {
            text.push_str(header);
            text.push('\n');
            for line in lines {
                text.push_str(&line);
                text.push('\n');
            }
        }
        text
    })
}

fn media_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(manifest::OCI_INDEX.to_string()),
        Just(manifest::OCI_MANIFEST.to_string()),
        Just(manifest::DOCKER_LIST.to_string()),
        Just(manifest::DOCKER_MANIFEST.to_string()),
        Just(String::new()),
        "[a-z/.+;= -]{0,40}",
    ]
}

/// Manifest-shaped JSON with fields of the wrong type, missing, or extra, and some raw bytes.
fn manifest_bytes() -> impl Strategy<Value = Vec<u8>> {
    let digest = prop_oneof![
        Just(serde_json::json!("sha256:0000000000000000000000000000000000000000000000000000000000000000")),
        Just(serde_json::json!("sha256:abc")),
        Just(serde_json::json!("md5:00")),
        Just(serde_json::json!(7)),
    ];
    let descriptor =
        (digest, prop_oneof![Just(serde_json::json!(12)), Just(serde_json::json!(-1)), Just(serde_json::json!("12"))])
            .prop_map(|(digest, size)| {
                serde_json::json!({
                    "mediaType": manifest::OCI_MANIFEST, "digest": digest, "size": size,
                    "platform": {"os": "linux", "architecture": "amd64"}
                })
            });
    let document = (
        prop_oneof![Just(serde_json::json!(2)), Just(serde_json::json!(1)), Just(serde_json::json!("2"))],
        prop::option::of(prop::collection::vec(descriptor.clone(), 0..3)),
        prop::option::of(prop::collection::vec(descriptor.clone(), 0..3)),
        prop::option::of(descriptor),
        media_type(),
    )
        .prop_map(|(schema, manifests, layers, config, media_type)| {
            let mut doc = serde_json::json!({"schemaVersion": schema, "mediaType": media_type});
            if let Some(m) = manifests {
                doc["manifests"] = serde_json::json!(m);
            }
            if let Some(l) = layers {
                doc["layers"] = serde_json::json!(l);
            }
            if let Some(c) = config {
                doc["config"] = c;
            }
            serde_json::to_vec(&doc).unwrap()
        });
    prop_oneof![4 => document, 1 => prop::collection::vec(any::<u8>(), 0..200)]
}
