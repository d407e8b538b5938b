//! A real S3 implementation with Object Lock on loopback: moto's standalone server (`moto[server]`, pinned in
//! tests/requirements.txt, which scripts/setup-system.sh installs), for the tests of retention that garage cannot
//! run (garage has no Object Lock). Stopped when dropped.
//!
//! Buckets are made, and objects looked at, with boto3 (which comes with moto): a client none of us wrote, so a
//! test does not check the gateway's requests with the gateway's own code. moto 5.2.5 implements
//! GetObjectLockConfiguration, PutObjectRetention and the `x-amz-object-lock-*` headers of a HEAD, and refuses to
//! delete a locked version; it has no GetObjectRetention (a `GET ?retention` is answered as a GetObject), so the
//! retention of an object is read from its HEAD, as boto3's `head_object` gives it.
//!
//! A test that needs moto fails, saying how to install it, rather than passing without it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;

/// The Object Lock a bucket is made with ([`Moto::create_bucket`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketLock {
    /// A plain bucket: GetObjectLockConfiguration answers ObjectLockConfigurationNotFoundError.
    None,
    /// Object Lock enabled (`x-amz-bucket-object-lock-enabled: true`), no default retention rule.
    Enabled,
    /// Object Lock enabled with a default retention rule of `mode` for `days`.
    Default { mode: &'static str, days: u32 },
}

/// A running moto server.
pub struct Moto {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub region: String,
    pub key_id: String,
    pub secret: String,
}

impl std::fmt::Debug for Moto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moto").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

/// An object version as boto3's `list_object_versions` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    pub key: String,
    pub version_id: String,
}

impl Moto {
    /// Starts `python3 -m moto.server` on a free loopback port and waits until it answers.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a directory for moto");
        let log = dir.path().join("moto.log");
        let port = crate::free_port();
        let mut child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("moto's log"))
            .spawn()
            .expect("python3 runs");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "moto's server exited ({status}) before listening; is moto[server] installed (pip install -r \
                     tests/requirements.txt, or scripts/setup-system.sh test)?\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "moto's server did not start listening");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            log,
            _dir: dir,
            endpoint: format!("http://127.0.0.1:{port}"),
            region: "us-east-1".to_owned(),
            key_id: "custodia-test".to_owned(),
            secret: "custodia-test-secret".to_owned(),
        }
    }

    /// Runs `script` in Python with `s3`, a boto3 client of this server, defined; returns what it printed, as JSON.
    pub fn boto(&self, script: &str) -> serde_json::Value {
        let prelude = format!(
            "import boto3, datetime, json\n\
             s3 = boto3.client('s3', endpoint_url='{}', region_name='{}', aws_access_key_id='{}', \
             aws_secret_access_key='{}')\n",
            self.endpoint, self.region, self.key_id, self.secret
        );
        let output = Command::new("python3").arg("-c").arg(prelude + script).output().expect("python3 runs");
        assert!(
            output.status.success(),
            "boto3 failed: {}\n{script}\nmoto's log:\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
            panic!("boto3's script printed no JSON ({err}): {}", String::from_utf8_lossy(&output.stdout))
        })
    }

    /// Makes the bucket `name` with the Object Lock `lock`.
    pub fn create_bucket(&self, name: &str, lock: BucketLock) {
        let create = match lock {
            BucketLock::None => format!("s3.create_bucket(Bucket='{name}')\n"),
            BucketLock::Enabled | BucketLock::Default { .. } => {
                format!("s3.create_bucket(Bucket='{name}', ObjectLockEnabledForBucket=True)\n")
            }
        };
        let rule = match lock {
            BucketLock::Default { mode, days } => format!(
                "s3.put_object_lock_configuration(Bucket='{name}', ObjectLockConfiguration={{'ObjectLockEnabled': \
                 'Enabled', 'Rule': {{'DefaultRetention': {{'Mode': '{mode}', 'Days': {days}}}}}}})\n"
            ),
            BucketLock::None | BucketLock::Enabled => String::new(),
        };
        self.boto(&format!("{create}{rule}print(json.dumps(True))"));
    }

    /// The retention of `key`'s current version as a HEAD of it gives it: its mode and its retain-until date
    /// (RFC 3339), or `None`.
    pub fn retention(&self, bucket: &str, key: &str) -> Option<(String, jiff::Timestamp)> {
        let answer = self.boto(&format!(
            "head = s3.head_object(Bucket='{bucket}', Key='{key}')\n\
             until = head.get('ObjectLockRetainUntilDate')\n\
             print(json.dumps([head.get('ObjectLockMode'), until.isoformat() if until else None]))"
        ));
        match (answer[0].as_str(), answer[1].as_str()) {
            (Some(mode), Some(until)) => Some((mode.to_owned(), until.parse().expect("an RFC 3339 date"))),
            (None, None) => None,
            _ => panic!("a mode without a date, or a date without a mode: {answer}"),
        }
    }

    /// Sets the retention of `key`'s current version, as an operator might by hand.
    pub fn set_retention(&self, bucket: &str, key: &str, mode: &str, until: jiff::Timestamp) {
        let until = until.strftime("%Y-%m-%dT%H:%M:%S");
        self.boto(&format!(
            "s3.put_object_retention(Bucket='{bucket}', Key='{key}', Retention={{'Mode': '{mode}', \
             'RetainUntilDate': datetime.datetime.fromisoformat('{until}+00:00')}})\nprint(json.dumps(True))"
        ));
    }

    /// Every version of every object below `prefix`.
    pub fn versions(&self, bucket: &str, prefix: &str) -> Vec<ObjectVersion> {
        let answer = self.boto(&format!(
            "listed = s3.list_object_versions(Bucket='{bucket}', Prefix='{prefix}')\n\
             print(json.dumps([[v['Key'], v['VersionId']] for v in listed.get('Versions', [])]))"
        ));
        answer
            .as_array()
            .expect("a list")
            .iter()
            .map(|pair| ObjectVersion {
                key: pair[0].as_str().expect("a key").to_owned(),
                version_id: pair[1].as_str().expect("a version").to_owned(),
            })
            .collect()
    }

    /// Asks to delete one object version for good; `Err` with the S3 error code if the server refuses.
    pub fn delete_version(&self, bucket: &str, version: &ObjectVersion) -> Result<(), String> {
        let answer = self.boto(&format!(
            "try:\n    s3.delete_object(Bucket='{bucket}', Key='{}', VersionId='{}')\n    print(json.dumps(None))\n\
             except s3.exceptions.ClientError as err:\n    print(json.dumps(err.response['Error']['Code']))",
            version.key, version.version_id
        ));
        match answer.as_str() {
            None => Ok(()),
            Some(code) => Err(code.to_owned()),
        }
    }

    /// An `object_store` client of `bucket`.
    pub fn object_store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region(&self.region)
            .with_bucket_name(bucket)
            .with_access_key_id(&self.key_id)
            .with_secret_access_key(&self.secret)
            .build()
            .expect("an S3 client for moto");
        Arc::new(store)
    }

    /// The gateway's settings for `bucket` on this server, as environment variables.
    pub fn gateway_env(&self, bucket: &str) -> Vec<(&'static str, String)> {
        vec![
            ("CUSTODIA_S3_BUCKET", bucket.to_owned()),
            ("CUSTODIA_S3_ENDPOINT", self.endpoint.clone()),
            ("CUSTODIA_S3_REGION", self.region.clone()),
            ("CUSTODIA_S3_ACCESS_KEY_ID", self.key_id.clone()),
            ("CUSTODIA_S3_SECRET_ACCESS_KEY", self.secret.clone()),
        ]
    }

    /// What the server has logged (one line a request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
