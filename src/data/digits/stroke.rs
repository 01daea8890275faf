//! Step 6: stroke width, measured and normalised by dilating or eroding with a disc (through a
//! Euclidean distance transform).

/// Stroke width / box longer side: MNIST's median, and the range left alone (5th–95th percentile).
const STROKE_RATIO: f32 = 0.125;
const STROKE_LOW: f32 = 0.085;
const STROKE_HIGH: f32 = 0.19;

/// Bounding box `[x0, y0, x1, y1)` of the true pixels, `None` if there are none.
pub(super) fn bbox(mask: &[bool], w: usize, h: usize) -> Option<[usize; 4]> {
    let mut b = [usize::MAX, usize::MAX, 0, 0];
    for y in 0..h {
        for x in 0..w {
            if mask[y * w + x] {
                b = [b[0].min(x), b[1].min(y), b[2].max(x + 1), b[3].max(y + 1)];
            }
        }
    }
    (b[0] != usize::MAX).then_some(b)
}

/// Mean stroke width of a mask, `8·area / (π·edges)`, where `edges` counts the sides of true
/// pixels that face a false pixel (or the plane's edge). A band of width `s` and length `ℓ` has
/// area `s·ℓ` and perimeter `2ℓ`; counted on the grid, a perimeter at a random angle is `4/π` times
/// longer on average (Crofton), hence the `π/4`.
pub(super) fn stroke_width(mask: &[bool], w: usize, h: usize) -> f32 {
    let at = |x: isize, y: isize| {
        x >= 0
            && y >= 0
            && (x as usize) < w
            && (y as usize) < h
            && mask[y as usize * w + x as usize]
    };
    let (mut area, mut edges) = (0usize, 0usize);
    for y in 0..h as isize {
        for x in 0..w as isize {
            if at(x, y) {
                area += 1;
                edges += [(1, 0), (-1, 0), (0, 1), (0, -1)]
                    .iter()
                    .filter(|(dx, dy)| !at(x + dx, y + dy))
                    .count();
            }
        }
    }
    if edges == 0 {
        0.0
    } else {
        8.0 * area as f32 / (std::f32::consts::PI * edges as f32)
    }
}

/// Squared Euclidean distance from every pixel to the nearest `true` pixel of `feature`
/// (`f32::INFINITY` if there is none), by Felzenszwalb and Huttenlocher's lower envelope of
/// parabolas, one pass along rows and one along columns.
fn distance_sq(feature: &[bool], w: usize, h: usize) -> Vec<f32> {
    let mut d: Vec<f32> = feature
        .iter()
        .map(|&f| if f { 0.0 } else { f32::INFINITY })
        .collect();
    let mut line = Vec::new();
    for y in 0..h {
        line.clear();
        line.extend_from_slice(&d[y * w..(y + 1) * w]);
        let out = envelope(&line);
        d[y * w..(y + 1) * w].copy_from_slice(&out);
    }
    for x in 0..w {
        line.clear();
        line.extend((0..h).map(|y| d[y * w + x]));
        for (y, v) in envelope(&line).into_iter().enumerate() {
            d[y * w + x] = v;
        }
    }
    d
}

/// One-dimensional squared distance transform: `out[q] = min_p (q − p)² + f[p]`.
fn envelope(f: &[f32]) -> Vec<f32> {
    let n = f.len();
    let finite: Vec<usize> = (0..n).filter(|&p| f[p].is_finite()).collect();
    if finite.is_empty() {
        return vec![f32::INFINITY; n];
    }
    // v: parabola vertices in the envelope; z: where each takes over from the previous one.
    let mut v: Vec<usize> = Vec::with_capacity(finite.len());
    let mut z: Vec<f32> = Vec::with_capacity(finite.len() + 1);
    let cross = |p: usize, q: usize| {
        ((f[q] + (q * q) as f32) - (f[p] + (p * p) as f32)) / (2.0 * (q as f32 - p as f32))
    };
    for &q in &finite {
        while let Some(&p) = v.last() {
            let s = cross(p, q);
            if v.len() > 1 && s <= z[z.len() - 1] {
                v.pop();
                z.pop();
            } else {
                z.push(s);
                break;
            }
        }
        if v.is_empty() {
            z.clear();
            z.push(f32::NEG_INFINITY);
        }
        v.push(q);
    }
    z.push(f32::INFINITY);
    // Now z[k] is where parabola v[k] starts (z[0] = −∞) and z[k + 1] where it ends.
    let mut k = 0;
    (0..n)
        .map(|q| {
            while z[k + 1] < q as f32 {
                k += 1;
            }
            let d = q as f32 - v[k] as f32;
            d * d + f[v[k]]
        })
        .collect()
}

/// Dilation by a disc of radius `r`: pixels within `r` of the mask.
pub(super) fn dilate(mask: &[bool], w: usize, h: usize, r: f32) -> Vec<bool> {
    distance_sq(mask, w, h)
        .into_iter()
        .map(|d| d <= r * r)
        .collect()
}

/// Erosion by a disc of radius `r`: mask pixels further than `r` from the background (beyond the
/// plane's edge counts as background, so callers pad the mask by a pixel).
pub(super) fn erode(mask: &[bool], w: usize, h: usize, r: f32) -> Vec<bool> {
    let background: Vec<bool> = mask.iter().map(|&m| !m).collect();
    distance_sq(&background, w, h)
        .into_iter()
        .map(|d| d > r * r)
        .collect()
}

/// The change of stroke width, as a disc radius (positive: dilate, negative: erode), that brings
/// width / box side to [`STROKE_RATIO`] when it lies outside MNIST's usual range; both the width
/// and the box side grow by `2r`, hence `r = (ρ·L − s) / (2·(1 − ρ))`.
pub(super) fn stroke_radius(width: f32, long: f32) -> f32 {
    let ratio = width / long;
    if (STROKE_LOW..=STROKE_HIGH).contains(&ratio) || long <= 0.0 {
        0.0
    } else {
        (STROKE_RATIO * long - width) / (2.0 * (1.0 - STROKE_RATIO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute-force squared distance, the reference for the two-pass transform.
    fn distance_sq_naive(feature: &[bool], w: usize, h: usize) -> Vec<f32> {
        (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                (0..w * h)
                    .filter(|&j| feature[j])
                    .map(|j| {
                        let (u, v) = ((j % w) as f32, (j / w) as f32);
                        (x - u) * (x - u) + (y - v) * (y - v)
                    })
                    .fold(f32::INFINITY, f32::min)
            })
            .collect()
    }

    #[test]
    fn distance_transform_matches_brute_force_on_awkward_sizes() {
        let mut seed = 12345u64;
        for (w, h) in [(1, 1), (1, 7), (9, 1), (5, 3), (13, 11), (17, 4)] {
            for density in [0u64, 3, 30, 90] {
                let feature: Vec<bool> = (0..w * h)
                    .map(|_| {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (seed >> 33) % 100 < density
                    })
                    .collect();
                let fast = distance_sq(&feature, w, h);
                let slow = distance_sq_naive(&feature, w, h);
                assert_eq!(fast, slow, "{w}×{h}, density {density}%");
            }
        }
    }

    #[test]
    fn stroke_width_of_a_bar_and_a_disc() {
        // A 6×200 bar: 8·1200 / (π·412) = 7.4 (a straight axis-aligned band reads 4/π wide).
        let (w, h) = (20, 220);
        let mask: Vec<bool> = (0..w * h)
            .map(|i| (7..13).contains(&(i % w)) && (10..210).contains(&(i / w)))
            .collect();
        let s = stroke_width(&mask, w, h);
        assert!(
            (s - 8.0 * 1200.0 / (std::f32::consts::PI * 412.0)).abs() < 1e-3,
            "{s}"
        );
        // Dilating by 2 widens the bar to 10 px.
        let wider = dilate(&mask, w, h, 2.0);
        let row: usize = (0..w).filter(|&x| wider[100 * w + x]).count();
        assert_eq!(row, 10);
        let thinner = erode(&mask, w, h, 1.0);
        assert_eq!((0..w).filter(|&x| thinner[100 * w + x]).count(), 4);
    }
}
