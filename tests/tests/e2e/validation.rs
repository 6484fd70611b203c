//! Signature validation through a running `fedmsg-hub`: the wire vectors
//! captured from the real Python fedmsg (../shared/pyfedmsg/vectors) are
//! replayed byte for byte on a zmq socket, and the `tally` plugin shows
//! which ones the hub delivered.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use fedmsg_e2e::{read_msg_ids, wait_until, Hub, Publisher, Sandbox, WAIT};

fn pyfedmsg() -> PathBuf {
    fedmsg_e2e::workspace_root().join("../shared/pyfedmsg")
}

struct Vector {
    file: String,
    zmq_topic: String,
    expect_hub_valid: bool,
    body: Vec<u8>,
}

fn vectors() -> Result<Vec<Vector>> {
    let dir = pyfedmsg().join("vectors");
    let manifest: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(dir.join("MANIFEST.json")).context("read MANIFEST.json")?,
    )?;
    let mut vectors = Vec::new();
    for entry in manifest.as_array().context("manifest is a list")? {
        let file = entry["file"].as_str().context("file")?.to_owned();
        vectors.push(Vector {
            body: fs::read(dir.join(&file))?,
            zmq_topic: entry["zmq_topic"].as_str().context("zmq_topic")?.to_owned(),
            expect_hub_valid: entry["expect_hub"] == "valid",
            file,
        });
    }
    Ok(vectors)
}

fn validating_config(sandbox: &Sandbox, publisher: &Publisher) -> String {
    let pki = pyfedmsg().join("pki");
    format!(
        "validate_signatures = true\n# Several vectors share a msg_id (tampered copies of 01): judge each.\ndedup_window = 0\nca_cert_location = {:?}\ncrl_location = {:?}\nrouting_nitpicky = false\n{}\n\
         [routing_policy]\n\"org.fedoraproject.dev.logger.log\" = [\"shell-app01\"]\n\
         \"org.fedoraproject.dev.bench.msg\" = [\"shell-app01\"]\n\
         \"org.fedoraproject.dev.reserved.topic\" = [\"shell-app01\"]\n\n\
         [tally]\nenabled = true\noutput = {:?}\n\n\
         [faulty]\nenabled = true\nvalidate_signatures = false\noutput = {:?}\n",
        pki.join("ca.crt").display().to_string(),
        pki.join("crl.pem").display().to_string(),
        sandbox.base_config(publisher.endpoint()).replace("validate_signatures = false\n", ""),
        sandbox.path().join("tally.jsonl").display().to_string(),
        sandbox.path().join("optout.jsonl").display().to_string(),
    )
}

#[test]
fn every_wire_vector_gets_the_python_hub_verdict() -> Result<()> {
    let vectors = vectors()?;
    assert_eq!(vectors.len(), 13, "expected the 13 vectors of pyfedmsg");
    let mut publisher = Publisher::bind()?;
    let sandbox = Sandbox::new()?;
    sandbox.add_plugin("fedmsg-example-tally")?;
    sandbox.add_plugin("fedmsg-test-faulty")?;
    sandbox.write_config("base.toml", &validating_config(&sandbox, &publisher))?;
    let mut hub = Hub::start(&sandbox, &[])?;
    hub.wait_subscribed(&mut publisher)?;

    let mut expected = Vec::new();
    for vector in &vectors {
        publisher.send_frames(&[vector.zmq_topic.as_bytes(), &vector.body])?;
        if vector.expect_hub_valid {
            let body: serde_json::Value = serde_json::from_slice(&vector.body)?;
            expected.push(body["msg_id"].as_str().context("msg_id")?.to_owned());
        }
    }
    // Wait for the valid ones; stopping the hub then finishes the rest
    // (the drain covers everything received).
    let tally = sandbox.path().join("tally.jsonl");
    assert!(wait_until(WAIT, || read_msg_ids(&tally).len() >= expected.len()));
    let status = hub.terminate()?;
    assert!(status.success());

    // Several vectors share 01's msg_id (tampered copies, the unwrapped
    // base64 one, the topic-frame mismatch): the exact sequence shows that
    // only the valid ones got through, in order.
    assert_eq!(read_msg_ids(&tally), expected, "log:\n{}", hub.log());
    let stats = hub.stats()?;
    let invalid = &stats["invalid"];
    assert_eq!(invalid["policy"], 1, "{stats}");
    assert_eq!(invalid["bad_signature"], 3, "{stats}");
    assert_eq!(invalid["no_signature"], 1, "{stats}");
    assert_eq!(invalid["revoked"], 1, "{stats}");
    assert_eq!(invalid["bad_chain"], 1, "{stats}");
    assert_eq!(stats["rejected"]["topic_mismatch"], 1, "{stats}");

    // The plugin that opted out of validation got every well-formed
    // message (all but the topic-frame mismatch), each marked with the
    // verdict and the signer.
    let optout = fedmsg_e2e::read_lines(&sandbox.path().join("optout.jsonl"));
    let marks: Vec<(bool, Option<&str>)> = optout
        .iter()
        .map(|l| (l["validated"] == true, l["signer"].as_str()))
        .collect();
    let expected_marks: Vec<(bool, Option<&str>)> = vectors
        .iter()
        .filter(|v| !v.file.starts_with("12_"))
        .map(|v| match v.expect_hub_valid {
            true if v.file.starts_with("03_") => (true, Some("evil-app02")),
            true => (true, Some("shell-app01")),
            false => (false, None),
        })
        .collect();
    assert_eq!(marks, expected_marks);

    let files: Vec<&str> = vectors
        .iter()
        .filter(|v| v.expect_hub_valid)
        .map(|v| v.file.as_str())
        .collect();
    assert_eq!(files.len(), 5, "{files:?}");
    Ok(())
}
