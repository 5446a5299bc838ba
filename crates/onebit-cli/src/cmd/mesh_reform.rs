//! Forming a mesh again from the workers that still answer after one failed: `onebit serve`
//! does it between requests, `onebit run` in the middle of a reply.

use super::mesh_args::{Layout, Loaded, MeshArgs};
use super::model_args::ModelArgs;
use onebit_dist::bootstrap::MeshFile;
use onebit_model::SessionOptions;
use std::net::TcpStream;
use std::time::Duration;

impl MeshArgs {
    /// Loads the model again over the mesh file's workers that still answer (`why`: what
    /// failed, for the log). A worker that refuses connections is left out before trying,
    /// one the start names (it did not answer, or could not load) is left out and the start
    /// tried again. Tensor parallel if it was, else a pipeline with the default split (the
    /// flags' split, shares or groups were for the whole mesh).
    pub fn reform(
        &self,
        m: &ModelArgs,
        session: SessionOptions,
        why: &str,
    ) -> Result<Loaded, String> {
        let mut again = self.clone();
        again.strategy = if self.strategy == "tp" { "tp" } else { "pp" }.into();
        again.split.clear();
        again.shares.clear();
        again.groups.clear();
        let file = again.mesh.clone().ok_or("no mesh file")?;
        let addrs = MeshFile::read(&file).and_then(|f| f.addrs()).map_err(|e| e.to_string())?;
        let workers = &addrs[1..];
        let answers = |w: usize| TcpStream::connect_timeout(&workers[w], Duration::from_secs(1));
        // A node that has just failed may still be closing its sockets (a killed process's
        // listener can accept for a moment after its connections closed): probe twice.
        let first: Vec<bool> = (0..workers.len()).map(|w| answers(w).is_ok()).collect();
        std::thread::sleep(Duration::from_millis(250));
        let mut left_out: Vec<usize> =
            (0..workers.len()).filter(|&w| !first[w] || answers(w).is_err()).collect();
        tracing::warn!("forming the mesh again ({why}); leaving out workers {left_out:?}");
        loop {
            if left_out.len() == workers.len() {
                return Err("no worker answers".into());
            }
            let ready = Duration::from_secs(60);
            match again.load_leaving_out(m, session, &left_out, ready) {
                Ok(loaded @ (_, Some(_), _)) => {
                    eprintln!("mesh formed again: {}", loaded.2);
                    return Ok(loaded);
                }
                Ok(_) => return Err("no mesh formed".into()),
                Err(e) => {
                    let e = e.to_string();
                    // Rank r of this start is its r-th worker still in.
                    let live: Vec<usize> =
                        (0..workers.len()).filter(|w| !left_out.contains(w)).collect();
                    match failed_rank(&e).and_then(|r| live.get(r.checked_sub(1)?)) {
                        Some(&w) => {
                            tracing::warn!("worker {w} cannot join ({e}); leaving it out");
                            left_out.push(w);
                        }
                        None => return Err(e),
                    }
                }
            }
        }
    }

    /// [`MeshArgs::reform`], else the whole model on this node where it loads here (the
    /// load, and later the session, are checked against available memory and `--mem-limit`):
    /// what `run` and `chat` go on with after a node failed mid-reply.
    pub fn reform_or_alone(
        &self,
        m: &ModelArgs,
        session: SessionOptions,
        why: &str,
    ) -> anyhow::Result<Loaded> {
        match self.reform(m, session, why) {
            Ok(loaded) => Ok(loaded),
            Err(e) => {
                eprintln!("no mesh forms again ({e}): loading all of {} on this node", m.model);
                let model = m.load().map_err(|le| {
                    anyhow::anyhow!(
                        "the mesh failed ({why}) and the model does not load here: {le}"
                    )
                })?;
                Ok((model, None, Layout::One))
            }
        }
    }
}

/// The rank an error of the mesh names ("node 2 (…): no answer …").
fn failed_rank(why: &str) -> Option<usize> {
    let at = why.find("node ")? + 5;
    let digits: String = why[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}
