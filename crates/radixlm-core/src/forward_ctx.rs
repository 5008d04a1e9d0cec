//! What one forward pass needs to know about the sequences in it, and nothing about requests.
//! Tokens of all sequences are packed into one row-major batch, sequence by sequence:
//!
//! ```text
//!   tokens   | s0: 5 prompt tokens | s1: 1 decode token | s2: chunk of 3 |
//!   start    | 0                   | 17                 | 8              |   (tokens already in the KV)
//! ```
//! Token i of sequence s has position `start + i` and attends to positions `0..=start + i`.

pub struct SeqSlice<'a> {
    /// Tokens of this sequence in the batch.
    pub q_len: usize,
    /// Positions already in the KV cache before this pass.
    pub start: usize,
    /// Page ids covering positions `0..start + q_len`.
    /// Borrowed from the request: no copy per pass.
    pub page_table: &'a [u32],
}

pub struct ForwardCtx<'a> {
    pub seqs: Vec<SeqSlice<'a>>,
    pub page_size: usize,
    /// Packed row indices whose logits are wanted (typically each sequence's last token).
    pub logit_rows: Vec<usize>,
}

impl ForwardCtx<'_> {
    pub fn num_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.q_len).sum()
    }

    /// Per packed token: (sequence index, position).
    pub fn token_positions(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(self.num_tokens());
        for (i, s) in self.seqs.iter().enumerate() {
            out.extend((0..s.q_len).map(|j| (i, s.start + j)));
        }
        out
    }
}
