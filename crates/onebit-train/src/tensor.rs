//! A small f32 tensor: a shape and a `Vec<f32>`, no broadcasting, no graph. Training keeps
//! every activation as a 2-D (rows × cols) tensor; the tape reuses their buffers step after
//! step, so resizing to the same shape never allocates.

/// A row-major f32 matrix (a vector is one row).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tensor {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Tensor {
    /// A zero-filled `rows × cols` tensor.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Tensor { rows, cols, data: vec![0.0; rows * cols] }
    }

    /// Wraps `data` as `rows × cols`; panics when the length disagrees (a programming error).
    pub fn from_vec(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), rows * cols, "Tensor::from_vec: length is not rows x cols");
        Tensor { rows, cols, data }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The values, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The values, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Reshapes to `rows × cols`, reusing the buffer; with `zero` every value becomes 0,
    /// otherwise the contents are unspecified (the caller overwrites them).
    pub fn reset(&mut self, rows: usize, cols: usize, zero: bool) {
        self.rows = rows;
        self.cols = cols;
        let n = rows * cols;
        if zero {
            self.data.clear();
            self.data.resize(n, 0.0);
        } else {
            self.data.resize(n, 0.0);
        }
    }
}
