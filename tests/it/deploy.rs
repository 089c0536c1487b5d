//! deploy/: what people run wsstorm's shards with, checked without a cluster or a second
//! machine.
//!
//! - deploy/kubernetes/*.yaml against the Kubernetes API's JSON schemas, offline, with
//!   `kubernetes-validate` (a peer: pinned in tests/peers/requirements.txt, schemas bundled),
//!   at the oldest Kubernetes the Job is written for and the newest the validator knows. The
//!   schemas check field names and types, not values (`completionMode: Sideways` passes them),
//!   so the Job's own rules — N in three places, the contract's arguments, the profile it
//!   mounts, a shard's size against the pod's resources — are checked here too.
//! - deploy/ssh/run-shards.sh: syntax, ShellCheck (from the same virtualenv), its help, and a
//!   whole run with `ssh`, `scp` and `wsstorm` replaced by local stand-ins.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_yaml_ng::Value;
use wsstorm::plan::budget::{Limits, fit};
use wsstorm::plan::{Plan, PlanTarget, TimelineAction};

use crate::common::{root, yaml_files};

/// Oldest Kubernetes the Job is written for (`backoffLimitPerIndex` is on by default from 1.29)
/// and the newest schema the pinned validator bundles.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];

/// The open-file hard limit a pod gets from containerd 2.x, the lowest of the usual runtimes.
const POD_FD_LIMIT: u64 = 524_288;

/// What a proxied client was measured to cost a shard (job.yaml's sizing comment): RSS after a
/// reconnect storm, three sockets' kernel memory, and the runtime.
const PROXIED_CLIENT_BYTES: u64 = (24 + 3 * 2) << 10;
const DIRECT_CLIENT_BYTES: u64 = (4 + 2) << 10;
const RUNTIME_BYTES: u64 = 64 << 20;

fn kubernetes_dir() -> PathBuf {
    root().join("deploy/kubernetes")
}

fn script() -> PathBuf {
    root().join("deploy/ssh/run-shards.sh")
}

/// A program the peers' virtualenv installed (`kubernetes-validate`, `shellcheck`).
fn venv_bin(name: &str) -> PathBuf {
    let python = crate::peers::python();
    python
        .parent()
        .expect("the venv's python is in its bin/")
        .join(name)
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn validate(version: &str, files: &[PathBuf]) -> Output {
    run(Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "-k", version])
        .args(files))
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(v, |v, key| match key.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[key],
        })
}

fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string: {:?}", at(v, path)))
}

fn u64_at(v: &Value, path: &str) -> u64 {
    at(v, path)
        .as_u64()
        .unwrap_or_else(|| panic!("{path} is not a whole number: {:?}", at(v, path)))
}

/// The item of a list of named things (containers, env, volumes).
fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_sequence()
        .and_then(|s| s.iter().find(|i| i["name"].as_str() == Some(name)))
        .unwrap_or_else(|| panic!("no `{name}` in {list:?}"))
}

/// A Kubernetes memory quantity in the binary units job.yaml uses.
fn bytes(quantity: &str) -> u64 {
    let (n, unit) = quantity.split_at(quantity.find(|c: char| !c.is_ascii_digit()).unwrap());
    let shift = match unit {
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        _ => panic!("unexpected memory quantity {quantity}"),
    };
    n.parse::<u64>().unwrap() << shift
}

#[test]
fn kubernetes_manifests_validate_against_the_api_schemas() {
    let files = yaml_files(&kubernetes_dir());
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in ["configmap.yaml", "job.yaml", "kustomization.yaml"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    for version in KUBERNETES_VERSIONS {
        let o = validate(version, &files);
        let out = text(&o);
        assert!(o.status.success(), "Kubernetes {version}:\n{out}");
        // Passed, not merely skipped for want of a schema (as the Kustomization is: it is
        // kustomize's file, not an API object).
        for resource in ["configmap/wsstorm-profile", "job/wsstorm"] {
            assert!(
                out.contains(&format!("passed for resource {resource}")),
                "Kubernetes {version}: {resource} not validated:\n{out}"
            );
        }
    }
}

/// The validator is not a rubber stamp: a misspelt field (what --strict is for) and a value of
/// the wrong type each fail, naming the problem.
#[test]
fn kubernetes_validation_rejects_broken_manifests() {
    let job = std::fs::read_to_string(kubernetes_dir().join("job.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broken = [
        (
            "misspelt.yaml",
            "backoffLimitPerIndex: 0",
            "backoffLimitPerIndx: 0",
            "'backoffLimitPerIndx' was unexpected",
        ),
        (
            "wrong-type.yaml",
            "parallelism: 5",
            "parallelism: five",
            "'five' is not of type 'integer'",
        ),
        (
            "no-containers.yaml",
            "      containers:\n",
            "      initContainers:\n",
            "'containers' is a required property",
        ),
    ];
    for (file, from, to, expect) in broken {
        assert!(job.contains(from), "job.yaml no longer has `{from}`");
        let path = dir.path().join(file);
        std::fs::write(&path, job.replacen(from, to, 1)).unwrap();
        let o = validate(KUBERNETES_VERSIONS[1], &[path]);
        let out = text(&o);
        assert!(!o.status.success(), "{file} passed:\n{out}");
        assert!(
            out.contains(expect),
            "{file}: expected `{expect}` in:\n{out}"
        );
    }
    // A field newer than a version is refused at that version: the version is really used.
    let o = validate("1.27.0", &[kubernetes_dir().join("job.yaml")]);
    assert!(
        !o.status.success() && text(&o).contains("'backoffLimitPerIndex' was unexpected"),
        "{}",
        text(&o)
    );
}

/// What the schemas cannot see: the Job runs the sharding contract, N agrees everywhere, the
/// profile it mounts is a valid plan that can be sharded, and a shard fits the pod.
#[test]
fn kubernetes_job_runs_the_profile_as_shards_that_fit_their_pods() {
    let job = load(&kubernetes_dir().join("job.yaml"));
    let configmap = load(&kubernetes_dir().join("configmap.yaml"));
    let kustomization = load(&kubernetes_dir().join("kustomization.yaml"));

    let resources: Vec<_> = at(&kustomization, "resources")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(resources, ["configmap.yaml", "job.yaml"]);

    assert_eq!(str_at(&job, "kind"), "Job");
    assert_eq!(str_at(&job, "spec.completionMode"), "Indexed");
    assert_eq!(str_at(&job, "spec.template.spec.restartPolicy"), "Never");
    assert_eq!(u64_at(&job, "spec.backoffLimitPerIndex"), 0);
    assert!(u64_at(&job, "spec.ttlSecondsAfterFinished") > 0);
    let shards = u64_at(&job, "spec.completions");
    assert_eq!(
        u64_at(&job, "spec.parallelism"),
        shards,
        "every shard must run at once"
    );

    let pod = at(&job, "spec.template.spec");
    let c = named(&pod["containers"], "wsstorm");
    let args: Vec<_> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "run",
            "/profile/profile.yaml",
            "--shards",
            "$(WSSTORM_SHARDS)",
            "--start-at",
            "$(WSSTORM_START_AT)",
            "--out",
            "/results/shard-$(JOB_COMPLETION_INDEX)",
            "--no-tui",
            "--metrics-listen",
            "0.0.0.0:9464",
            "--metrics-linger",
            "60s",
        ]
    );
    let env = |name: &str| str_at(named(&c["env"], name), "value").to_string();
    assert_eq!(env("WSSTORM_SHARDS"), shards.to_string());
    let start = env("WSSTORM_START_AT");
    assert!(
        regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
            .unwrap()
            .is_match(&start),
        "WSSTORM_START_AT {start} is not UTC RFC 3339"
    );

    // The profile: mounted from the ConfigMap, at the path the arguments name.
    let mount = named(&c["volumeMounts"], "profile");
    assert_eq!(str_at(mount, "mountPath"), "/profile");
    let volume = named(&pod["volumes"], "profile");
    assert_eq!(
        str_at(volume, "configMap.name"),
        str_at(&configmap, "metadata.name")
    );
    let source = configmap["data"]["profile.yaml"]
        .as_str()
        .expect("the ConfigMap holds profile.yaml");
    let mut plan = Plan::from_yaml(source, "deploy/kubernetes/configmap.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(plan.target, PlanTarget::External { .. }),
        "a sharded run needs an external target"
    );
    for a in &plan.timeline {
        assert!(
            !matches!(a.action, TimelineAction::Server(_)),
            "embedded-target actions cannot be sharded: {}",
            a.action
        );
    }

    // One shard against the pod's resources: the pre-flight budget, with the open files a
    // pod gets, the sysctl's port range, the CPU and memory limits; and the measured cost of a
    // client, which the budget does not fully count for proxied ones.
    let limits = &c["resources"]["limits"];
    let memory = bytes(str_at(limits, "memory"));
    assert_eq!(limits, &c["resources"]["requests"], "Guaranteed QoS");
    let ports = named(
        &pod["securityContext"]["sysctls"],
        "net.ipv4.ip_local_port_range",
    );
    let range: Vec<u64> = str_at(ports, "value")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let mut estimate = RUNTIME_BYTES;
    for g in &mut plan.groups {
        g.clients = g.clients.div_ceil(shards as u32);
        let per = if g.via_proxy {
            PROXIED_CLIENT_BYTES
        } else {
            DIRECT_CLIENT_BYTES
        };
        estimate += u64::from(g.clients) * per;
    }
    let here = Limits {
        fd_limit: POD_FD_LIMIT,
        ports_per_address: range[1] - range[0] + 1,
        cpus: str_at(limits, "cpu").parse().unwrap(),
        memory,
    };
    fit(&mut plan, None, &here).unwrap_or_else(|e| panic!("one shard does not fit its pod: {e}"));
    assert!(
        estimate <= memory,
        "one shard needs about {} MiB, the pod's limit is {} MiB",
        estimate >> 20,
        memory >> 20
    );
}

#[test]
fn deploy_ssh_script_parses_and_passes_shellcheck() {
    let o = run(Command::new("bash").arg("-n").arg(script()));
    assert!(o.status.success(), "bash -n: {}", text(&o));
    let o = run(Command::new(venv_bin("shellcheck")).arg(script()));
    assert!(o.status.success(), "shellcheck:\n{}", text(&o));
}

#[test]
fn deploy_ssh_script_prints_usage_and_refuses_bad_arguments() {
    let o = run(Command::new(script()).arg("-h"));
    assert!(o.status.success(), "{}", text(&o));
    let usage = String::from_utf8_lossy(&o.stdout);
    assert!(usage.starts_with("Usage: run-shards.sh -H HOSTS -p PROFILE -t TARGET_URL"));
    for flag in [
        "-H HOSTS",
        "-p PROFILE",
        "-t TARGET_URL",
        "-d DELAY",
        "-b BINARY",
    ] {
        assert!(usage.contains(flag), "{flag} in:\n{usage}");
    }
    // No arguments, an unknown flag, a target that is not a WebSocket URL: exit 2, and why.
    let hosts = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(hosts.path(), "one\n").unwrap();
    let profile = root().join("profiles/quickstart.yaml");
    let cases: [(Vec<&std::ffi::OsStr>, &str); 3] = [
        (vec![], "no hosts file"),
        (vec!["-x".as_ref()], "unknown option -x"),
        (
            vec![
                "-H".as_ref(),
                hosts.path().as_os_str(),
                "-p".as_ref(),
                profile.as_os_str(),
                "-t".as_ref(),
                "http://127.0.0.1:9/".as_ref(),
            ],
            "must be a ws:// or wss:// URL",
        ),
    ];
    for (args, expect) in cases {
        let o = run(Command::new(script()).args(&args));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(expect), "{args:?}: {}", text(&o));
    }
}

/// Stand-ins put first on the PATH: `ssh HOST CMD` runs CMD here, `scp A B` copies with the
/// `HOST:` prefixes dropped; the wsstorm "binary" records its arguments as results.json and
/// merges by concatenating. Every host is then this machine, each shard in its own directory.
const FAKE_SSH: &str = r#"#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in -o) shift 2 ;; -*) shift ;; *) break ;; esac; done
echo "$1" >> "$FAKE_HOSTS"
shift
exec sh -c "$*"
"#;
const FAKE_SCP: &str = r#"#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in -o) shift 2 ;; -*) shift ;; *) break ;; esac; done
exec cp "${1#*:}" "${2#*:}"
"#;
const FAKE_WSSTORM: &str = r#"#!/bin/sh
cmd=$1; shift
case "$cmd" in
run)
    if [ -n "${FAKE_SLEEP:-}" ]; then exec sleep "$FAKE_SLEEP"; fi
    all="$*"; out=""; shard=""
    while [ $# -gt 0 ]; do
        case "$1" in --out) out=$2; shift ;; --shard) shard=$2; shift ;; esac
        shift
    done
    if [ "$shard" = "${FAIL_SHARD:-}" ]; then echo "shard $shard failed" >&2; exit 3; fi
    mkdir -p "$out" && echo "run $all" > "$out/results.json" ;;
merge)
    out=""; files=""
    while [ $# -gt 0 ]; do
        case "$1" in -o) out=$2; shift ;; *) files="$files $1" ;; esac
        shift
    done
    mkdir -p "$out" && cat $files > "$out/results.json" ;;
esac
"#;

fn fake_run(dir: &Path, fail_shard: &str) -> Output {
    run(&mut fake_command(dir, fail_shard))
}

fn fake_command(dir: &Path, fail_shard: &str) -> Command {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, body) in [
        ("bin/ssh", FAKE_SSH),
        ("bin/scp", FAKE_SCP),
        ("wsstorm", FAKE_WSSTORM),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(
        dir.join("hosts.txt"),
        "# load generators\nalpha\n\nuser@beta   # the second\n  gamma\n",
    )
    .unwrap();
    let path = std::env::join_paths(
        std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let mut cmd = Command::new(script());
    cmd.current_dir(dir)
        .env("PATH", path)
        .env("FAKE_HOSTS", dir.join("hosts.log"))
        .env("FAIL_SHARD", fail_shard)
        .args(["-H", "hosts.txt", "-t", "ws://127.0.0.1:9/ws", "-d", "1"])
        .args(["-b", "./wsstorm", "-o", "results", "-r"])
        .arg(dir.join("remote"))
        .arg("-p")
        .arg(root().join("profiles/quickstart.yaml"));
    cmd
}

#[test]
fn deploy_ssh_script_runs_shard_i_of_n_on_host_i_with_one_start_and_merges() {
    let dir = tempfile::tempdir().unwrap();
    let o = fake_run(dir.path(), "");
    assert!(o.status.success(), "{}", text(&o));
    let hosts = std::fs::read_to_string(dir.path().join("hosts.log")).unwrap();
    for h in ["alpha", "user@beta", "gamma"] {
        assert!(hosts.lines().any(|l| l == h), "{h} in {hosts}");
    }
    let start = regex::Regex::new(r"--start-at (\S+)").unwrap();
    let mut starts = Vec::new();
    for i in 0..3 {
        let shard = dir.path().join(format!("results/shard-{i}/results.json"));
        let args = std::fs::read_to_string(&shard).unwrap();
        assert!(args.contains(&format!("--shard {i}/3 ")), "{args}");
        assert!(args.contains("--target ws://127.0.0.1:9/ws "), "{args}");
        assert!(args.trim_end().ends_with("--no-tui"), "{args}");
        starts.push(start.captures(&args).unwrap()[1].to_string());
    }
    assert!(
        regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
            .unwrap()
            .is_match(&starts[0]),
        "{starts:?}"
    );
    assert!(starts.iter().all(|s| *s == starts[0]), "{starts:?}");
    let merged = std::fs::read_to_string(dir.path().join("results/merged/results.json")).unwrap();
    for i in 0..3 {
        assert!(merged.contains(&format!("--shard {i}/3 ")), "{merged}");
    }
}

#[test]
fn deploy_ssh_script_does_not_merge_when_a_shard_fails() {
    let dir = tempfile::tempdir().unwrap();
    let o = fake_run(dir.path(), "1/3");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("shard 1/3 on user@beta exited 3"), "{out}");
    assert!(out.contains("not merging"), "{out}");
    let log = std::fs::read_to_string(dir.path().join("results/shard-1/run.log")).unwrap();
    assert!(log.contains("shard 1/3 failed"), "{log}");
    assert!(!dir.path().join("results/merged").exists());
}

/// Stopped (SIGTERM, or Ctrl-C), the script stops the shards it started on the hosts, by the
/// pid each remote shell recorded before it became wsstorm.
#[test]
fn deploy_ssh_script_stops_its_remote_shards_when_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = fake_command(dir.path(), "");
    let mut child = cmd
        .env("FAKE_SLEEP", "60")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid_files: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("remote/shard-{i}.pid")))
        .collect();
    let read_pid = |f: &PathBuf| {
        std::fs::read_to_string(f)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let pids = loop {
        let pids: Vec<i32> = pid_files.iter().filter_map(read_pid).collect();
        if pids.len() == 3 {
            break pids;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the shards never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // SAFETY: kill(2) on the pid of a child we started and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    for pid in pids {
        // The stand-in `sleep`s are children of the script's `ssh` stand-ins, reaped by now
        // or soon: gone, or a zombie.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
            if matches!(state, None | Some('Z')) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "shard pid {pid} still running"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
