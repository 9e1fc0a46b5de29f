//! Long metric histories drawn with a bounded number of points: the x axis (steps) is cut
//! into buckets and each bucket keeps its minimum and its maximum point, so every spike and
//! dip stays visible however long the history is.

/// One point of a series: step, timestamp, value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub step: i64,
    pub timestamp: i64,
    pub value: f64,
}

/// A bucket's extremes (what the rollup table stores per bucket too).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Extremes {
    pub min: Point,
    pub max: Point,
}

impl Extremes {
    pub fn of(p: Point) -> Self {
        Extremes { min: p, max: p }
    }

    pub fn merge(&mut self, other: &Extremes) {
        if other.min.value < self.min.value {
            self.min = other.min;
        }
        if other.max.value > self.max.value {
            self.max = other.max;
        }
    }
}

/// Step widths of the stored rollup levels (level `i` has buckets of `ROLLUP_WIDTHS[i]` steps).
pub const ROLLUP_WIDTHS: [i64; 3] = [64, 1024, 16384];

/// The bucket width that fits `span` steps into `buckets` buckets.
pub fn bucket_width(span: i64, buckets: usize) -> i64 {
    let buckets = buckets.max(1) as i64;
    (span.saturating_add(buckets - 1) / buckets).max(1)
}

/// Which rollup level to read for output buckets of `width` steps: the coarsest whose
/// buckets are no wider than an output bucket; `None` means read raw points.
pub fn rollup_level(width: i64) -> Option<usize> {
    ROLLUP_WIDTHS.iter().rposition(|&w| w <= width)
}

/// Groups extremes (raw points or rollup buckets, in step order) into output buckets of
/// `width` steps starting at `first_step`, and returns each bucket's min and max points in
/// step order (one point when they coincide).
pub fn sample(
    items: impl IntoIterator<Item = Extremes>,
    first_step: i64,
    width: i64,
) -> Vec<Point> {
    sample_along(Axis::Step, items, first_step, width)
}

/// What the buckets cut: steps, or (for histories logged without steps) time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Step,
    Time,
}

impl Axis {
    pub fn of(self, p: &Point) -> i64 {
        match self {
            Axis::Step => p.step,
            Axis::Time => p.timestamp,
        }
    }
}

/// [`sample`] along either axis; `items` come in that axis' order.
pub fn sample_along(
    axis: Axis,
    items: impl IntoIterator<Item = Extremes>,
    first: i64,
    width: i64,
) -> Vec<Point> {
    let mut out = Vec::new();
    let mut current: Option<(i64, Extremes)> = None;
    let flush = |out: &mut Vec<Point>, e: Extremes| {
        let (a, b) = if axis.of(&e.min) <= axis.of(&e.max) {
            (e.min, e.max)
        } else {
            (e.max, e.min)
        };
        out.push(a);
        if a != b {
            out.push(b);
        }
    };
    for item in items {
        let bucket = axis
            .of(&item.min)
            .min(axis.of(&item.max))
            .saturating_sub(first)
            .div_euclid(width);
        match &mut current {
            Some((b, e)) if *b == bucket => e.merge(&item),
            _ => {
                if let Some((_, e)) = current.take() {
                    flush(&mut out, e);
                }
                current = Some((bucket, item));
            }
        }
    }
    if let Some((_, e)) = current {
        flush(&mut out, e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(step: i64, value: f64) -> Point {
        Point {
            step,
            timestamp: step,
            value,
        }
    }

    #[test]
    fn keeps_every_extreme() {
        // 10,000 points of a sine with one spike and one dip.
        let mut points: Vec<Point> = (0..10_000).map(|i| p(i, (i as f64 / 50.0).sin())).collect();
        points[4321].value = 100.0;
        points[7777].value = -100.0;
        let width = bucket_width(10_000, 250);
        let out = sample(points.iter().map(|&q| Extremes::of(q)), 0, width);
        assert!(out.len() <= 500, "{}", out.len());
        assert!(out.contains(&p(4321, 100.0)));
        assert!(out.contains(&p(7777, -100.0)));
        assert!(out.windows(2).all(|w| w[0].step < w[1].step));
    }

    #[test]
    fn histories_without_steps_are_cut_along_time() {
        let points: Vec<Point> = (0..5_000)
            .map(|i| Point {
                step: 0,
                timestamp: 1_000 + i,
                value: if i == 2_500 { 9.0 } else { 0.0 },
            })
            .collect();
        let width = bucket_width(5_000, 100);
        let out = sample_along(
            Axis::Time,
            points.iter().map(|&q| Extremes::of(q)),
            1_000,
            width,
        );
        assert!(out.len() <= 200 && out.len() >= 100, "{}", out.len());
        assert!(out.iter().any(|p| p.value == 9.0 && p.timestamp == 3_500));
    }

    #[test]
    fn rollup_levels_match_widths() {
        assert_eq!(rollup_level(10), None);
        assert_eq!(rollup_level(64), Some(0));
        assert_eq!(rollup_level(20_000), Some(2));
        assert_eq!(bucket_width(10_000_000, 500), 20_000);
    }
}
