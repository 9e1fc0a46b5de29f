//! One loop per cluster pool asks the engine where its watched jobs are, for all of them at
//! once, a few times a second. Each attempt's watcher only waits for the next answer.
//!
//! Why not a timer per attempt: how soon an end is seen decides how soon the pool's slot
//! is handed to the next job. At one poll a second, ends were seen 0.4–0.9 s late and the
//! pool ran below the engine's own throughput (`docs/benchmarks.md`, bench/cluster). Polling
//! faster per attempt would multiply the engine's load by the attempts running. Gathered
//! here, the load is one engine call per round (see [`Engine::states`]), and the pace
//! backs off when the engine answers slowly.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

use super::cluster::{Engine, EngineError, EngineState};

/// The shortest time between two rounds: ends are seen about this late at worst, plus the
/// engine's answer time.
pub const ROUND_EVERY: Duration = Duration::from_millis(250);
/// A round the engine has not answered by then is answered "unavailable" for every job in
/// it, so one hung call cannot stall every watcher of the pool.
const ROUND_WITHIN: Duration = Duration::from_secs(30);

/// One watcher's question: the engine id, and where the answer goes.
type Asked = (
    String,
    oneshot::Sender<Result<Option<EngineState>, EngineError>>,
);

/// Asks an engine about many jobs in rounds. Cheap to share; the loop ends when the last
/// handle is dropped.
pub struct StatePoller {
    asked: Arc<Mutex<Vec<Asked>>>,
    wake: Arc<Notify>,
}

impl StatePoller {
    /// Starts the loop over `engine` (needs a Tokio runtime).
    pub fn start<E: Engine>(engine: Arc<E>) -> Self {
        let asked: Arc<Mutex<Vec<Asked>>> = Arc::default();
        let wake = Arc::new(Notify::new());
        tokio::spawn(rounds(engine, Arc::downgrade(&asked), wake.clone()));
        Self { asked, wake }
    }

    /// Where job `id` is, as of the next round.
    pub async fn state(&self, id: &str) -> Result<Option<EngineState>, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.asked.lock().push((id.to_string(), tx));
        self.wake.notify_one();
        rx.await
            .unwrap_or_else(|_| Err(EngineError::Unavailable("the pool is stopping".into())))
    }
}

async fn rounds<E: Engine>(engine: Arc<E>, asked: Weak<Mutex<Vec<Asked>>>, wake: Arc<Notify>) {
    loop {
        let batch = match asked.upgrade() {
            Some(asked) => std::mem::take(&mut *asked.lock()),
            None => return,
        };
        if batch.is_empty() {
            // Woken by the next question; the timeout only notices a dropped poller.
            let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
            continue;
        }
        let began = Instant::now();
        let mut ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
        ids.sort();
        ids.dedup();
        // A panic in an engine's code fails the round, not the loop (its watchers would
        // wait for ever).
        let round = std::panic::AssertUnwindSafe(engine.states(&ids));
        let answers =
            match tokio::time::timeout(ROUND_WITHIN, futures::FutureExt::catch_unwind(round)).await
            {
                Ok(Ok(answers)) => Ok(answers),
                Ok(Err(_)) => Err(format!(
                    "asking the {} engine failed (a panic)",
                    engine.kind()
                )),
                Err(_) => Err(format!(
                    "the {} engine did not answer within {ROUND_WITHIN:?}",
                    engine.kind()
                )),
            };
        let took = began.elapsed();
        for (id, tx) in batch {
            let answer = match &answers {
                Err(why) => Err(EngineError::Unavailable(why.clone())),
                Ok(answers) => match ids.binary_search(&id).ok().and_then(|i| answers.get(i)) {
                    Some(Ok(state)) => Ok(state.clone()),
                    Some(Err(e)) => Err(e.clone()),
                    None => Err(EngineError::Unavailable(format!(
                        "the {} engine gave no answer about job {id}",
                        engine.kind()
                    ))),
                },
            };
            let _ = tx.send(answer);
        }
        // A slow engine is asked less often: never more than a third of its time.
        tokio::time::sleep(ROUND_EVERY.max(took * 2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::cluster::EngineJob;
    use crate::executor::Node;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its rounds; every job is running except "gone".
    #[derive(Default)]
    struct Counting {
        rounds: AtomicUsize,
        asked: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Engine for Counting {
        fn kind(&self) -> &'static str {
            "test"
        }
        async fn submit(&self, _: &EngineJob) -> Result<String, EngineError> {
            unreachable!("not submitted to")
        }
        async fn find(&self, _: &str) -> Result<Option<String>, EngineError> {
            Ok(None)
        }
        async fn state(&self, _: &str) -> Result<Option<EngineState>, EngineError> {
            unreachable!("asked through states")
        }
        async fn states(&self, ids: &[String]) -> Vec<Result<Option<EngineState>, EngineError>> {
            self.rounds.fetch_add(1, Ordering::SeqCst);
            self.asked.fetch_add(ids.len(), Ordering::SeqCst);
            ids.iter()
                .map(|id| Ok((id != "gone").then_some(EngineState::Running(None))))
                .collect()
        }
        async fn stop(&self, _: &str) -> Result<(), EngineError> {
            Ok(())
        }
        async fn nodes(&self) -> Result<Vec<Node>, EngineError> {
            Ok(vec![])
        }
    }

    #[tokio::test]
    async fn many_watchers_share_one_engine_call_per_round() {
        let engine = Arc::new(Counting::default());
        let poller = Arc::new(StatePoller::start(engine.clone()));
        // Keep the loop busy with one round so the next 50 questions gather behind it.
        let first = poller.state("first");
        let ids: Vec<String> = (0..50).map(|i| format!("job-{}", i % 25)).collect();
        let (first, answers) = tokio::join!(
            first,
            futures::future::join_all(ids.iter().map(|id| poller.state(id)))
        );
        assert_eq!(first.unwrap(), Some(EngineState::Running(None)));
        assert!(answers
            .iter()
            .all(|a| a.as_ref().unwrap() == &Some(EngineState::Running(None))));
        let rounds = engine.rounds.load(Ordering::SeqCst);
        assert!(rounds <= 2, "{rounds} rounds for 51 questions");
        // The same job asked twice in a round is asked of the engine once.
        assert!(engine.asked.load(Ordering::SeqCst) <= 26);
        assert_eq!(poller.state("gone").await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_loop_ends_with_its_poller() {
        let engine = Arc::new(Counting::default());
        let poller = StatePoller::start(engine.clone());
        poller.state("a").await.unwrap();
        drop(poller);
        tokio::time::sleep(Duration::from_millis(1300)).await;
        // Only the test still holds the engine: the loop let go of it.
        assert_eq!(Arc::strong_count(&engine), 1);
    }
}
