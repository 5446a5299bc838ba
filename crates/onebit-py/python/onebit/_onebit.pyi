"""Type stubs of onebit's native module (implemented in Rust: crates/onebit-py/src)."""

from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

class OneBitError(Exception):
    """An error from the onebit engine."""

class Tokenizer:
    """A model's tokenizer and chat template."""

    @staticmethod
    def from_file(path: str) -> Tokenizer: ...
    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]: ...
    def decode(self, ids: List[int]) -> str: ...
    def apply_chat_template(
        self, messages: List[Dict[str, str]], tokenize: bool = False
    ) -> Union[str, List[int]]: ...
    @property
    def vocab_size(self) -> int: ...
    def token_to_id(self, token: str) -> Optional[int]: ...

class GenerationStream(Iterator[str]):
    """A reply being generated; iterating yields printable text pieces."""

    def __iter__(self) -> GenerationStream: ...
    def __next__(self) -> str: ...
    def close(self) -> None: ...
    def __enter__(self) -> GenerationStream: ...
    def __exit__(self, *args: object) -> bool: ...
    @property
    def text(self) -> str: ...
    @property
    def tokens(self) -> int: ...
    @property
    def finish_reason(self) -> Optional[str]: ...

class Model:
    """A model loaded for inference."""

    @staticmethod
    def load(
        path: str,
        threads: Optional[int] = None,
        kv_cache: str = "f16",
        head: str = "q8",
        ctx: int = 2048,
        layout: Optional[str] = None,
        mmap: Optional[bool] = None,
        verify: bool = True,
        embeddings: str = "f16",
    ) -> Model: ...
    @property
    def tokenizer(self) -> Tokenizer: ...
    @property
    def config(self) -> Dict[str, object]: ...
    def logits(self, ids: List[int], last_only: bool = False) -> npt.NDArray[np.float32]: ...
    def stream(self, ids: List[int], options: Dict[str, object]) -> GenerationStream:
        """options: max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, seed, stop."""
        ...
    def generate_batch(self, prompts: List[List[int]], options: Dict[str, object]) -> List[Tuple[str, int, str]]: ...

class BitLinearKernel:
    """One BitLinear layer's native kernels and scratch."""

    def __init__(self, out_features: int, in_features: int) -> None: ...
    def forward(
        self, out: npt.NDArray[np.float32], x: npt.NDArray[np.float32], weight: npt.NDArray[np.float32], lam: float
    ) -> float: ...
    def forward_with_operands(
        self,
        out: npt.NDArray[np.float32],
        x_used: npt.NDArray[np.float32],
        w_used: npt.NDArray[np.float32],
        x: npt.NDArray[np.float32],
        weight: npt.NDArray[np.float32],
    ) -> float:
        """``forward`` at lam = 1 that also writes the STE backward's operands fq(x) and fq(W)."""
        ...
    def backward_operands(
        self,
        x_used: npt.NDArray[np.float32],
        w_used: npt.NDArray[np.float32],
        x: npt.NDArray[np.float32],
        weight: npt.NDArray[np.float32],
        lam: float,
    ) -> None:
        """Overwrites x_used with fq(x) and w_used with fq(W) for the same x, weight, lam."""
        ...
    def take_clip_counts(self) -> Tuple[int, int]: ...
    def backward(
        self,
        dx: Optional[npt.NDArray[np.float32]],
        dweight: Optional[npt.NDArray[np.float32]],
        dout: npt.NDArray[np.float32],
        x: npt.NDArray[np.float32],
        weight: npt.NDArray[np.float32],
        lam: float,
    ) -> None: ...
    def products(
        self,
        dx: Optional[npt.NDArray[np.float32]],
        dweight: Optional[npt.NDArray[np.float32]],
        dout: npt.NDArray[np.float32],
        x_used: npt.NDArray[np.float32],
        w_used: npt.NDArray[np.float32],
    ) -> None:
        """Overwrites dx with dout·w_used and dweight with doutᵀ·x_used (the gemm crate)."""
        ...

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def use_openmp(path: Optional[str], threads: int) -> None:
    """Runs onebit.nn kernels on the loaded OpenMP runtime at ``path`` (None: onebit's own threads)."""
def threading() -> str:
    """"openmp" when onebit.nn kernels run on a lent OpenMP team, "own" otherwise."""

class SteMonitor:
    """The trainer's STE monitor over weights held by PyTorch."""

    def __init__(self) -> None: ...
    def report(
        self,
        step: int,
        layers: List[Tuple[str, npt.NDArray[np.float32], npt.NDArray[np.float32], float, float, int, int]],
    ) -> Dict[str, object]: ...

def train(
    data: List[str],
    out: str,
    settings: Dict[str, object],
    tokenizer: Optional[str] = None,
    vocab: int = 4096,
    config: Optional[str] = None,
    resume: Optional[str] = None,
    callback: Optional[Callable[[str, str], object]] = None,
) -> Tuple[int, str, str, bool]: ...
def finetune(
    model: str,
    data: List[str],
    out: str,
    settings: Dict[str, object],
    callback: Optional[Callable[[str, str], object]] = None,
) -> Tuple[float, float, float, str, bool]: ...
def convert(src: str, dst: str, target: str = "onebit") -> None: ...
def needs_finetuning(path: str) -> bool: ...
