//! The local launcher of a gang-scheduled job (`trainyard task gang`), the role torchrun
//! plays on one machine: it starts every worker at once with the variables
//! `torch.distributed` reads (`MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE`, `RANK`,
//! `LOCAL_RANK`, `NODE_RANK`, …), gives each its own slice of the job's GPUs, and ends the
//! whole gang when one worker fails, so that the scheduler retries it whole.
//!
//! It runs under the attempt's supervisor like any command: the workers stay in the
//! supervisor's process group, so a cancel or a time limit reaches all of them, and their
//! output goes to the job's log.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How the launcher is asked to run.
#[derive(Debug, Clone)]
pub struct GangOptions {
    pub workers: u32,
    /// GPUs of each worker, taken in order from the job's `CUDA_VISIBLE_DEVICES`.
    pub gpus_per_worker: u32,
    /// Between SIGTERM and SIGKILL for the workers left when one failed.
    pub kill_grace: Duration,
    pub command: Vec<String>,
}

/// The variables worker `rank` of `workers` gets, besides the job's own.
pub fn worker_env(
    rank: u32,
    workers: u32,
    master_port: u16,
    gpus: Option<String>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("MASTER_ADDR".to_string(), "127.0.0.1".to_string()),
        ("MASTER_PORT".to_string(), master_port.to_string()),
        ("WORLD_SIZE".to_string(), workers.to_string()),
        ("RANK".to_string(), rank.to_string()),
        ("LOCAL_RANK".to_string(), rank.to_string()),
        ("LOCAL_WORLD_SIZE".to_string(), workers.to_string()),
        ("NODE_RANK".to_string(), "0".to_string()),
        ("GROUP_RANK".to_string(), "0".to_string()),
    ];
    if let Some(gpus) = gpus {
        env.push(("CUDA_VISIBLE_DEVICES".to_string(), gpus));
    }
    env
}

/// Worker `rank`'s GPUs out of the job's `visible` ones.
fn slice_of(visible: &str, rank: u32, per_worker: u32) -> Option<String> {
    if per_worker == 0 {
        return None;
    }
    let all: Vec<&str> = visible.split(',').filter(|g| !g.is_empty()).collect();
    let from = (rank * per_worker) as usize;
    let mine = all.get(from..from + per_worker as usize)?;
    Some(mine.join(","))
}

/// A port free on loopback now, for worker 0's rendezvous.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs the gang; returns the launcher's exit status: 0 when every worker exited 0, else
/// the first failure's code (128 + signal for a signal).
pub fn run(opts: GangOptions) -> i32 {
    match launch(&opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("trainyard gang: {e}");
            127
        }
    }
}

fn launch(opts: &GangOptions) -> std::io::Result<i32> {
    use std::os::unix::process::ExitStatusExt;
    let port = free_port()?;
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default();
    let mut children: Vec<(u32, Child)> = Vec::new();
    for rank in 0..opts.workers {
        let mut cmd = Command::new(&opts.command[0]);
        cmd.args(&opts.command[1..]).envs(worker_env(
            rank,
            opts.workers,
            port,
            slice_of(&visible, rank, opts.gpus_per_worker),
        ));
        match cmd.spawn() {
            Ok(child) => children.push((rank, child)),
            Err(e) => {
                stop_all(&mut children, opts.kill_grace);
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot start worker {rank} (`{}`): {e}", opts.command[0]),
                ));
            }
        }
    }
    let mut failure: Option<i32> = None;
    while !children.is_empty() {
        let mut ended = None;
        for (i, (_, child)) in children.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                ended = Some((i, status));
                break;
            }
        }
        let Some((i, status)) = ended else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let (rank, _) = children.remove(i);
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        if code != 0 && failure.is_none() {
            failure = Some(code);
            if !children.is_empty() {
                eprintln!(
                    "trainyard gang: worker {rank} ended with {status}; stopping the other {}",
                    children.len()
                );
                stop_all(&mut children, opts.kill_grace);
            }
        }
    }
    Ok(failure.unwrap_or(0))
}

/// SIGTERM to every worker left, SIGKILL to those still there after `grace`; reaps them.
fn stop_all(children: &mut Vec<(u32, Child)>, grace: Duration) {
    for (_, child) in children.iter() {
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        children.retain_mut(|(_, c)| !matches!(c.try_wait(), Ok(Some(_))));
        if children.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (_, child) in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    children.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_gets_its_own_gpus() {
        assert_eq!(slice_of("0,1,2,3", 0, 2).as_deref(), Some("0,1"));
        assert_eq!(slice_of("0,1,2,3", 1, 2).as_deref(), Some("2,3"));
        assert_eq!(slice_of("0,1", 1, 2), None, "not enough GPUs: none claimed");
        assert_eq!(slice_of("0,1", 1, 0), None);
    }

    #[test]
    fn workers_see_their_ranks_and_one_failure_ends_the_gang() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ranks");
        let code = run(GangOptions {
            workers: 3,
            gpus_per_worker: 0,
            kill_grace: Duration::from_secs(1),
            command: vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "echo \"$RANK/$WORLD_SIZE $LOCAL_RANK $MASTER_ADDR:$MASTER_PORT\" >> {}",
                    out.display()
                ),
            ],
        });
        assert_eq!(code, 0);
        let mut lines: Vec<String> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        let port = lines[0].rsplit(':').next().unwrap().to_string();
        assert_eq!(
            lines,
            (0..3)
                .map(|r| format!("{r}/3 {r} 127.0.0.1:{port}"))
                .collect::<Vec<_>>()
        );

        // Worker 1 fails at once; worker 0 would sleep a minute: it is stopped.
        let started = Instant::now();
        let code = run(GangOptions {
            workers: 2,
            gpus_per_worker: 0,
            kill_grace: Duration::from_secs(1),
            command: vec![
                "sh".into(),
                "-c".into(),
                "if [ \"$RANK\" = 1 ]; then exit 7; fi; exec sleep 60".into(),
            ],
        });
        assert_eq!(code, 7);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
}
