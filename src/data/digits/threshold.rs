//! Step 4: the thresholds (Otsu's, medians and percentiles), hysteresis, connected components
//! and the specks dropped from the mask.

use super::ink::MIN_DIGIT;

/// The `q`-quantile (0..=1) of `values`, reordering them; 0 for an empty slice.
pub(super) fn percentile(values: &mut [f32], q: f32) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    let k = ((values.len() - 1) as f32 * q).round() as usize;
    *values.select_nth_unstable_by(k, f32::total_cmp).1
}

pub(super) fn median(values: &mut [f32]) -> f32 {
    percentile(values, 0.5)
}

/// Otsu's threshold over strengths clipped to 0..=255 in 256 bins: the level maximising the
/// between-class variance `w0·w1·(μ0 − μ1)²`. Values above the returned level are the upper class.
pub(super) fn otsu(values: &[f32]) -> f32 {
    let mut hist = [0.0f64; 256];
    for &v in values {
        hist[v.clamp(0.0, 255.0) as usize] += 1.0;
    }
    let total: f64 = hist.iter().sum();
    let sum_all: f64 = hist.iter().enumerate().map(|(i, n)| i as f64 * n).sum();
    let (mut w0, mut sum0, mut best, mut level) = (0.0, 0.0, -1.0, 0usize);
    for (t, &n) in hist.iter().enumerate() {
        w0 += n;
        sum0 += t as f64 * n;
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let (m0, m1) = (sum0 / w0, (sum_all - sum0) / w1);
        let between = w0 * w1 * (m0 - m1) * (m0 - m1);
        if between > best {
            best = between;
            level = t;
        }
    }
    level as f32 + 1.0
}

/// The 8-neighbours of `i` in a `w×h` plane.
fn neighbours(i: usize, w: usize, h: usize) -> impl Iterator<Item = usize> {
    let (x, y) = ((i % w) as isize, (i / w) as isize);
    (-1..=1isize)
        .flat_map(move |dy| (-1..=1isize).map(move |dx| (x + dx, y + dy)))
        .filter(move |&(nx, ny)| {
            (nx, ny) != (x, y) && nx >= 0 && ny >= 0 && nx < w as isize && ny < h as isize
        })
        .map(move |(nx, ny)| ny as usize * w + nx as usize)
}

/// Pixels at or above `strong`, grown through 8-connected pixels at or above `weak`.
pub(super) fn hysteresis(
    strength: &[f32],
    w: usize,
    h: usize,
    strong: f32,
    weak: f32,
) -> Vec<bool> {
    let mut mask = vec![false; w * h];
    let mut stack: Vec<usize> = Vec::new();
    for (i, &s) in strength.iter().enumerate() {
        if s >= strong {
            mask[i] = true;
            stack.push(i);
        }
    }
    while let Some(i) = stack.pop() {
        for j in neighbours(i, w, h) {
            if !mask[j] && strength[j] >= weak {
                mask[j] = true;
                stack.push(j);
            }
        }
    }
    mask
}

/// An 8-connected component: its pixel count and bounding box `[x0, y0, x1, y1)`.
#[derive(Clone, Copy, Debug)]
struct Component {
    pub(super) area: usize,
    pub(super) bbox: [usize; 4],
}

/// Labels the 8-connected components of a mask (label `u32::MAX` = background).
fn components(mask: &[bool], w: usize, h: usize) -> (Vec<u32>, Vec<Component>) {
    let mut labels = vec![u32::MAX; w * h];
    let mut found = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if !mask[start] || labels[start] != u32::MAX {
            continue;
        }
        let label = found.len() as u32;
        let mut c = Component {
            area: 0,
            bbox: [usize::MAX, usize::MAX, 0, 0],
        };
        labels[start] = label;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            c.area += 1;
            c.bbox = [
                c.bbox[0].min(x),
                c.bbox[1].min(y),
                c.bbox[2].max(x + 1),
                c.bbox[3].max(y + 1),
            ];
            for j in neighbours(i, w, h) {
                if mask[j] && labels[j] == u32::MAX {
                    labels[j] = label;
                    stack.push(j);
                }
            }
        }
        found.push(c);
    }
    (labels, found)
}

/// Drops specks: components small next to the largest one, the more so the further they lie from
/// it (gap between boxes, in units of the largest box's longer side `L`): within 0.1·L a piece of
/// 1 % of the largest area stays (a broken stroke), within 0.5·L one of 10 %, beyond that 40 %.
/// `None` when even the largest component is too small to be a digit.
pub(super) fn remove_specks(mask: &[bool], w: usize, h: usize) -> Option<Vec<bool>> {
    let (labels, comps) = components(mask, w, h);
    let main = *comps.iter().max_by_key(|c| c.area)?;
    let [mx0, my0, mx1, my1] = main.bbox;
    let long = (mx1 - mx0).max(my1 - my0);
    if long < MIN_DIGIT || main.area < 2 * MIN_DIGIT {
        return None;
    }
    let keep: Vec<bool> = comps
        .iter()
        .map(|c| {
            let [x0, y0, x1, y1] = c.bbox;
            let gap_x = x0.saturating_sub(mx1).max(mx0.saturating_sub(x1));
            let gap_y = y0.saturating_sub(my1).max(my0.saturating_sub(y1));
            let gap = gap_x.max(gap_y) as f32 / long as f32;
            let share = c.area as f32 / main.area as f32;
            if gap <= 0.1 {
                share >= 0.01 && c.area >= 2
            } else if gap <= 0.5 {
                share >= 0.1
            } else {
                share >= 0.4
            }
        })
        .collect();
    Some(
        labels
            .iter()
            .map(|&l| l != u32::MAX && keep[l as usize])
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::digits::stroke::bbox;

    #[test]
    fn otsu_splits_two_clusters() {
        let mut v = vec![10.0; 900];
        v.extend(vec![200.0; 100]);
        let t = otsu(&v);
        assert!(t > 10.0 && t <= 200.0, "{t}");
    }

    #[test]
    fn specks_far_from_the_digit_are_dropped() {
        let (w, h) = (100, 100);
        let mut mask = vec![false; w * h];
        for y in 20..60 {
            for x in 30..36 {
                mask[y * w + x] = true; // the digit: a 6×40 bar, area 240
            }
        }
        for (x, y) in [(90, 90), (91, 90), (90, 91), (91, 91)] {
            mask[y * w + x] = true; // a speck of 4 px, far away
        }
        mask[61 * w + 33] = true; // a 1-px piece next to the bar: too small (< 2 px) to keep
        mask[62 * w + 40] = true; // ...and another
        let kept = remove_specks(&mask, w, h).unwrap();
        assert_eq!(bbox(&kept, w, h), Some([30, 20, 36, 60]));
        assert!(remove_specks(&[false; 16], 4, 4).is_none());
    }
}
