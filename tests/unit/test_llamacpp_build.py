"""The llama-server build keeps Intel AMX out of a native build (VMs that list it can fault on it)."""
import shlex
import shutil
import subprocess

import pytest

from llm2llm.llamacpp import no_amx_flags

AMX_CPU = "flags\t\t: fpu sse avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8\n"


def test_amx_is_turned_off_only_on_an_x86_cpu_that_lists_it():
    flags = no_amx_flags("x86_64", AMX_CPU)
    assert [f.split("=", 1)[0] for f in flags] == ["-DCMAKE_C_FLAGS", "-DCMAKE_CXX_FLAGS"]
    assert all("-mno-amx-tile" in f and "-mno-amx-int8" in f for f in flags)
    assert no_amx_flags("AMD64", AMX_CPU) == flags
    assert no_amx_flags("x86_64", "flags\t\t: fpu sse avx2 avx512f\n") == []  # no AMX listed: nothing to turn off
    assert no_amx_flags("aarch64", AMX_CPU) == []  # the -mno-amx-* flags are x86-only


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc")
def test_the_flags_win_over_march_native_as_ggml_orders_them(tmp_path):
    """cmake puts CMAKE_C_FLAGS before ggml's -march=native; the compiler must still leave AMX out."""
    flags = shlex.split(no_amx_flags("x86_64", AMX_CPU)[0].split("=", 1)[1])
    source = tmp_path / "t.c"
    source.write_text("int main(void) { return 0; }\n")
    macros = {}
    for arch in ("sapphirerapids", "native"):  # a CPU with AMX; this machine's own
        run = subprocess.run(["gcc", *flags, f"-march={arch}", "-dM", "-E", str(source)], capture_output=True,
                             text=True)
        if run.returncode:
            pytest.skip(f"gcc does not know -march={arch}: {run.stderr.strip()[:80]}")
        macros[arch] = run.stdout
    assert not [m for m in ("__AMX_INT8__", "__AMX_TILE__", "__AMX_BF16__") if m in "".join(macros.values())]
    assert "__AVX512VNNI__" in macros["sapphirerapids"]  # the rest of the target stays
