//! Instance threads and the dynamic batcher. Every instance of a model is one OS thread that
//! owns its runtime session and pulls from the model's queue: it takes the first request,
//! stacks whatever compatible requests are already waiting (and, with a queue delay, those
//! that arrive before it ends) along the batch dimension, runs once, and splits the outputs
//! back. With several instances, batches form and run in parallel.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use tokio::sync::oneshot;

use crate::memory::release_free_memory;
use crate::metrics::{ModelLabels, ServeMetrics};
use crate::runtime::Instance;
use crate::stats::ModelStats;
use crate::tensor::{DataType, Tensor};
use crate::ServeError;

/// One request waiting for an instance.
pub(crate) struct Job {
    /// In the model's input order.
    pub inputs: Vec<Tensor>,
    /// Rows along the batch dimension (1 for models that do not batch).
    pub rows: usize,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<Vec<Tensor>, ServeError>>,
}

#[derive(Clone, Debug)]
pub(crate) struct BatchPolicy {
    /// 0 = the model does not batch.
    pub max_rows: usize,
    pub max_delay: Duration,
    /// Stop gathering once one of these sizes is reached.
    pub preferred: Vec<usize>,
}

pub(crate) struct Context {
    pub policy: BatchPolicy,
    pub stats: Arc<ModelStats>,
    pub metrics: ServeMetrics,
    pub labels: ModelLabels,
}

/// Starts one thread per instance; they end when every sender of `queue` is gone.
pub(crate) fn spawn(
    name: &str,
    instances: Vec<Box<dyn Instance>>,
    queue: Receiver<Job>,
    context: Arc<Context>,
) -> Result<(), ServeError> {
    for (i, instance) in instances.into_iter().enumerate() {
        let queue = queue.clone();
        let context = context.clone();
        std::thread::Builder::new()
            .name(format!("serve-{name}-{i}"))
            .spawn(move || {
                run_instance(instance, queue, &context);
                release_free_memory();
            })
            .map_err(|e| ServeError::internal(format!("cannot start an instance thread: {e}")))?;
    }
    Ok(())
}

fn run_instance(mut instance: Box<dyn Instance>, queue: Receiver<Job>, cx: &Context) {
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let mut rows = first.rows;
        let deadline = first.enqueued + cx.policy.max_delay;
        let mut jobs = vec![first];
        while cx.policy.max_rows > 0
            && rows < cx.policy.max_rows
            && !cx.policy.preferred.contains(&rows)
        {
            let next = match queue.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => match queue.recv_deadline(deadline) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                },
            };
            if rows + next.rows > cx.policy.max_rows || !stackable(&jobs[0], &next) {
                carry = Some(next);
                break;
            }
            rows += next.rows;
            jobs.push(next);
        }
        execute(instance.as_mut(), jobs, rows, cx);
    }
}

/// Same datatypes and the same dimensions after the first, and fixed-size elements.
fn stackable(a: &Job, b: &Job) -> bool {
    a.inputs.len() == b.inputs.len()
        && a.inputs.iter().zip(&b.inputs).all(|(x, y)| {
            x.datatype == y.datatype
                && x.datatype != DataType::Bytes
                && x.shape.len() == y.shape.len()
                && x.shape.get(1..) == y.shape.get(1..)
        })
}

fn stack(jobs: &mut [Job], rows: usize) -> Vec<Tensor> {
    let mut out: Vec<Tensor> = Vec::with_capacity(jobs[0].inputs.len());
    for i in 0..jobs[0].inputs.len() {
        let (name, datatype) = (jobs[0].inputs[i].name.clone(), jobs[0].inputs[i].datatype);
        let mut shape = jobs[0].inputs[i].shape.clone();
        shape[0] = rows;
        let bytes = jobs.iter().map(|j| j.inputs[i].data.len()).sum();
        let mut data = Vec::with_capacity(bytes);
        for j in jobs.iter_mut() {
            data.append(&mut j.inputs[i].data);
        }
        out.push(Tensor {
            name,
            datatype,
            shape,
            data,
        });
    }
    out
}

/// Cuts each output into the rows each request sent.
fn split(outputs: Vec<Tensor>, jobs: &[Job], rows: usize) -> Result<Vec<Vec<Tensor>>, ServeError> {
    let mut per_job: Vec<Vec<Tensor>> = jobs.iter().map(|_| Vec::new()).collect();
    for out in outputs {
        if out.shape.first() != Some(&rows) || out.datatype == DataType::Bytes {
            return Err(ServeError::internal(format!(
                "output '{}' has shape {:?}, which does not follow the batch of {rows}; set max_batch_size 0 in the model's config",
                out.name, out.shape
            )));
        }
        let row_bytes = out.data.len() / rows.max(1);
        let mut offset = 0;
        for (job, slot) in jobs.iter().zip(per_job.iter_mut()) {
            let len = row_bytes * job.rows;
            let mut shape = out.shape.clone();
            shape[0] = job.rows;
            slot.push(Tensor {
                name: out.name.clone(),
                datatype: out.datatype,
                shape,
                data: out.data[offset..offset + len].to_vec(),
            });
            offset += len;
        }
    }
    Ok(per_job)
}

fn execute(instance: &mut dyn Instance, mut jobs: Vec<Job>, rows: usize, cx: &Context) {
    let started = Instant::now();
    let waits: Vec<Duration> = jobs.iter().map(|j| started - j.enqueued).collect();
    for waited in &waits {
        cx.metrics
            .queue_seconds
            .get_or_create(&cx.labels)
            .observe(waited.as_secs_f64());
    }
    let inputs = if jobs.len() == 1 {
        std::mem::take(&mut jobs[0].inputs)
    } else {
        stack(&mut jobs, rows)
    };
    let input_done = Instant::now();
    // A panicking runtime fails this batch, not the server.
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| instance.run(inputs)))
        .unwrap_or_else(|p| {
            Err(ServeError::internal(format!(
                "the runtime panicked: {}",
                trainyard_background::panic_message(&*p)
            )))
        });
    let infer_done = Instant::now();
    let results: Vec<Result<Vec<Tensor>, ServeError>> = match result {
        Ok(outputs) if jobs.len() == 1 => vec![Ok(outputs)],
        Ok(outputs) => match split(outputs, &jobs, rows) {
            Ok(parts) => parts.into_iter().map(Ok).collect(),
            Err(e) => jobs
                .iter()
                .map(|_| Err(ServeError::internal(e.to_string())))
                .collect(),
        },
        Err(e) => {
            let text = e.to_string();
            let mut first = Some(e);
            jobs.iter()
                .map(|_| {
                    Err(first
                        .take()
                        .unwrap_or_else(|| ServeError::internal(text.clone())))
                })
                .collect()
        }
    };
    let done = Instant::now();
    let (input_t, infer_t, output_t) = (
        input_done - started,
        infer_done - input_done,
        done - infer_done,
    );
    cx.metrics
        .compute_seconds
        .get_or_create(&cx.labels)
        .observe(infer_t.as_secs_f64());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    cx.stats.record(|s| {
        s.execution_count += 1;
        let b = s.batches.entry(rows).or_default();
        b.count += 1;
        b.compute_input_ns += input_t.as_nanos() as u64;
        b.compute_infer_ns += infer_t.as_nanos() as u64;
        b.compute_output_ns += output_t.as_nanos() as u64;
        for ((job, result), waited) in jobs.iter().zip(&results).zip(&waits) {
            s.queue.add(*waited);
            let total = done - job.enqueued;
            if result.is_ok() {
                s.success.add(total);
                s.compute_input.add(input_t);
                s.compute_infer.add(infer_t);
                s.compute_output.add(output_t);
                s.inference_count += job.rows as u64;
            } else {
                s.fail.add(total);
            }
        }
        s.last_inference = now_ms;
    });
    for (job, result) in jobs.into_iter().zip(results) {
        // The caller may have gone away; its answer is simply dropped.
        let _ = job.reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(
        rows: usize,
        values: &[f32],
    ) -> (Job, oneshot::Receiver<Result<Vec<Tensor>, ServeError>>) {
        let (tx, rx) = oneshot::channel();
        let t = Tensor::from_vec("x", vec![rows, values.len() / rows], values);
        (
            Job {
                inputs: vec![t],
                rows,
                enqueued: Instant::now(),
                reply: tx,
            },
            rx,
        )
    }

    #[test]
    fn stacks_and_splits_rows() {
        let (a, _ra) = job(1, &[1.0, 2.0]);
        let (b, _rb) = job(2, &[3.0, 4.0, 5.0, 6.0]);
        assert!(stackable(&a, &b));
        let mut jobs = vec![a, b];
        let stacked = stack(&mut jobs, 3);
        assert_eq!(stacked[0].shape, vec![3, 2]);
        assert_eq!(
            stacked[0].to_vec::<f32>(),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        let parts = split(stacked, &jobs, 3).unwrap();
        assert_eq!(parts[0][0].to_vec::<f32>(), vec![1.0, 2.0]);
        assert_eq!(parts[1][0].shape, vec![2, 2]);
        assert_eq!(parts[1][0].to_vec::<f32>(), vec![3.0, 4.0, 5.0, 6.0]);
    }

    /// Panics on a negative first element, else doubles its input.
    struct Touchy;

    impl Instance for Touchy {
        fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ServeError> {
            let v = inputs[0].to_vec::<f32>();
            assert!(v[0] >= 0.0, "negative input");
            let doubled: Vec<f32> = v.iter().map(|x| x * 2.0).collect();
            Ok(vec![Tensor::from_vec(
                "y",
                inputs[0].shape.clone(),
                &doubled,
            )])
        }
    }

    #[test]
    fn a_panicking_runtime_fails_its_batch_and_the_instance_goes_on() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let context = Arc::new(Context {
            policy: BatchPolicy {
                max_rows: 0,
                max_delay: Duration::ZERO,
                preferred: Vec::new(),
            },
            stats: Arc::default(),
            metrics: ServeMetrics::default(),
            labels: ModelLabels {
                model: "touchy".into(),
                version: "1".into(),
            },
        });
        spawn("touchy", vec![Box::new(Touchy)], rx, context.clone()).unwrap();
        let (bad, bad_answer) = job(1, &[-1.0, 0.0]);
        let (good, good_answer) = job(1, &[1.0, 2.0]);
        tx.send(bad).unwrap();
        tx.send(good).unwrap();
        let err = bad_answer.blocking_recv().unwrap().unwrap_err();
        assert!(
            err.to_string().contains("panicked: negative input"),
            "{err}"
        );
        let out = good_answer.blocking_recv().unwrap().unwrap();
        assert_eq!(out[0].to_vec::<f32>(), vec![2.0, 4.0]);
        let stats = context.stats.snapshot();
        assert_eq!((stats.success.count, stats.fail.count), (1, 1));
    }

    #[test]
    fn different_row_shapes_do_not_stack() {
        let (a, _ra) = job(1, &[1.0, 2.0]);
        let (b, _rb) = job(1, &[1.0, 2.0, 3.0]);
        assert!(!stackable(&a, &b));
    }
}
