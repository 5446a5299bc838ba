//! `onebit tokenizer train`: a byte-level BPE tokenizer from text files.

use anyhow::Result;

/// `onebit tokenizer` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Train a byte-level BPE (GGUF `gpt2`-compatible) on text files.
    Train {
        /// Text files.
        #[arg(long, num_args = 1.., required = true)]
        data: Vec<String>,
        /// Vocabulary size.
        #[arg(long, default_value_t = 4096)]
        vocab: usize,
        /// Output tokenizer.json.
        #[arg(short, long)]
        output: String,
    },
}

/// Runs `onebit tokenizer`.
pub fn run(a: Args) -> Result<()> {
    match a {
        Args::Train { data, vocab, output } => {
            onebit_train::data::train_tokenizer(&data, vocab, &output)?;
            let t = onebit_model::Tokenizer::from_file(&output)?;
            eprintln!("wrote {output} ({} tokens)", t.vocab_size());
        }
    }
    Ok(())
}
