//! Layers with weights: 2-D convolution (any groups), dense and matmul.

use qcc_dialects::Tensor;

/// Geometry of a 2-D convolution.
pub struct ConvGeometry {
    /// Vertical, horizontal step.
    pub strides: [usize; 2],
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
    /// Vertical, horizontal dilation.
    pub dilations: [usize; 2],
    /// Channel groups.
    pub groups: usize,
}

/// NCHW convolution with OIHW weights and an optional bias.
pub fn conv2d(
    x: &[f32],
    xs: &[usize],
    w: &[f32],
    ws: &[usize],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
) -> Tensor {
    let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (o, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let og = o / g.groups;
    let oh = (h + g.pads[0] + g.pads[2] - g.dilations[0] * (kh - 1) - 1) / g.strides[0] + 1;
    let ow = (wd + g.pads[1] + g.pads[3] - g.dilations[1] * (kw - 1) - 1) / g.strides[1] + 1;
    let mut out = vec![0f32; n * o * oh * ow];
    for b in 0..n {
        for oc in 0..o {
            let grp = oc / og;
            let plane = &mut out[(b * o + oc) * oh * ow..(b * o + oc + 1) * oh * ow];
            plane.fill(bias.map_or(0.0, |bv| bv[oc]));
            for icg in 0..cg {
                let ic = grp * cg + icg;
                let xin = &x[(b * c + ic) * h * wd..(b * c + ic + 1) * h * wd];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let wv = w[((oc * cg + icg) * kh + ky) * kw + kx];
                        if wv == 0.0 {
                            continue;
                        }
                        let dy = (ky * g.dilations[0]) as isize - g.pads[0] as isize;
                        let dx = (kx * g.dilations[1]) as isize - g.pads[1] as isize;
                        for y in 0..oh {
                            let iy = (y * g.strides[0]) as isize + dy;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            let row = &xin[iy as usize * wd..(iy as usize + 1) * wd];
                            let orow = &mut plane[y * ow..(y + 1) * ow];
                            for (xo, ov) in orow.iter_mut().enumerate() {
                                let ix = (xo * g.strides[1]) as isize + dx;
                                if ix >= 0 && ix < wd as isize {
                                    *ov += wv * row[ix as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Tensor::from_f32(vec![n, o, oh, ow], out)
}

/// `x [N, K]` times `w [M, K]` transposed, plus an optional bias `[M]`.
pub fn dense(x: &[f32], n: usize, k: usize, w: &[f32], m: usize, bias: Option<&[f32]>) -> Tensor {
    let mut out = vec![0f32; n * m];
    for i in 0..n {
        let row = &x[i * k..(i + 1) * k];
        for j in 0..m {
            let wr = &w[j * k..(j + 1) * k];
            let dot: f32 = row.iter().zip(wr).map(|(a, b)| a * b).sum();
            out[i * m + j] = dot + bias.map_or(0.0, |b| b[j]);
        }
    }
    Tensor::from_f32(vec![n, m], out)
}

/// `a [..., K]` times `b [K, N]`.
pub fn matmul(a: &[f32], a_shape: &[usize], b: &[f32], b_shape: &[usize]) -> Tensor {
    let k = *a_shape.last().expect("rank >= 2");
    let rows = a.len() / k;
    let nn = b_shape[1];
    let mut out = vec![0f32; rows * nn];
    for r in 0..rows {
        for kk in 0..k {
            let av = a[r * k + kk];
            for j in 0..nn {
                out[r * nn + j] += av * b[kk * nn + j];
            }
        }
    }
    let mut shape = a_shape.to_vec();
    *shape.last_mut().expect("rank >= 2") = nn;
    Tensor::from_f32(shape, out)
}
