//! Volumes and artifacts end to end: pre-signed uploads and downloads, atomic commits,
//! content-addressed versions, ownership, and blob collection.

use sha2::{Digest, Sha256};
use vm0_tests::server::{api_error, TestServer};
use vm0_tests::wait::{wait_until, within, DEADLINE};
use vm0_types as types;

fn upload_file(path: &str, bytes: &[u8]) -> types::UploadFile {
    types::UploadFile {
        path: path.parse().unwrap(),
        size: bytes.len() as i64,
        hash: hex(bytes).parse().unwrap(),
    }
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Pushes `files` to the volume `id`: prepare, PUT each, commit.
async fn push(
    c: &vm0_client::Client,
    id: &str,
    files: &[(&str, &[u8])],
    message: &str,
) -> types::VolumeVersion {
    let list: Vec<_> = files.iter().map(|(p, b)| upload_file(p, b)).collect();
    let prepared = c
        .prepare_volume_upload()
        .id(id)
        .body(
            types::PrepareUploadRequest::builder()
                .files(list)
                .message(Some(message.parse().unwrap())),
        )
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(prepared.files.len(), files.len());
    let http = reqwest::Client::new();
    for (target, (_, bytes)) in prepared.files.iter().zip(files) {
        let response = http.put(&target.upload_url).body(bytes.to_vec()).send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    }
    c.commit_volume_upload()
        .id(id)
        .body_map(|b| {
            b.upload_session_id(
                prepared
                    .upload_session_id
                    .parse::<types::CommitUploadRequestUploadSessionId>()
                    .unwrap(),
            )
        })
        .send()
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_volume_round_trips_its_files() {
    let server = TestServer::start().await;
    let c = server.client();
    let volume = c.create_volume().body_map(|b| b.name("notes")).send().await.unwrap().into_inner();
    assert!(volume.current_version_id.is_none());
    let files: [(&str, &[u8]); 3] =
        [("a.txt", b"alpha"), ("dir/b.bin", &[0u8, 1, 2, 255]), ("empty", b"")];
    let version = push(&c, &volume.id, &files, "first").await;
    assert_eq!(
        (version.file_count, version.size, version.volume_id.as_str()),
        (3, 9, volume.id.as_str())
    );
    assert_eq!(version.message.as_deref(), Some("first"));
    assert!(version.created_by.starts_with("tok_"));

    let detail = c.get_volume().id(&volume.id).send().await.unwrap().into_inner();
    assert_eq!(detail.current_version_id.as_deref(), Some(version.id.as_str()));
    assert_eq!(detail.current_version.as_ref().map(|v| v.id.clone()), Some(version.id.clone()));
    assert_eq!((detail.size, detail.file_count), (9, 3));

    let download = c.download_volume().id(&volume.id).send().await.unwrap().into_inner();
    assert_eq!(download.version_id, version.id);
    let http = reqwest::Client::new();
    for (path, bytes) in files {
        let file = download.files.iter().find(|f| f.path.to_string() == path).unwrap();
        assert_eq!((file.size, file.hash.to_string()), (bytes.len() as i64, hex(bytes)));
        let got = http.get(&file.download_url).send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(got.bytes().await.unwrap().as_ref(), bytes, "{path}");
    }

    // The same content again is the same version; other content is a new one, newest first.
    assert_eq!(push(&c, &volume.id, &files, "again").await.id, version.id);
    let second = push(&c, &volume.id, &[("a.txt", b"beta")], "second").await;
    let versions = c.list_volume_versions().id(&volume.id).send().await.unwrap().into_inner();
    assert_eq!(
        versions.data.iter().map(|v| v.id.clone()).collect::<Vec<_>>(),
        vec![second.id.clone(), version.id.clone()]
    );
    // An older version stays downloadable by id.
    let old = c
        .download_volume()
        .id(&volume.id)
        .version_id(version.id.as_str())
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.files.len(), 3);
}

#[tokio::test]
async fn a_commit_without_every_upload_is_invalid_state_and_changes_nothing() {
    let server = TestServer::start().await;
    let c = server.client();
    let volume =
        c.create_volume().body_map(|b| b.name("partial")).send().await.unwrap().into_inner();
    let files = vec![upload_file("one", b"1"), upload_file("two", b"2")];
    let prepared = c
        .prepare_volume_upload()
        .id(&volume.id)
        .body_map(|b| b.files(files))
        .send()
        .await
        .unwrap()
        .into_inner();
    reqwest::Client::new().put(&prepared.files[0].upload_url).body("1").send().await.unwrap();
    let session =
        prepared.upload_session_id.parse::<types::CommitUploadRequestUploadSessionId>().unwrap();
    let (status, error) = api_error(
        c.commit_volume_upload()
            .id(&volume.id)
            .body_map(|b| b.upload_session_id(session.clone()))
            .send()
            .await,
    );
    assert_eq!((status, error.code.to_string().as_str()), (400, "invalid_state"));
    assert!(error.message.contains("two"), "{}", error.message);
    assert!(c
        .get_volume()
        .id(&volume.id)
        .send()
        .await
        .unwrap()
        .into_inner()
        .current_version
        .is_none());
    // Uploading the rest and committing again succeeds.
    reqwest::Client::new().put(&prepared.files[1].upload_url).body("2").send().await.unwrap();
    c.commit_volume_upload()
        .id(&volume.id)
        .body_map(|b| b.upload_session_id(session))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn uploads_must_match_their_signed_url() {
    let server = TestServer::start().await;
    let c = server.client();
    let volume =
        c.create_volume().body_map(|b| b.name("strict")).send().await.unwrap().into_inner();
    let prepared = c
        .prepare_volume_upload()
        .id(&volume.id)
        .body_map(|b| b.files(vec![upload_file("f", b"exact")]))
        .send()
        .await
        .unwrap()
        .into_inner();
    let url = &prepared.files[0].upload_url;
    let http = reqwest::Client::new();
    let status = |r: reqwest::Response| r.status().as_u16();
    if server.blobs_in_s3() {
        // The bucket takes any bytes at the URL it signed, and the commit checks them.
        let session = prepared.upload_session_id.clone();
        let commit = || {
            c.commit_volume_upload()
                .id(&volume.id)
                .body_map(|b| b.upload_session_id(session.clone()))
                .send()
        };
        assert_eq!(status(http.put(url).body("wrong").send().await.unwrap()), 200);
        let (code, error) = api_error(commit().await);
        assert_eq!(code, 400);
        assert!(error.message.contains("SHA-256"), "{}", error.message);
        assert_eq!(status(http.put(url).body("too long").send().await.unwrap()), 200);
        let (_, error) = api_error(commit().await);
        assert!(error.message.contains("8 bytes, not 5"), "{}", error.message);
        let tampered = url.replace("X-Amz-Expires=", "X-Amz-Expires=9");
        assert_eq!(
            status(http.put(&tampered).body("exact").send().await.unwrap()),
            403,
            "a tampered URL"
        );
        assert_eq!(status(http.put(url).body("exact").send().await.unwrap()), 200);
        commit().await.expect("the right bytes commit");
        return;
    }
    assert_eq!(
        status(http.put(url).body("wrong").send().await.unwrap()),
        400,
        "other bytes of the same size"
    );
    assert_eq!(
        status(http.put(url).body("too long by far").send().await.unwrap()),
        400,
        "more bytes"
    );
    assert_eq!(status(http.put(url).body("shor").send().await.unwrap()), 400, "fewer bytes");
    let tampered = url.replace("size=5", "size=6");
    assert_eq!(
        status(http.put(&tampered).body("exact!").send().await.unwrap()),
        400,
        "a tampered size"
    );
    let later = url.replace("expires=", "expires=9");
    assert_eq!(
        status(http.put(&later).body("exact").send().await.unwrap()),
        400,
        "a tampered expiry"
    );
    assert_eq!(status(http.get(url).send().await.unwrap()), 400, "an upload URL used to download");
    assert_eq!(status(http.put(url).body("exact").send().await.unwrap()), 204);
    // Failed uploads leave nothing behind in tmp/.
    assert_eq!(std::fs::read_dir(server.data_dir.path().join("tmp")).unwrap().count(), 0);
}

#[tokio::test]
async fn file_lists_are_checked() {
    let server = TestServer::start().await;
    let c = server.client();
    let volume =
        c.create_volume().body_map(|b| b.name("checked")).send().await.unwrap().into_inner();
    let duplicate = vec![upload_file("same", b"1"), upload_file("same", b"2")];
    let (status, error) = api_error(
        c.prepare_volume_upload().id(&volume.id).body_map(|b| b.files(duplicate)).send().await,
    );
    assert_eq!((status, error.param.as_deref()), (400, Some("files[1].path")));
    // Paths the types refuse to build are refused by the server too.
    for path in ["../escape", "/absolute", "a//b", "a/./b"] {
        assert!(path.parse::<types::FilePath>().is_err(), "{path}");
        let body = serde_json::json!({"files": [{"path": path, "size": 1, "hash": hex(b"x")}]});
        let response = reqwest::Client::new()
            .post(format!("{}/v1/volumes/{}/upload", server.url, volume.id))
            .bearer_auth(&server.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            (status, error["error"]["param"].as_str()),
            (400, Some("files[0].path")),
            "{path}"
        );
    }
    let (status, _) = api_error(c.download_volume().id(&volume.id).send().await);
    assert_eq!(status, 400, "an empty volume has nothing to download");
}

#[tokio::test]
async fn deleting_a_volume_collects_its_blobs_but_not_shared_ones() {
    let server = TestServer::start().await;
    let c = server.client();
    let keep = c.create_volume().body_map(|b| b.name("keep")).send().await.unwrap().into_inner();
    let drop = c.create_volume().body_map(|b| b.name("drop")).send().await.unwrap().into_inner();
    push(&c, &keep.id, &[("shared", b"shared bytes")], "k").await;
    push(&c, &drop.id, &[("shared", b"shared bytes"), ("own", b"only here")], "d").await;
    assert!(server.has_blob(b"only here").await);
    c.delete_volume().id(&drop.id).send().await.unwrap();
    // Collected in the background, soon after the delete answered.
    let collected = || async {
        match server.has_blob(b"only here").await {
            false => Ok(()),
            true => Err("its blob is still there"),
        }
    };
    wait_until(DEADLINE, "the deleted volume's own blob collected", collected).await;
    assert!(server.has_blob(b"shared bytes").await, "a blob another volume holds stays");
    assert_eq!(api_error(c.get_volume().id(&drop.id).send().await).0, 404);
}

#[tokio::test]
async fn artifacts_work_like_volumes_and_stay_apart_from_them() {
    let server = TestServer::start().await;
    let c = server.client();
    let artifact =
        c.create_artifact().body_map(|b| b.name("out")).send().await.unwrap().into_inner();
    assert!(artifact.id.starts_with("art_"));
    // A volume may have the same name; an artifact's id is no volume's.
    c.create_volume().body_map(|b| b.name("out")).send().await.unwrap();
    assert_eq!(api_error(c.get_volume().id(&artifact.id).send().await).0, 404);
    let (status, _) = api_error(c.create_artifact().body_map(|b| b.name("out")).send().await);
    assert_eq!(status, 409);

    let prepared = c
        .prepare_artifact_upload()
        .id(&artifact.id)
        .body_map(|b| b.files(vec![upload_file("r.md", b"# report")]))
        .send()
        .await
        .unwrap()
        .into_inner();
    reqwest::Client::new()
        .put(&prepared.files[0].upload_url)
        .body("# report")
        .send()
        .await
        .unwrap();
    let session =
        prepared.upload_session_id.parse::<types::CommitUploadRequestUploadSessionId>().unwrap();
    let version = c
        .commit_artifact_upload()
        .id(&artifact.id)
        .body_map(|b| b.upload_session_id(session))
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.artifact_id, artifact.id);
    let download = c.download_artifact().id(&artifact.id).send().await.unwrap().into_inner();
    let bytes = reqwest::get(&download.files[0].download_url).await.unwrap().bytes().await.unwrap();
    assert_eq!(bytes.as_ref(), b"# report");
    assert_eq!(
        c.list_artifact_versions().id(&artifact.id).send().await.unwrap().into_inner().data.len(),
        1
    );
    assert_eq!(c.list_artifacts().send().await.unwrap().into_inner().data.len(), 1);

    let theirs = server.client_with(&server.user_token("trudy").await);
    assert_eq!(api_error(theirs.get_artifact().id(&artifact.id).send().await).0, 404);
    assert_eq!(api_error(theirs.download_artifact().id(&artifact.id).send().await).0, 404);
    assert_eq!(api_error(theirs.delete_artifact().id(&artifact.id).send().await).0, 404);
    c.delete_artifact().id(&artifact.id).send().await.unwrap();
}

#[tokio::test]
async fn shutting_down_finishes_the_uploads_in_flight() {
    let server = TestServer::start().await;
    if server.blobs_in_s3() {
        eprintln!("skipped: uploads go to the S3 bucket, not through the server");
        return;
    }
    let c = server.client();
    let volume =
        c.create_volume().body_map(|b| b.name("graceful")).send().await.unwrap().into_inner();
    let content = vec![7u8; 2 * 1024 * 1024];
    let prepared = c
        .prepare_volume_upload()
        .id(&volume.id)
        .body_map(|b| b.files(vec![upload_file("slow", &content)]))
        .send()
        .await
        .unwrap()
        .into_inner();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        content.chunks(128 * 1024).map(|c| Ok(c.to_vec())).collect();
    // Paced, so that the upload lasts about half a second; it says when its first chunk is taken.
    let (first_taken, taken) = tokio::sync::oneshot::channel::<()>();
    let mut first_taken = Some(first_taken);
    let slow = futures::StreamExt::then(futures::stream::iter(chunks), move |chunk| {
        let first = first_taken.take();
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            if let Some(first) = first {
                first.send(()).ok();
            }
            chunk
        }
    });
    let url = prepared.files[0].upload_url.clone();
    let upload = tokio::spawn(async move {
        reqwest::Client::new().put(url).body(reqwest::Body::wrap_stream(slow)).send().await
    });
    within(DEADLINE, "the upload's first chunk taken", taken)
        .await
        .expect("the upload's body was dropped before its first chunk");
    // The server streams an upload into tmp/ as it arrives: the request is in its hands.
    let tmp = server.data_dir.path().join("tmp");
    let tmp = &tmp;
    wait_until(DEADLINE, "the upload in tmp/", move || async move {
        let parts: Vec<_> =
            std::fs::read_dir(tmp).unwrap().flatten().map(|e| e.file_name()).collect();
        if parts.is_empty() {
            Err(parts)
        } else {
            Ok(())
        }
    })
    .await;
    let data_dir = server.stop().await; // returns once the requests in flight are done
    let response = within(DEADLINE, "the upload's answer", upload)
        .await
        .unwrap()
        .expect("the upload was not cut off");
    assert_eq!(response.status(), 204);
    let blob = data_dir.path().join("blobs").join(&hex(&content)[..2]).join(hex(&content));
    assert_eq!(std::fs::metadata(blob).unwrap().len(), content.len() as u64);
}

/// Knowing the hash and size of another user's file gives nothing: a commit that names a
/// blob this user never uploaded is refused in the same words whether the blob exists or
/// not, and no version, so no download, comes of it. Uploading the bytes does make them
/// one's own.
#[tokio::test]
async fn another_users_hash_is_no_claim_on_their_bytes() {
    let server = TestServer::start().await;
    let alice = server.client();
    let secret: &[u8] = b"alice's secret bytes";
    let hers =
        alice.create_volume().body_map(|b| b.name("private")).send().await.unwrap().into_inner();
    push(&alice, &hers.id, &[("secret.txt", secret)], "mine").await;

    let mallory = server.client_with(&server.user_token("mallory").await);
    let his =
        mallory.create_volume().body_map(|b| b.name("loot")).send().await.unwrap().into_inner();
    let claim = |files: Vec<types::UploadFile>| {
        let mallory = &mallory;
        let id = his.id.clone();
        async move {
            let prepared = mallory
                .prepare_volume_upload()
                .id(&id)
                .body_map(|b| b.files(files))
                .send()
                .await
                .unwrap()
                .into_inner();
            let session: types::CommitUploadRequestUploadSessionId =
                prepared.upload_session_id.parse().unwrap();
            api_error(
                mallory
                    .commit_volume_upload()
                    .id(&id)
                    .body_map(|b| b.upload_session_id(session))
                    .send()
                    .await,
            )
        }
    };
    let (status, known) = claim(vec![upload_file("secret.txt", secret)]).await;
    let (_, unknown) = claim(vec![upload_file("secret.txt", b"bytes nobody has")]).await;
    assert_eq!(status, 400);
    assert_eq!(
        (known.code, known.message.as_str()),
        (unknown.code, unknown.message.as_str()),
        "the answer tells a known hash from an unknown one"
    );
    let wrong_size = types::UploadFile { size: 3, ..upload_file("secret.txt", secret) };
    let (_, sized) = claim(vec![wrong_size]).await;
    assert_eq!(sized.message, unknown.message, "the answer tells the stored size");
    let loot = mallory.get_volume().id(&his.id).send().await.unwrap().into_inner();
    assert!(loot.current_version_id.is_none(), "a claim made a version");

    // Uploading the same bytes himself is an upload like any other.
    push(&mallory, &his.id, &[("secret.txt", secret)], "my own copy").await;
}

/// A version that no directory could hold is refused when it is prepared: a file that is
/// also a folder of another, or a segment longer than a file name may be.
#[tokio::test]
async fn a_version_no_directory_could_hold_is_refused() {
    let server = TestServer::start().await;
    let c = server.client();
    let volume =
        c.create_volume().body_map(|b| b.name("shapes")).send().await.unwrap().into_inner();
    let long = format!("dir/{}", "x".repeat(300));
    for (files, param) in [
        (vec![upload_file("a", b"1"), upload_file("a/b", b"2")], "files[1].path"),
        (vec![upload_file(&long, b"3")], "files[0].path"),
    ] {
        let (status, error) = api_error(
            c.prepare_volume_upload().id(&volume.id).body_map(|b| b.files(files)).send().await,
        );
        assert_eq!((status, error.param.as_deref()), (400, Some(param)), "{}", error.message);
    }
}

/// A download URL of this server's own lasts no longer than the token that asked for it:
/// revoked, the URL answers 403 in the error envelope. (An S3 bucket's URLs are signed by
/// the bucket, and only expire.)
#[tokio::test]
async fn a_revoked_tokens_download_url_answers_403() {
    let server = TestServer::start().await;
    let c = server.client();
    let volume = c.create_volume().body_map(|b| b.name("shared")).send().await.unwrap();
    let volume = volume.into_inner();
    push(&c, &volume.id, &[("a.txt", b"alpha")], "first").await;
    let token = c.create_token().body_map(|b| b.name("reader")).send().await.unwrap();
    let token = token.into_inner();
    let reader = server.client_with(&token.token.to_string());
    let download = reader.download_volume().id(&volume.id).send().await.unwrap().into_inner();
    let url = download.files[0].download_url.clone();
    if !url.starts_with(&server.url) {
        return eprintln!("skipped: the blobs are in a bucket, whose URLs only expire");
    }
    let http = reqwest::Client::new();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    c.revoke_token().id(&token.id).send().await.unwrap();
    let refused = http.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
}

/// A commit replayed after its answer was lost, several at once or later, answers the
/// version the first made, and the volume has that one version; the session is still no
/// session of another volume.
#[tokio::test]
async fn a_replayed_commit_answers_the_version_it_made() {
    let server = TestServer::start().await;
    let c = server.client();
    let volume = c.create_volume().body_map(|b| b.name("replayed")).send().await.unwrap();
    let other = c.create_volume().body_map(|b| b.name("other")).send().await.unwrap();
    let prepared = c
        .prepare_volume_upload()
        .id(&volume.id)
        .body_map(|b| b.files(vec![upload_file("f", b"once")]))
        .send()
        .await
        .unwrap()
        .into_inner();
    let put = reqwest::Client::new().put(&prepared.files[0].upload_url).body("once");
    assert!(put.send().await.unwrap().status().is_success());
    let session =
        prepared.upload_session_id.parse::<types::CommitUploadRequestUploadSessionId>().unwrap();
    let commit = |id: String| {
        let (c, session) = (&c, session.clone());
        async move {
            c.commit_volume_upload().id(id).body_map(|b| b.upload_session_id(session)).send().await
        }
    };
    let answers = futures::future::join_all((0..4).map(|_| commit(volume.id.clone()))).await;
    let made: Vec<types::VolumeVersion> =
        answers.into_iter().map(|a| a.unwrap().into_inner()).collect();
    assert!(made.iter().all(|v| *v == made[0]), "{made:#?}");
    assert_eq!(commit(volume.id.clone()).await.unwrap().into_inner(), made[0], "later");
    let versions = c.list_volume_versions().id(&volume.id).send().await.unwrap().into_inner();
    assert_eq!(versions.data.len(), 1);
    let (status, error) = api_error(commit(other.id.clone()).await);
    assert_eq!((status, error.param.as_deref()), (400, Some("uploadSessionId")));
}
