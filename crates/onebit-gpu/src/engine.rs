//! The passes of a [`GpuSession`] and its [`Engine`] implementation: the same checks and
//! slot bookkeeping as the CPU session, so generation and the server drive either.

use crate::error::{Error, Result};
use crate::session::GpuSession;
use onebit_model::{Draw, Engine, SamplerConfig, DEVICE_TOP_K};

/// What a pass hands back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// Nothing (a prompt chunk before the last).
    Nothing,
    /// The logits of the wanted rows.
    Logits,
    /// The greedy token of each wanted row.
    Tokens,
    /// The token each wanted row's draw picks (draws already written).
    Sampled,
}

impl GpuSession {
    /// Runs rows `tokens[i]` at (`row_info[2i]` slot, `row_info[2i+1]` position) through the
    /// model; the head for the rows listed in `wanted`.
    pub(crate) fn pass(&mut self, tokens: &[u32], wanted: &[u32], want: Want) -> Result<()> {
        let (n, m) = (tokens.len() as u32, wanted.len() as u32);
        let vocab = self.cfg.vocab;
        let (ctx, b) = (&*self.ctx, &self.bufs);
        let q = &ctx.queue;
        q.write_buffer(&b.step, 0, bytemuck::cast_slice(&[n, 0, 0, 0]));
        q.write_buffer(&b.head_step, 0, bytemuck::cast_slice(&[m, 0, 0, 0]));
        q.write_buffer(&b.tokens, 0, bytemuck::cast_slice(tokens));
        q.write_buffer(&b.rows, 0, bytemuck::cast_slice(&self.row_info[..2 * tokens.len()]));
        if m > 0 {
            q.write_buffer(&b.gather, 0, bytemuck::cast_slice(wanted));
        }
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        let mut launches = 0;
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for op in &self.main_ops {
                op.record(&ctx.pipes, &mut pass, n);
                launches += 1;
            }
            if want != Want::Nothing && m > 0 {
                for op in &self.head_ops {
                    op.record(&ctx.pipes, &mut pass, m);
                    launches += 1;
                }
                if want == Want::Tokens {
                    self.argmax.record(&ctx.pipes, &mut pass, m);
                    launches += 1;
                }
                if want == Want::Sampled {
                    self.sample.record(&ctx.pipes, &mut pass, m);
                    launches += 1;
                }
            }
        }
        let read = match want {
            Want::Logits if m > 0 => Some((&b.logits, &b.read_logits, m as usize * vocab * 4)),
            Want::Tokens | Want::Sampled if m > 0 => Some((&b.ids, &b.read_ids, m as usize * 4)),
            _ => None,
        };
        if let Some((src, dst, bytes)) = read {
            enc.copy_buffer_to_buffer(src, 0, dst, 0, bytes as u64);
        }
        q.submit([enc.finish()]);
        self.counters.passes += 1;
        self.counters.dispatches += launches;
        self.counters.submissions += 1;
        match read {
            Some((_, dst, bytes)) => {
                let slice = dst.slice(..bytes as u64);
                let (tx, rx) = std::sync::mpsc::channel();
                slice.map_async(wgpu::MapMode::Read, move |r| {
                    let _ = tx.send(r);
                });
                self.wait()?;
                rx.recv()
                    .map_err(|_| Error::Device("the readback was dropped".into()))?
                    .map_err(|e| Error::Device(format!("reading results back: {e}")))?;
                {
                    let data = slice.get_mapped_range();
                    if want == Want::Logits {
                        self.logits[..bytes / 4].copy_from_slice(bytemuck::cast_slice(&data));
                    } else {
                        self.ids[..bytes / 4].copy_from_slice(bytemuck::cast_slice(&data));
                    }
                }
                dst.unmap();
            }
            None => self.wait()?,
        }
        Ok(())
    }

    fn wait(&self) -> Result<()> {
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Device(format!("waiting for the device: {e:?}")))?;
        match self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            Some(why) => Err(Error::Device(why)),
            None => Ok(()),
        }
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        let vocab = self.cfg.vocab;
        match tokens.iter().find(|&&t| t as usize >= vocab) {
            Some(&id) => Err(onebit_model::Error::Token { id, vocab }.into()),
            None => Ok(()),
        }
    }

    fn check_slot(&self, slot: usize) -> Result<()> {
        if slot >= self.pos.len() {
            return Err(onebit_model::Error::Slot { slot, slots: self.pos.len() }.into());
        }
        Ok(())
    }

    fn batch_error(op: &'static str, why: String) -> Error {
        onebit_model::Error::Batch { op, why }.into()
    }

    /// Places row `i` in slot `slots[i]` at that slot's next free position (a slot may take
    /// several rows, in order); checks slots, context room and batch size.
    fn place(&mut self, op: &'static str, tokens: &[u32], slots: &[usize]) -> Result<()> {
        self.check_tokens(tokens)?;
        if slots.len() != tokens.len() || tokens.len() > self.max_batch {
            let why = format!(
                "{} tokens for {} slots (at most {} rows)",
                tokens.len(),
                slots.len(),
                self.max_batch
            );
            return Err(Self::batch_error(op, why));
        }
        for (i, &s) in slots.iter().enumerate() {
            self.check_slot(s)?;
            let p = self.pos[s] + slots[..i].iter().filter(|&&o| o == s).count();
            if p >= self.max_ctx {
                return Err(
                    onebit_model::Error::ContextFull { needed: p + 1, max: self.max_ctx }.into()
                );
            }
            self.row_info[2 * i] = s as u32;
            self.row_info[2 * i + 1] = p as u32;
        }
        Ok(())
    }

    fn advance(&mut self, slots: &[usize]) {
        for &s in slots {
            self.pos[s] += 1;
        }
    }

    /// One decode step that samples greedily on the device: a token per slot goes in, the
    /// next token of each comes back (4 bytes per row instead of a row of logits).
    pub fn decode_greedy(&mut self, tokens: &[u32], slots: &[usize]) -> Result<&[u32]> {
        self.check_distinct("decode", slots)?;
        self.place("decode", tokens, slots)?;
        self.pass_rows(tokens, |_| true, Want::Tokens)?;
        self.advance(slots);
        Ok(&self.ids[..tokens.len()])
    }

    /// One decode step that samples on the device by `draws` (one per row; penalized tokens
    /// from `penalized`), as the host's `Sampler::pick` would: the next token of each slot
    /// comes back. The draws must be ones [`Engine::samples`] accepts.
    pub fn decode_by_draws(
        &mut self,
        tokens: &[u32],
        slots: &[usize],
        draws: &[Draw],
        penalized: &[u32],
    ) -> Result<&[u32]> {
        self.check_distinct("decode", slots)?;
        self.place("decode", tokens, slots)?;
        self.write_draws(tokens.len(), draws, penalized)?;
        self.pass_rows(tokens, |_| true, Want::Sampled)?;
        self.advance(slots);
        self.counters.sampled += tokens.len() as u64;
        Ok(&self.ids[..tokens.len()])
    }

    fn write_draws(&mut self, rows: usize, draws: &[Draw], penalized: &[u32]) -> Result<()> {
        let room = self.max_batch * self.max_ctx;
        if draws.len() != rows || penalized.len() > room {
            let why = format!(
                "{} draws for {rows} rows, {} penalized tokens (room for {room})",
                draws.len(),
                penalized.len()
            );
            return Err(Self::batch_error("decode_sampled", why));
        }
        for d in draws {
            let end = d.hist_start as usize + d.hist_len as usize;
            if !self.draw_fits(d) || end > penalized.len() {
                let why = format!("a draw the device cannot take: {d:?}");
                return Err(Self::batch_error("decode_sampled", why));
            }
        }
        self.draw_words.clear();
        self.draw_words.extend(draws.iter().map(draw_words));
        let q = &self.ctx.queue;
        q.write_buffer(&self.bufs.draws, 0, bytemuck::cast_slice(&self.draw_words));
        if !penalized.is_empty() {
            q.write_buffer(&self.bufs.penalized, 0, bytemuck::cast_slice(penalized));
        }
        Ok(())
    }

    /// Whether the device's sampler covers `d`: temperature > 0 and at most
    /// [`DEVICE_TOP_K`] candidates.
    fn draw_fits(&self, d: &Draw) -> bool {
        d.temperature > 0.0 && d.top_k >= 1 && d.top_k as usize <= DEVICE_TOP_K
    }

    /// [`GpuSession::pass`] with the head on the rows `i` where `wanted(i)`; the list lives
    /// in a buffer the session keeps, so a decode step allocates none. Returns how many.
    fn pass_rows(
        &mut self,
        tokens: &[u32],
        wanted: impl Fn(usize) -> bool,
        want: Want,
    ) -> Result<usize> {
        let mut rows = std::mem::take(&mut self.wanted);
        rows.clear();
        rows.extend((0..tokens.len() as u32).filter(|&i| wanted(i as usize)));
        let done = self.pass(tokens, &rows, want);
        let m = rows.len();
        self.wanted = rows;
        done.map(|()| m)
    }

    fn check_distinct(&self, op: &'static str, slots: &[usize]) -> Result<()> {
        if slots.len() > self.pos.len() {
            let why = format!("{} slots (session has {})", slots.len(), self.pos.len());
            return Err(Self::batch_error(op, why));
        }
        for (i, s) in slots.iter().enumerate() {
            if slots[..i].contains(s) {
                return Err(Self::batch_error(op, format!("slot {s} is repeated")));
            }
        }
        Ok(())
    }

    /// Rows per pass.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// The adapter this session runs on.
    pub fn adapter(&self) -> &crate::AdapterSummary {
        self.ctx.adapter()
    }
}

/// `d` as the device's 48-byte record (`Draw` in sample.wgsl).
pub(crate) fn draw_words(d: &Draw) -> [u32; 12] {
    [
        d.temperature.to_bits(),
        d.inv_temperature.to_bits(),
        d.top_k,
        d.top_p.to_bits(),
        d.min_p.to_bits(),
        d.repeat_penalty.to_bits(),
        d.inv_penalty.to_bits(),
        d.u.to_bits(),
        d.hist_start,
        d.hist_len,
        0,
        0,
    ]
}

impl Engine for GpuSession {
    fn vocab(&self) -> usize {
        self.cfg.vocab
    }
    fn slots(&self) -> usize {
        self.pos.len()
    }
    fn capacity(&self) -> usize {
        self.max_ctx
    }
    fn position_of(&self, slot: usize) -> onebit_model::Result<usize> {
        self.check_slot(slot)?;
        Ok(self.pos[slot])
    }
    fn reset_slot(&mut self, slot: usize) -> onebit_model::Result<()> {
        self.check_slot(slot)?;
        self.pos[slot] = 0;
        Ok(())
    }
    fn truncate_slot(&mut self, slot: usize, len: usize) -> onebit_model::Result<()> {
        self.check_slot(slot)?;
        self.pos[slot] = self.pos[slot].min(len);
        Ok(())
    }
    fn forward_slot(&mut self, slot: usize, tokens: &[u32]) -> onebit_model::Result<&mut [f32]> {
        self.check_slot(slot)?;
        self.check_tokens(tokens)?;
        if self.pos[slot] + tokens.len() > self.max_ctx {
            let needed = self.pos[slot] + tokens.len();
            return Err(onebit_model::Error::ContextFull { needed, max: self.max_ctx });
        }
        let chunks = tokens.len().div_ceil(self.max_batch);
        for (i, chunk) in tokens.chunks(self.max_batch).enumerate() {
            let slots = vec![slot; chunk.len()];
            self.place("forward", chunk, &slots)?;
            let last = i + 1 == chunks;
            let wanted = [chunk.len() as u32 - 1];
            self.pass(chunk, &wanted, if last { Want::Logits } else { Want::Nothing })?;
            self.advance(&slots);
        }
        Ok(&mut self.logits[..self.cfg.vocab])
    }
    fn decode(&mut self, tokens: &[u32], slots: &[usize]) -> onebit_model::Result<&mut [f32]> {
        self.check_distinct("decode", slots)?;
        self.place("decode", tokens, slots)?;
        self.pass_rows(tokens, |_| true, Want::Logits)?;
        self.advance(slots);
        Ok(&mut self.logits[..tokens.len() * self.cfg.vocab])
    }
    fn decode_argmax(
        &mut self,
        tokens: &[u32],
        slots: &[usize],
        ids: &mut Vec<u32>,
    ) -> onebit_model::Result<()> {
        let got = self.decode_greedy(tokens, slots)?;
        ids.clear();
        ids.extend_from_slice(got);
        Ok(())
    }
    fn samples(&self, cfg: &SamplerConfig) -> bool {
        cfg.fits_device(self.cfg.vocab)
    }
    fn decode_sampled(
        &mut self,
        tokens: &[u32],
        slots: &[usize],
        draws: &[Draw],
        penalized: &[u32],
        ids: &mut Vec<u32>,
    ) -> onebit_model::Result<()> {
        let got = self.decode_by_draws(tokens, slots, draws, penalized)?;
        ids.clear();
        ids.extend_from_slice(got);
        Ok(())
    }
    fn step(
        &mut self,
        tokens: &[u32],
        slots: &[usize],
        want: &[bool],
    ) -> onebit_model::Result<&mut [f32]> {
        if want.len() != tokens.len() {
            let why = format!("{} tokens, {} flags", tokens.len(), want.len());
            return Err(Self::batch_error("step", why).into());
        }
        self.place("step", tokens, slots)?;
        let m = self.pass_rows(tokens, |i| want[i], Want::Logits)?;
        self.advance(slots);
        Ok(&mut self.logits[..m * self.cfg.vocab])
    }
}
