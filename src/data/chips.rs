//! Cutting large scenes into chips: [`chip_grid`] as xView's official chipping utility does (a
//! grid of full `size`×`size` windows `stride` apart, partial windows at the right and bottom
//! edges dropped; DOTA's reader uses it), [`cover_grid`] to every edge (the last window moved
//! inward; `scan`, `index build scene:` and the xView reader use it); a chip's labels are the
//! classes of the boxes that lie in it enough.

/// An axis-aligned box `(xmin, ymin, xmax, ymax)` in scene pixels, with its class.
pub type LabelledBox = ((f64, f64, f64, f64), String);

/// How scenes are cut.
#[derive(Debug, Clone, Copy)]
pub struct ChipOptions {
    pub size: u32,
    pub stride: u32,
    /// A box counts for a chip when at least this share of its area lies inside the chip.
    pub min_box_share: f64,
}

impl Default for ChipOptions {
    fn default() -> Self {
        Self {
            size: 300,
            stride: 300,
            min_box_share: 0.5,
        }
    }
}

/// The chips of a `width`×`height` scene: `(x, y, w, h)`.
pub fn chip_grid(width: u32, height: u32, o: &ChipOptions) -> Vec<(u32, u32, u32, u32)> {
    let mut out = Vec::new();
    if o.size == 0 || o.stride == 0 || width < o.size || height < o.size {
        return out;
    }
    let mut y = 0;
    while y + o.size <= height {
        let mut x = 0;
        while x + o.size <= width {
            out.push((x, y, o.size, o.size));
            x += o.stride;
        }
        y += o.stride;
    }
    out
}

/// Windows of `size` (at most the image's side) every `stride` pixels that cover the whole
/// `width`×`height` image: where the last window would run past an edge it is moved inward to
/// end at the edge, so no strip is dropped (unlike [`chip_grid`], which follows xView's
/// chipper). `(x, y, w, h)`, rows top to bottom.
pub fn cover_grid(width: u32, height: u32, size: u32, stride: u32) -> Vec<(u32, u32, u32, u32)> {
    fn starts(len: u32, size: u32, stride: u32) -> Vec<u32> {
        if len == 0 || size == 0 || stride == 0 {
            return vec![];
        }
        let size = size.min(len);
        let mut out: Vec<u32> = (0..)
            .map(|i| i * stride)
            .take_while(|&s| s + size < len)
            .collect();
        out.push(len - size);
        out.dedup();
        out
    }
    let (w, h) = (size.min(width), size.min(height));
    let xs = starts(width, size, stride);
    starts(height, size, stride)
        .into_iter()
        .flat_map(|y| xs.iter().map(move |&x| (x, y, w, h)))
        .collect()
}

/// Share of the axis-aligned box `(xmin, ymin, xmax, ymax)` inside the chip.
pub fn share_inside(b: (f64, f64, f64, f64), chip: (u32, u32, u32, u32)) -> f64 {
    let (cx0, cy0) = (chip.0 as f64, chip.1 as f64);
    let (cx1, cy1) = (cx0 + chip.2 as f64, cy0 + chip.3 as f64);
    let w = (b.2.min(cx1) - b.0.max(cx0)).max(0.0);
    let h = (b.3.min(cy1) - b.1.max(cy0)).max(0.0);
    let area = (b.2 - b.0) * (b.3 - b.1);
    if area <= 0.0 {
        // A degenerate box counts where its point lies.
        let inside = b.0 >= cx0 && b.0 < cx1 && b.1 >= cy0 && b.1 < cy1;
        return if inside { 1.0 } else { 0.0 };
    }
    w * h / area
}

/// Labels of each chip from `(box, class)` pairs.
pub fn chip_labels(
    chips: &[(u32, u32, u32, u32)],
    boxes: &[LabelledBox],
    o: &ChipOptions,
) -> Vec<Vec<String>> {
    chips
        .iter()
        .map(|&c| {
            let mut labels: Vec<String> = boxes
                .iter()
                .filter(|(b, _)| share_inside(*b, c) >= o.min_box_share)
                .map(|(_, class)| class.clone())
                .collect();
            labels.sort();
            labels.dedup();
            labels
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cover_grids_reach_every_edge() {
        assert_eq!(
            cover_grid(250, 100, 100, 100),
            vec![(0, 0, 100, 100), (100, 0, 100, 100), (150, 0, 100, 100)]
        );
        let g = cover_grid(300, 300, 224, 112);
        let xs: Vec<u32> = g.iter().filter(|c| c.1 == 0).map(|c| c.0).collect();
        assert_eq!(xs, vec![0, 76]);
        // An image smaller than the window is one window of the whole image.
        assert_eq!(cover_grid(50, 40, 224, 112), vec![(0, 0, 50, 40)]);
        assert_eq!(cover_grid(224, 224, 224, 112), vec![(0, 0, 224, 224)]);
    }

    #[test]
    fn grid_drops_partial_chips() {
        let o = ChipOptions::default();
        assert_eq!(
            chip_grid(700, 300, &o),
            vec![(0, 0, 300, 300), (300, 0, 300, 300)]
        );
        assert!(chip_grid(299, 1000, &o).is_empty());
        let overlap = ChipOptions {
            size: 200,
            stride: 100,
            min_box_share: 0.5,
        };
        assert_eq!(chip_grid(400, 200, &overlap).len(), 3);
    }

    #[test]
    fn boxes_count_by_share_inside() {
        let o = ChipOptions::default();
        let chips = chip_grid(600, 300, &o);
        let boxes = vec![
            ((290.0, 10.0, 330.0, 20.0), "car".to_string()),
            ((10.0, 10.0, 20.0, 20.0), "ship".to_string()),
        ];
        // The car has 10/40 inside chip 0 and 30/40 inside chip 1.
        assert_eq!(
            chip_labels(&chips, &boxes, &o),
            vec![vec!["ship".to_string()], vec!["car".to_string()]]
        );
    }
}
