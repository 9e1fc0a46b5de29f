//! How a task prints a report in the job's log.

use trainyard_engine::metrics::Report;

pub fn print_report(report: &Report, split: &str) {
    match report {
        Report::Classification(r) => println!(
            "{split}: accuracy {:.4}  top-{} {:.4}  f1(macro) {:.4}  log-loss {:.4}  ({} rows)",
            r.accuracy, r.top_k, r.top_k_accuracy, r.f1_macro, r.log_loss, r.rows
        ),
        Report::Regression(r) => println!(
            "{split}: mse {:.6}  mae {:.6}  r2 {:.4}  ({} rows)",
            r.mse, r.mae, r.r2, r.rows
        ),
    }
}
