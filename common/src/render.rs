//! Pictures of the built-in environments, for videos of rollouts
//! (`actor rollout --video`): [`crate::env::Env::render`] draws the current
//! state into a [`Frame`] of palette colours, as Gymnasium's `rgb_array`
//! render mode does, with the same geometry (CartPole's 600 × 400 scene,
//! Acrobot's two links, MountainCar's sin(3x) hill, Pendulum's rod) at a
//! smaller size.

/// The colours frames are drawn in; a GIF's palette, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Colour {
    Background = 0,
    Ink = 1,
    Cart = 2,
    Pole = 3,
    Axle = 4,
    Track = 5,
    Goal = 6,
    Agent = 7,
    Wall = 8,
}

/// RGB of each [`Colour`], by its number.
pub const PALETTE: [[u8; 3]; 9] = [
    [255, 255, 255], // background
    [30, 35, 48],    // ink: outlines, text
    [60, 60, 60],    // cart, links
    [202, 152, 101], // pole (Gymnasium's tan)
    [129, 132, 203], // axle, joints
    [120, 120, 120], // track, hill
    [16, 185, 129],  // goal, flag
    [37, 99, 235],   // agent
    [71, 85, 105],   // maze walls
];

/// A picture: `width × height` palette indices, row-major from the top left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Frame {
    pub fn new(width: usize, height: usize) -> Self {
        Frame {
            width,
            height,
            pixels: vec![Colour::Background as u8; width * height],
        }
    }

    fn set(&mut self, x: i64, y: i64, c: Colour) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            self.pixels[y as usize * self.width + x as usize] = c as u8;
        }
    }

    pub fn at(&self, x: usize, y: usize) -> u8 {
        self.pixels[y * self.width + x]
    }

    /// A filled axis-aligned rectangle, corners inclusive-exclusive.
    pub fn rect(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, c: Colour) {
        let (xa, xb) = (x0.min(x1).round() as i64, x0.max(x1).round() as i64);
        let (ya, yb) = (y0.min(y1).round() as i64, y0.max(y1).round() as i64);
        for y in ya..yb {
            for x in xa..xb {
                self.set(x, y, c);
            }
        }
    }

    /// A segment `width` pixels thick with round ends.
    pub fn line(&mut self, (ax, ay): (f64, f64), (bx, by): (f64, f64), width: f64, c: Colour) {
        let r = width / 2.0;
        let (x0, x1) = (
            (ax.min(bx) - r).floor() as i64,
            (ax.max(bx) + r).ceil() as i64,
        );
        let (y0, y1) = (
            (ay.min(by) - r).floor() as i64,
            (ay.max(by) + r).ceil() as i64,
        );
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = (dx * dx + dy * dy).max(1e-12);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let (px, py) = (x as f64 + 0.5 - ax, y as f64 + 0.5 - ay);
                let t = ((px * dx + py * dy) / len2).clamp(0.0, 1.0);
                let (ex, ey) = (px - t * dx, py - t * dy);
                if ex * ex + ey * ey <= r * r {
                    self.set(x, y, c);
                }
            }
        }
    }

    /// A filled disc.
    pub fn disc(&mut self, centre: (f64, f64), radius: f64, c: Colour) {
        self.line(centre, centre, 2.0 * radius, c);
    }

    /// `text` in a 5 × 7 pixel font scaled by `scale`, from its top left;
    /// characters the font lacks are drawn as a box.
    pub fn text(&mut self, x: f64, y: f64, text: &str, scale: f64, c: Colour) {
        for (i, ch) in text.chars().enumerate() {
            let rows = glyph(ch);
            let left = x + i as f64 * 6.0 * scale;
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        let (px, py) = (left + col as f64 * scale, y + r as f64 * scale);
                        self.rect(px, py, px + scale, py + scale, c);
                    }
                }
            }
        }
    }
}

/// Rows of a 5 × 7 glyph, bit 4 the leftmost column: digits, lowercase and
/// uppercase letters (drawn alike), space and a little punctuation.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_lowercase() {
        ' ' => [0; 7],
        'a' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'b' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'c' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'd' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'e' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'f' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'g' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'h' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'i' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'j' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'k' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'l' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'm' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'n' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'o' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'p' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'r' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        's' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        't' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'u' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'v' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'w' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'x' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '\'' => [0x04, 0x04, 0x08, 0, 0, 0, 0],
        '!' => [0x04, 0x04, 0x04, 0x04, 0x04, 0, 0x04],
        '?' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04],
        '/' => [0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        _ => [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_cover_the_pixels_they_should() {
        let mut f = Frame::new(20, 10);
        f.rect(2.0, 3.0, 5.0, 5.0, Colour::Cart);
        assert_eq!(
            f.pixels
                .iter()
                .filter(|&&p| p == Colour::Cart as u8)
                .count(),
            6
        );
        assert_eq!(f.at(2, 3), Colour::Cart as u8);
        assert_eq!(f.at(5, 3), Colour::Background as u8);
        // A horizontal line 2 px thick along y = 8 from x = 10 to 18.
        f.line((10.0, 8.0), (18.0, 8.0), 2.0, Colour::Pole);
        assert_eq!(f.at(14, 7), Colour::Pole as u8);
        assert_eq!(f.at(14, 8), Colour::Pole as u8);
        assert_eq!(f.at(14, 5), Colour::Background as u8);
        // Off-frame drawing is clipped, not a panic.
        f.disc((-5.0, -5.0), 3.0, Colour::Goal);
        f.line((0.0, 0.0), (100.0, 100.0), 1.0, Colour::Ink);
    }

    #[test]
    fn text_is_drawn_glyph_by_glyph() {
        let mut f = Frame::new(12, 7);
        f.text(0.0, 0.0, "l1", 1.0, Colour::Ink);
        // 'l': the left column all ink, the bottom row all ink.
        assert!((0..7).all(|y| f.at(0, y) == Colour::Ink as u8));
        assert!((0..5).all(|x| f.at(x, 6) == Colour::Ink as u8));
        // '1' starts 6 px later: its stem in column 6 + 2.
        assert!((1..6).all(|y| f.at(8, y) == Colour::Ink as u8));
    }
}
