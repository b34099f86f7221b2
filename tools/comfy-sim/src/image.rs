//! Float RGB images as ComfyUI's IMAGE tensors hold them (values in 0..1), and the pixel work of
//! the weight-free nodes plus the simulated text-to-image decoder.

use sha2::{Digest, Sha256};

/// One RGB image, row-major, 3 floats per pixel in `0.0..=1.0`.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` samples.
    pub pixels: Vec<f32>,
}

impl Image {
    /// A solid image, with the colour split like EmptyImage (`((color >> 16) & 0xFF) / 0xFF`).
    pub fn solid(width: u32, height: u32, color: u32) -> Self {
        let channel = |shift: u32| ((color >> shift) & 0xFF) as f32 / 255.0;
        let rgb = [channel(16), channel(8), channel(0)];
        let count = width as usize * height as usize;
        let mut pixels = Vec::with_capacity(count * 3);
        for _ in 0..count {
            pixels.extend_from_slice(&rgb);
        }
        Self {
            width,
            height,
            pixels,
        }
    }

    /// From 8-bit RGB bytes (`np.array(img).astype(np.float32) / 255.0`).
    pub fn from_rgb8(width: u32, height: u32, bytes: &[u8]) -> Self {
        Self {
            width,
            height,
            pixels: bytes.iter().map(|&byte| f32::from(byte) / 255.0).collect(),
        }
    }

    /// To 8-bit RGB the way SaveImage does: `np.clip(255. * i, 0, 255).astype(np.uint8)`,
    /// which truncates.
    pub fn to_rgb8(&self) -> Vec<u8> {
        self.pixels
            .iter()
            // Truncation after clamping is exactly numpy's astype(uint8) here.
            .map(|&sample| {
                let scaled = (255.0f32 * sample).clamp(0.0, 255.0);
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let byte = scaled as u8;
                byte
            })
            .collect()
    }

    /// ImageInvert: `1.0 - image` in float32.
    pub fn invert(&self) -> Self {
        Self {
            width: self.width,
            height: self.height,
            pixels: self.pixels.iter().map(|&sample| 1.0f32 - sample).collect(),
        }
    }

    /// ImageBlur: a separable Gaussian with ComfyUI's kernel (coordinates in `-1..1`,
    /// `exp(-d²/2σ²)`), reflect padding.
    pub fn blur(&self, radius: u32, sigma: f32) -> Self {
        if radius == 0 || self.width == 0 || self.height == 0 {
            return self.clone();
        }
        let size = radius as usize * 2 + 1;
        let mut kernel: Vec<f32> = (0..size)
            .map(|index| {
                let position = -1.0 + 2.0 * index as f32 / (size - 1) as f32;
                (-(position * position) / (2.0 * sigma * sigma)).exp()
            })
            .collect();
        let total: f32 = kernel.iter().sum();
        kernel.iter_mut().for_each(|weight| *weight /= total);
        let horizontal = self.convolve(&kernel, radius as i64, true);
        horizontal.convolve(&kernel, radius as i64, false)
    }

    fn convolve(&self, kernel: &[f32], radius: i64, horizontal: bool) -> Self {
        let (width, height) = (self.width as i64, self.height as i64);
        let reflect = |position: i64, length: i64| -> usize {
            if length == 1 {
                return 0;
            }
            let period = 2 * (length - 1);
            let mut folded = position.rem_euclid(period);
            if folded >= length {
                folded = period - folded;
            }
            folded as usize
        };
        let mut pixels = vec![0.0f32; self.pixels.len()];
        for y in 0..height {
            for x in 0..width {
                let mut sum = [0.0f32; 3];
                for (offset, weight) in kernel.iter().enumerate() {
                    let delta = offset as i64 - radius;
                    let (source_x, source_y) = if horizontal {
                        (reflect(x + delta, width), y as usize)
                    } else {
                        (x as usize, reflect(y + delta, height))
                    };
                    let base = (source_y * self.width as usize + source_x) * 3;
                    for (slot, sample) in sum.iter_mut().zip(&self.pixels[base..base + 3]) {
                        *slot += sample * weight;
                    }
                }
                let base = (y as usize * self.width as usize + x as usize) * 3;
                pixels[base..base + 3].copy_from_slice(&sum);
            }
        }
        Self {
            width: self.width,
            height: self.height,
            pixels,
        }
    }

    /// ImageScale: resize to `width`×`height` (0 keeps the aspect ratio), optional centre crop.
    /// `nearest-exact` samples nearest; the other methods use bilinear filtering.
    pub fn scale(&self, method: &str, width: u32, height: u32, center_crop: bool) -> Self {
        if width == 0 && height == 0 {
            return self.clone();
        }
        let (source_width, source_height) = (self.width.max(1) as f64, self.height.max(1) as f64);
        let width = if width == 0 {
            ((source_width * f64::from(height) / source_height).round() as u32).max(1)
        } else {
            width
        };
        let height = if height == 0 {
            ((source_height * f64::from(width) / source_width).round() as u32).max(1)
        } else {
            height
        };
        let (mut crop_x, mut crop_y, mut crop_width, mut crop_height) =
            (0.0, 0.0, source_width, source_height);
        if center_crop {
            let target_aspect = f64::from(width) / f64::from(height);
            if source_width / source_height > target_aspect {
                crop_width = source_height * target_aspect;
                crop_x = (source_width - crop_width) / 2.0;
            } else {
                crop_height = source_width / target_aspect;
                crop_y = (source_height - crop_height) / 2.0;
            }
        }
        let nearest = method == "nearest-exact";
        let mut pixels = Vec::with_capacity(width as usize * height as usize * 3);
        for y in 0..height {
            let source_y = crop_y + (f64::from(y) + 0.5) * crop_height / f64::from(height) - 0.5;
            for x in 0..width {
                let source_x = crop_x + (f64::from(x) + 0.5) * crop_width / f64::from(width) - 0.5;
                let sample = if nearest {
                    self.pixel(source_x.round() as i64, source_y.round() as i64)
                } else {
                    self.bilinear(source_x, source_y)
                };
                pixels.extend_from_slice(&sample);
            }
        }
        Self {
            width,
            height,
            pixels,
        }
    }

    fn pixel(&self, x: i64, y: i64) -> [f32; 3] {
        let x = x.clamp(0, i64::from(self.width) - 1) as usize;
        let y = y.clamp(0, i64::from(self.height) - 1) as usize;
        let base = (y * self.width as usize + x) * 3;
        [
            self.pixels[base],
            self.pixels[base + 1],
            self.pixels[base + 2],
        ]
    }

    fn bilinear(&self, x: f64, y: f64) -> [f32; 3] {
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = ((x - x0) as f32, (y - y0) as f32);
        let (x0, y0) = (x0 as i64, y0 as i64);
        let corners = [
            self.pixel(x0, y0),
            self.pixel(x0 + 1, y0),
            self.pixel(x0, y0 + 1),
            self.pixel(x0 + 1, y0 + 1),
        ];
        let mut out = [0.0f32; 3];
        for (channel, slot) in out.iter_mut().enumerate() {
            let top = corners[0][channel] * (1.0 - fx) + corners[1][channel] * fx;
            let bottom = corners[2][channel] * (1.0 - fx) + corners[3][channel] * fx;
            *slot = top * (1.0 - fy) + bottom * fy;
        }
        out
    }
}

/// SplitMix64: a tiny deterministic generator, so images never depend on a library's RNG.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Hashes the parts of a generation into a 64-bit seed (SHA-256, stable across platforms).
pub fn generation_seed(parts: &[&str]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(bytes)
}

/// The simulated "decoded latent": a smooth, deterministic colour field from `seed`.
/// Same seed and size give the same pixels; different seeds give visibly different images.
pub fn synthesize(width: u32, height: u32, seed: u64) -> Image {
    const GRID: usize = 6;
    let mut rng = SplitMix64(seed);
    let lattice: Vec<[f32; 3]> = (0..(GRID + 1) * (GRID + 1))
        .map(|_| [rng.unit(), rng.unit(), rng.unit()])
        .collect();
    let stripes = 2.0 + rng.unit() * 10.0;
    let phase = rng.unit() * std::f32::consts::TAU;
    let smooth = |t: f32| t * t * (3.0 - 2.0 * t);
    let mut pixels = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height {
        let v = y as f32 / height.max(1) as f32 * GRID as f32;
        let (cell_y, fy) = ((v as usize).min(GRID - 1), 0.0);
        let fy = smooth((v - cell_y as f32).clamp(0.0, 1.0) + fy);
        for x in 0..width {
            let u = x as f32 / width.max(1) as f32 * GRID as f32;
            let cell_x = (u as usize).min(GRID - 1);
            let fx = smooth((u - cell_x as f32).clamp(0.0, 1.0));
            let at = |dx: usize, dy: usize| lattice[(cell_y + dy) * (GRID + 1) + cell_x + dx];
            let wave = 0.08 * ((u + v) * stripes + phase).sin();
            for channel in 0..3 {
                let top = at(0, 0)[channel] * (1.0 - fx) + at(1, 0)[channel] * fx;
                let bottom = at(0, 1)[channel] * (1.0 - fx) + at(1, 1)[channel] * fx;
                pixels.push((top * (1.0 - fy) + bottom * fy + wave).clamp(0.0, 1.0));
            }
        }
    }
    Image {
        width,
        height,
        pixels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invert_matches_the_recorded_float_rounding() {
        // The recording: (200, 30, 10) inverted and saved is (54, 225, 245).
        let image = Image::from_rgb8(1, 1, &[200, 30, 10]);
        assert_eq!(image.invert().to_rgb8(), vec![54, 225, 245]);
    }

    #[test]
    fn solid_color_channels() {
        let image = Image::solid(2, 1, 0xFF8000);
        assert_eq!(image.to_rgb8(), vec![255, 128, 0, 255, 128, 0]);
    }

    #[test]
    fn blur_keeps_solid_images_and_size() {
        let image = Image::solid(9, 5, 0x336699);
        let blurred = image.blur(3, 1.0);
        assert_eq!((blurred.width, blurred.height), (9, 5));
        assert_eq!(blurred.to_rgb8()[..3], image.to_rgb8()[..3]);
    }

    #[test]
    fn scale_keeps_aspect_when_one_side_is_zero() {
        let image = Image::solid(64, 32, 0);
        let scaled = image.scale("bilinear", 32, 0, false);
        assert_eq!((scaled.width, scaled.height), (32, 16));
    }

    #[test]
    fn synthesis_is_deterministic() {
        assert_eq!(synthesize(16, 8, 7), synthesize(16, 8, 7));
        assert_ne!(synthesize(16, 8, 7), synthesize(16, 8, 8));
    }
}
